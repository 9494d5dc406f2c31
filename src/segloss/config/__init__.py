"""One config schema: Hydra structured configs for every group of ``conf/``.

Types and defaults live in the dataclasses of this package (one module per group); the yaml
files under ``conf/`` select a schema (``defaults: [base_<name>, _self_]``) and override. A
typo key or a wrong type fails at composition with Hydra's message; range checks are the
schemas' ``__post_init__`` (``ConfigError`` naming the setting), run by :func:`validate`,
which builds the typed settings once per entry point (:func:`segloss.cli.stage`).

Registration: :func:`register` stores the schemas in Hydra's ConfigStore. It runs on import
of :mod:`segloss.cli` and of the Hydra plugin ``hydra_plugins.segloss_config`` (Hydra imports
its plugins before it composes, so any ``compose``/``@hydra.main`` finds the schemas).
"""

from __future__ import annotations

from collections.abc import Mapping

from omegaconf import DictConfig

from segloss.config.checks import from_mapping, is_set, plain
from segloss.config.cv import CvConfig
from segloss.config.data import (
    DATA_SCHEMAS,
    DataConfig,
    FolderData,
    LggData,
    Normalise,
    SyntheticData,
    data_config,
)
from segloss.config.eval import EvalConfig
from segloss.config.loss import LOSS_SCHEMAS, LossConfig, loss_config
from segloss.config.model import ModelConfig
from segloss.config.report import ReportConfig
from segloss.config.root import GROUPS, Config, Paths
from segloss.config.tracking import TrackingConfig
from segloss.config.train import TrainConfig
from segloss.config.tune import TuneConfig

__all__ = [
    "GROUPS",
    "Config",
    "CvConfig",
    "DataConfig",
    "EvalConfig",
    "FolderData",
    "LggData",
    "LossConfig",
    "ModelConfig",
    "Normalise",
    "Paths",
    "ReportConfig",
    "SyntheticData",
    "TrackingConfig",
    "TrainConfig",
    "TuneConfig",
    "data_config",
    "loss_config",
    "from_mapping",
    "is_set",
    "plain",
    "register",
    "schemas",
    "validate",
]


def schemas() -> dict[tuple[str | None, str], type]:
    """Every stored schema: ``(group, name) -> dataclass`` (group None: the root)."""
    stored: dict[tuple[str | None, str], type] = {(None, "base_config"): Config}
    stored.update({("data", f"base_{name}"): cls for name, cls in DATA_SCHEMAS.items()})
    stored.update({("loss", f"base_{name}"): cls for name, cls in LOSS_SCHEMAS.items()})
    for group, cls in GROUPS.items():
        if group not in ("data", "loss"):
            stored[(group, f"base_{group}")] = cls
    return stored


def register() -> None:
    """Store every schema in Hydra's ConfigStore (idempotent)."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    for (group, name), node in schemas().items():
        store.store(group=group, name=name, node=node, provider="segloss")


def validate(cfg: DictConfig | Mapping[str, object]) -> Config:
    """Run every range check on a composed config (a DictConfig or its plain container);
    the first failure is a :class:`ConfigError` naming the setting.

    Interpolations are resolved; ``???`` (MISSING, e.g. ``data.root`` of ``data=lgg``) stays
    as it is and is an error only where it is used (the prepare stage).
    """
    from omegaconf import OmegaConf

    if isinstance(cfg, DictConfig):
        keys = [k for k in cfg if k != "hydra"]
        values = OmegaConf.to_container(
            OmegaConf.masked_copy(cfg, keys), resolve=True, throw_on_missing=False
        )
    else:
        values = {k: v for k, v in dict(cfg).items() if k != "hydra"}
    groups = {name: _group(name, values[name]) for name in GROUPS if name in values}
    return from_mapping(Config, values | groups, "config")


def _group(name: str, values: Mapping[str, object] | None) -> object:
    if name == "data":
        return data_config(values or {})
    if name == "loss":
        return loss_config(values)
    return from_mapping(GROUPS[name], values, name)
