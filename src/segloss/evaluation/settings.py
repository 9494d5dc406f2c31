"""The ``eval`` config group as the settings evaluation reads (before any model is loaded)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from segloss.config import EvalConfig, from_mapping


@dataclass(frozen=True)
class EvalSettings:
    """The ``eval`` group, its ``threshold_grid`` turned into the ``thresholds``; the values
    and their checks are the schema's (conf/eval/, :class:`segloss.config.EvalConfig`)."""

    threshold: float
    batch_size: int
    device: str
    num_threads: int
    thresholds: tuple[float, ...]
    calibration_bins: int
    nsd_tolerance: float  # in the distance unit: mm where the spacing is known, else px

    @classmethod
    def from_mapping(cls, cfg: Mapping) -> EvalSettings:
        """From ``cfg.eval`` with every key set, checked by its schema (the same one-line
        errors as at composition); the grid of start/stop/step becomes the thresholds."""
        checked = from_mapping(EvalConfig, cfg, "eval")
        grid = checked.threshold_grid
        thresholds = np.round(np.arange(grid.start, grid.stop + grid.step / 2, grid.step), 6)
        values = {k: v for k, v in dataclasses.asdict(checked).items() if k != "threshold_grid"}
        return cls(**values, thresholds=tuple(thresholds))
