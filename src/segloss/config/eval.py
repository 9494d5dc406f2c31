"""The ``eval`` group: the test split at a fixed threshold (:mod:`segloss.evaluation`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from omegaconf import MISSING

from segloss.config.checks import int_at_least, is_number, require


@dataclass
class ThresholdGrid:
    """Per-patient Dice at every threshold from ``start`` to ``stop`` (inclusive) by ``step``."""

    start: float = MISSING
    stop: float = MISSING
    step: float = MISSING

    def __post_init__(self) -> None:
        start, stop, step = self.start, self.stop, self.step
        ok = all(is_number(v) for v in (start, stop, step))
        require(
            ok and 0.0 < start <= stop < 1.0 and step > 0,
            "eval.threshold_grid must satisfy 0 < start <= stop < 1 and step > 0, "
            f"got start={start} stop={stop} step={step}",
        )

    def values(self) -> tuple[float, ...]:
        """The thresholds, rounded to 6 decimals (the grid's step adds float error)."""
        grid = np.arange(self.start, self.stop + self.step / 2, self.step)
        return tuple(np.round(grid, 6))


@dataclass
class EvalConfig:
    """The test split at ``threshold``; the validation split finds each model's best
    threshold (reported, never used for the verdict)."""

    threshold: float = MISSING
    batch_size: int = MISSING
    device: str = MISSING
    num_threads: int = MISSING
    threshold_grid: ThresholdGrid = MISSING
    calibration_bins: int = MISSING
    # NSD tolerance in the data's distance unit: mm where the pixel spacing is known
    # (synthetic), else native pixels (kaggle_3m); the column is named nsd_2mm / nsd_2px.
    nsd_tolerance: float = MISSING

    def __post_init__(self) -> None:
        tol = self.nsd_tolerance
        require(is_number(tol) and tol >= 0, f"eval.nsd_tolerance must be >= 0, got {tol}")
        t = self.threshold
        require(is_number(t) and 0.0 < t < 1.0, f"eval.threshold must be in (0, 1), got {t}")
        for name in ("batch_size", "num_threads", "calibration_bins"):
            value = getattr(self, name)
            require(int_at_least(value, 1), f"eval.{name} must be >= 1, got {value}")
