"""Plumbing the test modules share: compose the Hydra config, build the typed settings, and
the command line of a pipeline stage."""

from __future__ import annotations

import sys
from pathlib import Path

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from omegaconf import DictConfig

from segloss import config
from segloss.config import Config, CvConfig, DataConfig, validate

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"


def compose(*overrides: str, hydra: bool = False, conf: Path = CONF) -> DictConfig:
    """conf/config.yaml composed with ``overrides`` (and the ``hydra`` node with ``hydra``)."""
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        return hydra_compose("config", overrides=list(overrides), return_hydra_config=hydra)


def settings(*overrides: str, conf: Path = CONF) -> Config:
    """The typed settings an entry point builds from the composed config."""
    return validate(compose(*overrides, conf=conf))


def stage_command(stage: str, *args: str) -> list[str]:
    """``python pipelines/<stage>.py ARGS`` with this interpreter."""
    return [sys.executable, str(REPO / "pipelines" / f"{stage}.py"), *args]


def data_config(values: dict) -> DataConfig:
    """The ``data`` settings of ``values`` (a source's dict, as a test writes it)."""
    return config.data_config(values)


def cv_config(values: dict) -> CvConfig:
    """The ``cv`` settings of ``values``."""
    return config.from_mapping(CvConfig, values, "cv")
