"""A sweep's jobs as Hydra's basic sweeper expands them, each composed and checked before any
runs; the models of jobs no longer in the sweep removed."""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path

from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from segloss import hydra_private, processes
from segloss.cli import one_line
from segloss.config import Config, validate
from segloss.errors import ConfigError
from segloss.fingerprint import output_dir

log = logging.getLogger(__name__)

_TMP_NAME = re.compile(r"\.tmp-(\d+)-")  # segloss.io.atomic_path's temporary names
_SEED_NAME = re.compile(r"seed\d+")


def job_overrides(config: DictConfig) -> list[list[str]]:
    """Every job's overrides, as Hydra's basic sweeper expands them (``hydra.sweeper.params``
    first, the command line after, the cartesian product of the swept values)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = [f"{k}={v}" for k, v in (config.hydra.sweeper.get("params") or {}).items()]
    params += list(config.hydra.overrides.task)
    loader = GlobalHydra.instance().config_loader()
    parsed = OverridesParser.create(config_loader=loader).parse_overrides(params)
    return hydra_private.split_sweep(parsed)


def job_configs(config: DictConfig) -> list[Config]:
    """Every job's settings, composed as its launcher will and validated.

    A job that cannot be composed (``loss=nope``) raises :class:`ConfigError` naming it.
    """
    loader = GlobalHydra.instance().config_loader()
    jobs = []
    for overrides in job_overrides(config):
        try:
            job = loader.load_sweep_config(master_config=config, sweep_overrides=overrides)
        except Exception as exc:  # Hydra's ConfigCompositionException, MissingConfigException
            raise ConfigError(f"sweep job `{' '.join(overrides)}`: {one_line(exc)}") from None
        jobs.append(validate(job))
    return jobs


def prune_models(jobs: list[Config]) -> list[Path]:
    """Remove every ``<paths.models>/[<setting>_<value>/]<loss>/seed<k>/`` that no job of the
    sweep writes, and temporary files that dead processes left there; the removed paths."""
    keep = {output_dir(job).resolve() for job in jobs}
    keep |= {parent for path in keep for parent in path.parents}  # seed<k>/ of fold<f>/
    removed = []
    for root in {Path(job.paths.models) for job in jobs}:
        if not root.is_dir():
            continue
        seeds = [p for p in sorted(root.glob("**/seed*")) if _SEED_NAME.fullmatch(p.name)]
        for folder in seeds + [f for seed in seeds for f in sorted(seed.glob("fold*"))]:
            if folder.is_dir() and folder.resolve() not in keep:
                shutil.rmtree(folder)
                removed.append(folder)
        for tmp in sorted(root.glob("**/.tmp-*")):
            match = _TMP_NAME.match(tmp.name)
            if match and not processes.alive(int(match.group(1)), None):
                shutil.rmtree(tmp) if tmp.is_dir() else tmp.unlink()
                removed.append(tmp)
        for folder in sorted(root.glob("**/"), key=lambda p: -len(p.parts)):  # deepest first
            if folder != root and folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
    for path in removed:
        log.info("removed %s (not in this sweep)", path)
    return removed
