"""Registers segloss's config schemas (:mod:`segloss.config`) in Hydra's ConfigStore.

Hydra imports every module under ``hydra_plugins`` when it builds its config search path,
before it composes: so ``@hydra.main``, ``compose()`` in tests and benchmarks, and the
sweep's jobs all find ``base_config`` and ``<group>/base_<name>`` without importing segloss
first (as the SLURM launcher's config is found, ``hydra_plugins.segloss_submitit``).
"""

from segloss.config import register

register()
