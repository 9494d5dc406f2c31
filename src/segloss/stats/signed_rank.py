"""Rank tests on the patients' paired seed means: Wilcoxon signed-rank (scipy), the
rank-biserial effect size, baycomp's Bayesian signed-rank test, and Holm's correction."""

from __future__ import annotations

from collections.abc import Sequence

import baycomp
import numpy as np
from scipy import stats
from statsmodels.stats.multitest import multipletests

BAYES_SAMPLES = 20_000


def wilcoxon_p(d: np.ndarray) -> float:
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


def bayes_signed_rank(
    baseline: np.ndarray, candidate: np.ndarray, margin: float, higher_is_better: bool, seed: int
) -> dict[str, float]:
    """baycomp's Bayesian signed-rank test with ``margin`` as the region of practical
    equivalence: P(candidate better), P(equivalent), P(baseline better)."""
    x, y = (baseline, candidate) if higher_is_better else (-baseline, -candidate)
    if margin > 0:
        p_base, p_rope, p_cand = baycomp.SignedRankTest.probs(
            x, y, rope=margin, nsamples=BAYES_SAMPLES, random_state=seed
        )
    else:
        (p_base, p_cand), p_rope = (
            baycomp.SignedRankTest.probs(x, y, nsamples=BAYES_SAMPLES, random_state=seed),
            0.0,
        )
    return {"p_better": float(p_cand), "p_equivalent": float(p_rope), "p_worse": float(p_base)}


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm-adjusted p-values (statsmodels); a missing p-value stays missing."""
    present = [i for i, p in enumerate(p_values) if p is not None]
    adjusted: list[float | None] = [None] * len(p_values)
    if present:
        values = multipletests([p_values[i] for i in present], method="holm")[1]
        for i, value in zip(present, values, strict=True):
            adjusted[i] = float(value)
    return adjusted
