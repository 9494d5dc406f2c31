"""The ``tune`` group: learning rate per loss (``pipelines/tune.py``, :mod:`segloss.tuning`)."""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import MISSING

from segloss.config.checks import int_at_least, positive, rule


@dataclass
class TuneConfig:
    """A sweep of every loss over ``grid`` on the training split, each model scored by its best
    validation per-patient Dice (the test split is never read); the best rate per loss goes to
    ``out``, which ``experiment=tuned`` reads."""

    grid: list[float] = MISSING
    seeds: list[int] = MISSING
    losses: list[str] | None = MISSING
    models: str = MISSING
    out: str = MISSING

    def __post_init__(self) -> None:
        grid, seeds = list(self.grid), list(self.seeds)
        ok = bool(grid) and all(positive(v) for v in grid)
        rule("tune.grid", grid, ok, "a non-empty list of numbers > 0")
        ok = bool(seeds) and all(int_at_least(s, 0) for s in seeds)
        rule("tune.seeds", seeds, ok, "a non-empty list of integers >= 0")
