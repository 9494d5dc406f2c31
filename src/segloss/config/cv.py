"""The ``cv`` group: patient-level k-fold cross-validation (:mod:`segloss.data.folds`)."""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import MISSING

from segloss.config.checks import int_at_least, is_number, require


@dataclass
class CvConfig:
    """``folds``: 1 = the single split of ``data.split``; K >= 2 = every patient tested once.

    ``val_fraction``: share of the patients outside a test fold that validate its models.
    ``fold``: the fold one training job trains (null without cross-validation; the sweep sets
    every fold, ``hydra.sweeper.params`` in conf/config.yaml).
    """

    folds: int = MISSING
    val_fraction: float = MISSING
    fold: int | None = MISSING

    def __post_init__(self) -> None:
        folds, val = self.folds, self.val_fraction
        require(
            int_at_least(folds, 1),
            f"cv.folds={folds!r} must be an integer >= 1 (1: no cross-validation)",
        )
        require(
            is_number(val) and 0 < val < 1, f"cv.val_fraction={val!r} must be a number in (0, 1)"
        )
        fold = self.fold
        require(
            fold is None or int_at_least(fold, 0),
            f"cv.fold={fold!r} must be an integer >= 0 or null",
        )
