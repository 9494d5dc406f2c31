"""The ``eval`` config group as validated settings (before any model is loaded)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from segloss.errors import ConfigError


@dataclass(frozen=True)
class EvalSettings:
    """The ``eval`` config group, validated before any model is loaded."""

    threshold: float = 0.5
    batch_size: int = 64
    device: str = "auto"
    num_threads: int = 2
    thresholds: tuple[float, ...] = tuple(np.round(np.arange(0.05, 0.951, 0.05), 2))
    calibration_bins: int = 10
    nsd_tolerance: float = 2.0  # in the distance unit: mm where the spacing is known, else px

    @classmethod
    def from_mapping(cls, cfg: Mapping) -> EvalSettings:
        """Build from ``cfg.eval``; a ``threshold_grid`` of start/stop/step becomes the grid."""
        grid = cfg.get("threshold_grid")
        thresholds = cls.thresholds
        if grid is not None:
            start, stop, step = (float(grid[k]) for k in ("start", "stop", "step"))
            if not 0.0 < start <= stop < 1.0 or step <= 0:
                raise ConfigError(
                    f"eval.threshold_grid must satisfy 0 < start <= stop < 1 and step > 0, "
                    f"got start={start} stop={stop} step={step}"
                )
            thresholds = tuple(np.round(np.arange(start, stop + step / 2, step), 6))
        settings = cls(
            threshold=float(cfg.get("threshold", cls.threshold)),
            batch_size=int(cfg.get("batch_size", cls.batch_size)),
            device=str(cfg.get("device", cls.device)),
            num_threads=int(cfg.get("num_threads", cls.num_threads)),
            thresholds=thresholds,
            calibration_bins=int(cfg.get("calibration_bins", cls.calibration_bins)),
            nsd_tolerance=float(cfg.get("nsd_tolerance", cls.nsd_tolerance)),
        )
        if not settings.nsd_tolerance >= 0:
            raise ConfigError(f"eval.nsd_tolerance must be >= 0, got {settings.nsd_tolerance}")
        if not 0.0 < settings.threshold < 1.0:
            raise ConfigError(f"eval.threshold must be in (0, 1), got {settings.threshold}")
        for name in ("batch_size", "num_threads", "calibration_bins"):
            if getattr(settings, name) < 1:
                raise ConfigError(f"eval.{name} must be >= 1, got {getattr(settings, name)}")
        return settings
