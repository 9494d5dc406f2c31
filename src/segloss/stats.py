"""Paired comparison of two losses over test patients: Wilcoxon, hierarchical bootstrap, verdict.

The unit of analysis is the test patient. Each patient's value is averaged over the seeds
first, so that seeds (repeated trainings on the same patients) do not inflate the number
of pairs; seeds enter only through the bootstrap, which resamples patients and then seeds
within each patient, and through the per-seed differences that show whether seeds agree.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

VERDICTS = ("better", "no_difference", "worse")
_BOOT_CHUNK = 4_000_000  # bootstrap draws are made in chunks of at most this many values


def _clean(x: float) -> float | None:
    """A plain float for JSON; None for NaN or infinity."""
    x = float(x)
    return x if math.isfinite(x) else None


def _differences(scores: pd.DataFrame, baseline: str, candidate: str) -> pd.DataFrame:
    """candidate - baseline per patient (rows) and seed (columns), seeds common to both."""
    missing = {"loss", "seed", "patient", "value"} - set(scores.columns)
    if missing:
        raise ValueError(f"scores lack column(s) {', '.join(sorted(missing))}")
    known = sorted(scores["loss"].unique())
    for name in (baseline, candidate):
        if name not in known:
            raise ValueError(f"loss {name!r} has no scores; losses present: {known}")
    if scores.duplicated(["loss", "seed", "patient"]).any():
        raise ValueError("scores must hold one value per (loss, seed, patient), found duplicates")
    table = scores.pivot_table(index="patient", columns=["loss", "seed"], values="value")
    base, cand = table[baseline], table[candidate]
    seeds = sorted(set(base.columns) & set(cand.columns))
    if not seeds:
        raise ValueError(f"{baseline!r} and {candidate!r} share no seed")
    diff = (cand[seeds] - base[seeds]).dropna(how="all")
    if diff.empty:
        raise ValueError(f"{baseline!r} and {candidate!r} share no patient with scores")
    return diff


def _wilcoxon_p(d: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value; 1 when every difference is zero."""
    if not np.any(d != 0):
        return 1.0
    # zero_method="wilcox" drops zero differences; method="auto" is exact for small samples.
    return float(stats.wilcoxon(d, zero_method="wilcox", method="auto").pvalue)


def rank_biserial(d: np.ndarray) -> float:
    """Matched-pairs rank-biserial correlation ``(R+ - R-) / (R+ + R-)`` over non-zero d."""
    d = d[d != 0]
    if d.size == 0:
        return 0.0
    ranks = stats.rankdata(np.abs(d))
    return float((ranks[d > 0].sum() - ranks[d < 0].sum()) / ranks.sum())


def cohens_dz(d: np.ndarray) -> float:
    """Mean difference over the standard deviation of the differences (NaN if undefined)."""
    if d.size < 2:
        return math.nan
    sd = d.std(ddof=1)
    return float(d.mean() / sd) if sd > 0 else math.nan


def hierarchical_bootstrap(diff: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """Bootstrap means of a patients x seeds difference matrix (NaN = missing run).

    Each replicate draws patients with replacement, then, for each drawn patient, seeds with
    replacement, and averages the drawn cells (the patient's seed mean, then over patients).
    """
    rng = np.random.default_rng(seed)
    n_p, n_s = diff.shape
    chunk = max(1, _BOOT_CHUNK // (n_p * n_s))
    means = []
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        patients = rng.integers(0, n_p, size=(b, n_p, 1))
        seeds = rng.integers(0, n_s, size=(b, n_p, n_s))
        cells = diff[patients, seeds]
        with warnings.catch_warnings():
            # "Mean of empty slice": a drawn patient whose drawn seeds are all missing runs.
            warnings.simplefilter("ignore", RuntimeWarning)
            means.append(np.nanmean(np.nanmean(cells, axis=2), axis=1))
    return np.concatenate(means)


def paired_comparison(
    scores: pd.DataFrame,
    baseline: str,
    candidate: str,
    *,
    metric: str,
    higher_is_better: bool = True,
    alpha: float = 0.05,
    n_boot: int = 10000,
    seed: int = 0,
) -> dict[str, Any]:
    """Compare ``candidate`` with ``baseline`` on ``scores`` (columns loss, seed, patient, value).

    ``mean_difference`` is candidate - baseline in the metric's units. The verdict is
    ``better`` / ``worse`` when the Wilcoxon p-value is below ``alpha`` and the differences
    favour the candidate / the baseline, else ``no_difference``. The direction is the one
    the test detected, the sign of the rank-biserial correlation (with outliers it can
    differ from the sign of the mean); ``higher_is_better`` is False for e.g. HD95.
    The result is JSON-serialisable.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    diff = _differences(scores, baseline, candidate)
    d = diff.mean(axis=1).to_numpy()  # one difference per patient, seeds averaged
    mean_difference = float(d.mean())
    p_value = _wilcoxon_p(d)
    boot = hierarchical_bootstrap(diff.to_numpy(), n_boot, seed)
    lo, hi = np.nanpercentile(boot, [2.5, 97.5])
    effect = rank_biserial(d)
    verdict = "no_difference"
    if p_value < alpha and effect != 0:
        verdict = "better" if (effect > 0) == higher_is_better else "worse"
    return {
        "baseline": baseline,
        "candidate": candidate,
        "metric": metric,
        "higher_is_better": bool(higher_is_better),
        "mean_difference": _clean(mean_difference),
        "ci95": [_clean(lo), _clean(hi)],
        "p_value": _clean(p_value),
        "test": "wilcoxon signed-rank over patients (seed means), two-sided",
        "effect_size": _clean(effect),
        "effect_size_name": "matched-pairs rank-biserial correlation",
        "cohens_dz": _clean(cohens_dz(d)),
        "n_pairs": int(d.size),
        "n_seeds": int(diff.shape[1]),
        "per_seed_differences": {
            (s.item() if isinstance(s, np.generic) else s): _clean(v)
            for s, v in diff.mean(axis=0).items()
        },
        "alpha": float(alpha),
        "verdict": verdict,
    }
