"""Score tables of one loss, the paired comparison of two losses with its verdict, and
Friedman's test over three or more."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from segloss.stats.signed_rank import bayes_signed_rank, holm, rank_biserial, wilcoxon_p
from segloss.stats.superiority import Superiority, superiority
from segloss.stats.variance import (
    CI_METHOD,
    Power,
    crossed_interval,
    power,
    variance_components,
)

VERDICTS = ("better", "worse", "equivalent", "inconclusive")


@dataclass(frozen=True)
class CrossedVerdict:
    """candidate - baseline, averaged over seeds per patient, then over patients, with its
    crossed ``ci_level`` interval and the verdict against ``margin`` (:func:`decide`)."""

    mean_difference: float | None
    ci: list[float | None]
    ci_level: float
    ci_method: str
    margin: float
    verdict: str


@dataclass(frozen=True)
class PairedComparison:
    """Everything :func:`paired_comparison` says about two losses (verdict.json's primary and
    comparisons: ``dataclasses.asdict``, in this order)."""

    baseline: str
    candidate: str
    metric: str
    higher_is_better: bool
    mean_difference: float | None
    ci: list[float | None]
    ci_level: float
    ci_method: str
    margin: float
    verdict: str
    p_value: float | None  # Wilcoxon signed-rank over the patients' seed means
    p_holm: float | None  # set by whoever corrects a family of comparisons
    effect_size: float | None  # rank-biserial correlation
    bayes: dict[str, float]  # baycomp: p_better, p_equivalent, p_worse
    power: Power
    variance: dict[str, float | None]  # shares: patient, seed, fold, residual
    n_pairs: int
    n_seeds: int
    n_folds: int
    per_seed_differences: dict[int, float | None]
    superiority: Superiority
    alpha: float


@dataclass(frozen=True)
class Interaction:
    """How candidate - baseline changes with a second factor (:func:`interaction`)."""

    factor: str
    levels: list[str]
    difference: float | None
    ci: list[float | None]
    ci_level: float
    ci_method: str
    margin: float
    verdict: str
    variance: dict[str, float | None]
    per_level: dict[str, dict[str, object]]  # mean_difference, ci, verdict, superiority


def _clean(x: float | None) -> float | None:
    """A plain float for JSON; None for None, NaN or infinity."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def decide(low: float | None, high: float | None, margin: float, higher_is_better: bool) -> str:
    """better / worse (interval clear of 0), equivalent (inside +-margin), else inconclusive.

    ``low``/``high`` bound candidate - baseline in the metric's units; for a metric where lower
    is better (HD95) a negative difference is the candidate's win.
    """
    if low is None or high is None:
        return "inconclusive"
    if low > 0 or high < 0:
        return "better" if (low > 0) == higher_is_better else "worse"
    if -margin <= low and high <= margin:
        return "equivalent"
    return "inconclusive"


def _decided(
    low: float, high: float, alpha: float, margin: float, higher_is_better: bool
) -> dict[str, object]:
    """A crossed interval's fields: ``ci``, ``ci_level``, ``ci_method``, ``margin``, ``verdict``."""
    return {
        "ci": [_clean(low), _clean(high)],
        "ci_level": 1 - float(alpha),
        "ci_method": CI_METHOD,
        "margin": float(margin),
        "verdict": decide(low, high, margin, higher_is_better),
    }


def model_table(scores: pd.DataFrame, loss: str) -> pd.DataFrame:
    """One loss's ``patient x seed`` table (index fold, patient) from a scores frame."""
    missing = {"loss", "seed", "patient", "value"} - set(scores.columns)
    if missing:
        raise ValueError(f"scores lack column(s) {', '.join(sorted(missing))}")
    frame = scores if "fold" in scores else scores.assign(fold=0)
    frame = frame[frame["loss"] == loss]
    if frame.empty:
        raise ValueError(
            f"loss {loss!r} has no scores; losses present: {sorted(scores['loss'].unique())}"
        )
    if frame.duplicated(["seed", "patient"]).any():
        raise ValueError("scores must hold one value per (loss, seed, patient), found duplicates")
    return frame.pivot_table(index=["fold", "patient"], columns="seed", values="value")


def complete(table: pd.DataFrame) -> pd.DataFrame:
    """Drop seeds missing for a whole fold (a failed run), then patients with any gap."""
    return table.dropna(axis=1, how="all").dropna(axis=0, how="any")


def _paired_tables(
    scores: pd.DataFrame, baseline: str, candidate: str, drop_seeds: Sequence[int]
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Both losses' patient x seed tables and their complete difference (shared seeds)."""
    base, cand = model_table(scores, baseline), model_table(scores, candidate)
    seeds = [s for s in base.columns if s in cand.columns and s not in set(drop_seeds)]
    if not seeds:
        raise ValueError(f"{baseline!r} and {candidate!r} share no seed")
    diff = complete(cand[seeds] - base[seeds])
    if len(diff) < 2 or diff.shape[1] == 0:
        raise ValueError(f"{baseline!r} and {candidate!r} share fewer than 2 patients")
    return base, cand, diff


def crossed_verdict(
    scores: pd.DataFrame,
    baseline: str,
    candidate: str,
    *,
    higher_is_better: bool = True,
    alpha: float,
    margin: float,
) -> CrossedVerdict:
    """The crossed interval and verdict of :func:`paired_comparison` alone (no tests, power or
    superiority)."""
    _, _, diff = _paired_tables(scores, baseline, candidate, ())
    folds = diff.index.get_level_values("fold")
    mean, low, high, _ = crossed_interval(diff.to_numpy(), folds, 1 - alpha)
    decided = _decided(low, high, alpha, margin, higher_is_better)
    return CrossedVerdict(mean_difference=_clean(mean), **decided)


def paired_comparison(
    scores: pd.DataFrame,
    baseline: str,
    candidate: str,
    *,
    metric: str,
    higher_is_better: bool = True,
    alpha: float,
    margin: float,
    seed: int,
    drop_seeds: Sequence[int] = (),
) -> PairedComparison:
    """Compare ``candidate`` with ``baseline`` on ``scores`` (loss, seed, patient, value[, fold]).

    ``mean_difference`` is candidate - baseline in the metric's units, averaged over seeds per
    patient, then over patients. ``ci`` is the crossed ``1 - alpha`` interval, ``verdict``
    follows :func:`decide` against ``margin``, ``p_value`` is the Wilcoxon signed-rank test
    over the patients' seed means (secondary), ``bayes`` baycomp's signed-rank test on the same
    means with ``margin`` as the ROPE, ``power`` what this design detects. Seeds in
    ``drop_seeds`` are left out of both losses (sensitivity analyses); ``alpha``, ``margin``
    and baycomp's ``seed`` are the caller's (the report passes ``report.*``). Its
    ``dataclasses.asdict`` is JSON-serialisable.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    base, cand, diff = _paired_tables(scores, baseline, candidate, drop_seeds)
    folds = diff.index.get_level_values("fold")
    mean, low, high, components = crossed_interval(diff.to_numpy(), folds, 1 - alpha)
    base_means = base.loc[diff.index, diff.columns].mean(axis=1).to_numpy()
    cand_means = cand.loc[diff.index, diff.columns].mean(axis=1).to_numpy()
    d = cand_means - base_means
    shares = components.shares()
    return PairedComparison(
        baseline=baseline,
        candidate=candidate,
        metric=metric,
        higher_is_better=bool(higher_is_better),
        mean_difference=_clean(mean),
        **_decided(low, high, alpha, margin, higher_is_better),
        p_value=_clean(wilcoxon_p(d)),
        p_holm=None,
        effect_size=_clean(rank_biserial(d)),
        bayes=bayes_signed_rank(base_means, cand_means, margin, higher_is_better, seed),
        power=power(components, alpha, margin),
        variance=shares,
        n_pairs=int(len(diff)),
        n_seeds=int(diff.shape[1]),
        n_folds=int(len(components.patients_per_fold)),
        per_seed_differences={
            (s.item() if isinstance(s, np.generic) else s): _clean(v)
            for s, v in diff.mean(axis=0).items()
        },
        superiority=superiority(
            cand.loc[diff.index, diff.columns],
            base.loc[diff.index, diff.columns],
            higher_is_better,
            1 - alpha,
        ),
        alpha=float(alpha),
    )


def interaction(
    scores: pd.DataFrame,
    factor: str,
    levels: Sequence[str],
    baseline: str,
    candidate: str,
    *,
    higher_is_better: bool = True,
    alpha: float,
    margin: float,
) -> Interaction:
    """How ``candidate - baseline`` changes with a second factor: the difference of the two
    differences, ``levels[0]``'s minus ``levels[1]``'s, with its crossed interval and verdict.

    ``scores`` holds a column ``factor`` beside ``loss, seed, [fold,] patient, value``. Every
    level trains its own models, on the same test patients. Per level ``l`` the difference
    table is ``d_l[p, s] = mu_l + a_l[p] + b_l[s] + e_l[p, s]`` (patients x models crossed,
    :mod:`segloss.stats.variance`). Pairing level 0's seed ``s`` with level 1's seed ``s``
    in the same fold gives ``D[p, s] = d_0[p, s] - d_1[p, s]``, again a crossed table:
    patient effect ``a_0 - a_1`` (the patients are shared, so their effects partly cancel),
    model effect ``b_0 - b_1`` whose variance is the sum of the two levels' (their models are
    independent; a correlation through a shared seed is what the table then measures), and
    residual ``e_0 - e_1``. The mean of ``D`` is the interaction whatever the pairing, and the
    crossed interval of ``D`` (ANOVA components, Satterthwaite t) is its interval; coverage
    by simulation is in tests/test_stats.py. Each level's own comparison is in ``per_level``.
    """
    if len(levels) != 2:
        raise ValueError(f"an interaction needs two levels of {factor}, got {list(levels)}")
    diffs, per_level = [], {}
    for level in levels:
        at = scores[scores[factor].astype(str) == str(level)].drop(columns=factor)
        base, cand, diff = _paired_tables(at, baseline, candidate, ())
        mean, low, high, _ = crossed_interval(
            diff.to_numpy(), diff.index.get_level_values("fold"), 1 - alpha
        )
        per_level[str(level)] = {
            "mean_difference": _clean(mean),
            "ci": [_clean(low), _clean(high)],
            "verdict": decide(low, high, margin, higher_is_better),
            "superiority": superiority(
                cand.loc[diff.index, diff.columns],
                base.loc[diff.index, diff.columns],
                higher_is_better,
                1 - alpha,
            ),
        }
        diffs.append(diff)
    both = complete(diffs[0] - diffs[1])
    if len(both) < 2 or both.shape[1] == 0:
        raise ValueError(f"the levels of {factor} share fewer than 2 patients or no seed")
    mean, low, high, components = crossed_interval(
        both.to_numpy(), both.index.get_level_values("fold"), 1 - alpha
    )
    return Interaction(
        factor=factor,
        levels=[str(level) for level in levels],
        difference=_clean(mean),
        **_decided(low, high, alpha, margin, higher_is_better),
        variance=components.shares(),
        per_level=per_level,
    )


def loss_variance(scores: pd.DataFrame, loss: str) -> dict[str, float | None]:
    """Shares of the variance of one loss's scores due to patients, seeds, folds, residual."""
    table = complete(model_table(scores, loss))
    return variance_components(table.to_numpy(), table.index.get_level_values("fold")).shares()


def friedman(scores: pd.DataFrame, losses: Sequence[str], higher_is_better: bool) -> dict:
    """Friedman test over patients (seed means) of three or more losses, with pairwise
    Wilcoxon signed-rank tests Holm-corrected, and each loss's mean rank (1 = best)."""
    wide = (
        scores[scores["loss"].isin(losses)]
        .groupby(["patient", "loss"])["value"]
        .mean()
        .unstack("loss")[list(losses)]
        .dropna()
    )
    if (wide.nunique(axis=1) == 1).all():  # every patient ties every loss: no ranking at all
        statistic, p_value = math.nan, 1.0
    else:
        statistic, p_value = stats.friedmanchisquare(*(wide[loss] for loss in losses))
    ranks = wide.rank(axis=1, ascending=not higher_is_better).mean()
    pairs = [(a, b) for i, a in enumerate(losses) for b in losses[i + 1 :]]
    raw = [wilcoxon_p((wide[b] - wide[a]).to_numpy()) for a, b in pairs]
    return {
        "statistic": _clean(statistic),
        "p_value": _clean(p_value),
        "n_patients": int(len(wide)),
        "mean_ranks": {loss: float(ranks[loss]) for loss in losses},
        "posthoc": [
            {"a": a, "b": b, "p_value": _clean(p), "p_holm": q}
            for (a, b), p, q in zip(pairs, raw, holm(raw), strict=True)
        ],
    }
