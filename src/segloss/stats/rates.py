"""Collapse as a rate: a binomial proportion with its exact interval, and two rates compared."""

from __future__ import annotations

from dataclasses import dataclass

from scipy import stats


def clopper_pearson(successes: int, trials: int, level: float = 0.95) -> tuple[float, float]:
    """The exact (Clopper-Pearson) ``level`` interval of a binomial proportion, from the beta
    quantiles; (0, 1) without trials."""
    if trials == 0:
        return 0.0, 1.0
    tail = (1 - level) / 2
    low = 0.0 if successes == 0 else stats.beta.ppf(tail, successes, trials - successes + 1)
    high = (
        1.0 if successes == trials else stats.beta.ppf(1 - tail, successes + 1, trials - successes)
    )
    return float(low), float(high)


@dataclass(frozen=True)
class Rate:
    """``collapsed`` of ``models`` models, the share (None without models) and its exact
    interval (verdict.json's ``collapse``: ``dataclasses.asdict``)."""

    models: int
    collapsed: int
    rate: float | None
    ci: list[float]


def rate(events: int, trials: int, level: float = 0.95) -> Rate:
    """``events`` of ``trials`` models, with the exact (Clopper-Pearson) ``level`` interval."""
    return Rate(
        models=int(trials),
        collapsed=int(events),
        rate=events / trials if trials else None,
        ci=list(clopper_pearson(events, trials, level)),
    )


def fisher_test(a: Rate, b: Rate) -> dict[str, str | float]:
    """Fisher's exact test (two-sided) of two rates: do they differ?"""
    table = [[a.collapsed, a.models - a.collapsed], [b.collapsed, b.models - b.collapsed]]
    return {"method": "fisher_exact", "p_value": float(stats.fisher_exact(table).pvalue)}
