"""A sweep's jobs as Hydra's basic sweeper expands them, each composed and checked before any
runs; the models of jobs no longer in the sweep removed."""

from __future__ import annotations

import logging
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf

from segloss import hydra_private, processes
from segloss.errors import ConfigError
from segloss.fingerprint import output_dir

log = logging.getLogger(__name__)

_TMP_NAME = re.compile(r"\.tmp-(\d+)-")  # segloss.io.atomic_path's temporary names
_SEED_NAME = re.compile(r"seed\d+")


def plain_config(config: DictConfig) -> dict[str, Any]:
    """The resolved config without its ``hydra`` node, as plain containers."""
    keys = [k for k in config if k != "hydra"]
    return OmegaConf.to_container(OmegaConf.masked_copy(config, keys), resolve=True)


def _one_line(exc: BaseException) -> str:
    """Hydra's multi-line composition errors as one line ("...; available: a, b")."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return "; ".join(lines[:1] + ([f"{lines[1]} {', '.join(lines[2:])}"] if lines[1:] else []))


def job_overrides(config: DictConfig) -> list[list[str]]:
    """Every job's overrides, as Hydra's basic sweeper expands them (``hydra.sweeper.params``
    first, the command line after, the cartesian product of the swept values)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = [f"{k}={v}" for k, v in (config.hydra.sweeper.get("params") or {}).items()]
    params += list(config.hydra.overrides.task)
    loader = GlobalHydra.instance().config_loader()
    parsed = OverridesParser.create(config_loader=loader).parse_overrides(params)
    return hydra_private.split_sweep(parsed)


def job_configs(config: DictConfig) -> list[dict[str, Any]]:
    """Every job's resolved config (plain containers), composed as its launcher will.

    A job that cannot be composed (``loss=nope``) raises :class:`ConfigError` naming it.
    """
    loader = GlobalHydra.instance().config_loader()
    jobs = []
    for overrides in job_overrides(config):
        try:
            job = loader.load_sweep_config(master_config=config, sweep_overrides=overrides)
        except Exception as exc:  # Hydra's ConfigCompositionException, MissingConfigException
            raise ConfigError(f"sweep job `{' '.join(overrides)}`: {_one_line(exc)}") from None
        jobs.append(plain_config(job))
    return jobs


def prune_models(jobs: list[Mapping[str, Any]]) -> list[Path]:
    """Remove every ``<paths.models>/[<setting>_<value>/]<loss>/seed<k>/`` that no job of the
    sweep writes, and temporary files that dead processes left there; the removed paths."""
    keep = {output_dir(job).resolve() for job in jobs}
    keep |= {parent for path in keep for parent in path.parents}  # seed<k>/ of fold<f>/
    removed = []
    for root in {Path(job["paths"]["models"]) for job in jobs}:
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
