"""The ``report`` group: the verdict and the figures (:mod:`segloss.report`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from omegaconf import MISSING

from segloss.config.checks import int_at_least, is_number, rule


@dataclass
class ReportConfig:
    """The comparison ``candidate`` against ``baseline`` on ``metric`` (per test patient,
    seeds averaged first), every interval at level 1 - ``alpha``."""

    baseline: str = MISSING
    candidate: str = MISSING
    metric: str = MISSING
    alpha: float = MISSING
    margin: float = MISSING
    margins: dict[str, float] = MISSING
    collapse_dice: float = MISSING
    seed: int = MISSING
    overlay_count: int = MISSING
    dpi: int = MISSING

    def __post_init__(self) -> None:
        alpha, margin, collapse = self.alpha, self.margin, self.collapse_dice
        rule("report.alpha", alpha, is_number(alpha) and 0 < alpha < 1, "a number in (0, 1)")
        rule("report.margin", margin, is_number(margin) and margin >= 0, "a number >= 0")
        rule("report.margins", self.margins, isinstance(self.margins, Mapping), "a mapping")
        for key, value in self.margins.items():
            ok = is_number(value) and value >= 0
            rule(f"report.margins.{key}", value, ok, "a number >= 0")
        ok = is_number(collapse) and 0 <= collapse <= 1
        rule("report.collapse_dice", collapse, ok, "a number in [0, 1]")
        ok = int_at_least(self.overlay_count, 0)
        rule("report.overlay_count", self.overlay_count, ok, "an integer >= 0")
        rule("report.dpi", self.dpi, int_at_least(self.dpi, 1), "an integer >= 1")
