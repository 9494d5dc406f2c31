"""Paired comparison of two losses over test patients, with patients and models crossed.

Every model (one training run: a seed, and with cross-validation a fold) scores every test
patient of its fold, so patients and models are *crossed* random factors, as cases and
readers are in a multi-reader multi-case (MRMC) study of radiology. The difference
``candidate - baseline`` of patient ``p`` under model ``m`` is modelled as

    d[p, m] = mu + a[p] + b[m] + e[p, m]      a ~ N(0, s_patient), b ~ N(0, s_seed), ...

and the headline is the mean of ``d`` over patients (each patient's seeds averaged first).
Its variance ``s_patient/P + s_seed/S + s_residual/(P*S)`` keeps the seed term: a seed
effect that all patients share does not average away over patients, as it did in the
nested bootstrap this module used before.

Why ANOVA variance components with a Satterthwaite t-interval, and not a bootstrap or
statsmodels' ``MixedLM``: with three seeds, resampling seeds sees at most 10 distinct seed
sets and underestimates the seed variance by (S-1)/S, and ``MixedLM`` gives Wald z-intervals;
both cover far below the nominal level when the seed variance dominates (see
``tests/test_stats.py``). The ANOVA estimator equals REML (``MixedLM``, tested) on the balanced
design, is closed form, and the Satterthwaite degrees of freedom give a small-sample
t-interval (Hillis 2007 for MRMC).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import baycomp
import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.stats.multitest import multipletests

VERDICTS = ("better", "worse", "equivalent", "inconclusive")
CI_METHOD = (
    "crossed random effects (patients x models): ANOVA variance components, "
    "Satterthwaite t-interval"
)
POWER = 0.8
BAYES_SAMPLES = 20_000
_MAX_DESIGN = 100_000  # the largest number of patients or seeds a power search tries


def _clean(x: float | None) -> float | None:
    """A plain float for JSON; None for None, NaN or infinity."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


@dataclass(frozen=True)
class Components:
    """Variance components of a patients x models table, and their mean squares.

    ``patient``, ``seed`` (between models within a fold), ``residual`` and ``fold`` (between
    folds, 0 with one fold) are variances; ``ms``/``df`` are the pooled mean squares with
    their degrees of freedom, keyed ``patient``, ``seed``, ``residual``, ``fold``.
    """

    patient: float
    seed: float
    residual: float
    fold: float
    ms: dict[str, float]
    df: dict[str, float]
    patients_per_fold: tuple[int, ...]
    n_seeds: int

    def shares(self) -> dict[str, float | None]:
        """Each component's share of the variance of one (patient, model) value."""
        one_seed = self.n_seeds == 1  # seed and residual cannot be told from the patients
        parts = {
            "patient": self.patient,
            "seed": None if one_seed else self.seed,
            "fold": self.fold if len(self.patients_per_fold) > 1 else None,
            "residual": None if one_seed else self.residual,
        }
        total = sum(v for v in parts.values() if v is not None)
        return {
            k: None if v is None else (v / total if total > 0 else 0.0) for k, v in parts.items()
        }

    def variance_of_mean(self, n_patients: int | None = None, n_seeds: int | None = None) -> float:
        """Variance of the mean difference for a design of this shape (default: the observed).

        Folds keep their observed shares of the patients when ``n_patients`` changes.
        """
        return sum(c * v for c, v in self._terms(n_patients, n_seeds).values())

    def degrees_of_freedom(self) -> float:
        """Satterthwaite degrees of freedom of :meth:`variance_of_mean` (observed design)."""
        terms = self._ms_terms()
        num = sum(c * self.ms[k] for k, c in terms.items()) ** 2
        den = sum((c * self.ms[k]) ** 2 / self.df[k] for k, c in terms.items() if self.df[k] > 0)
        return num / den if den > 0 else math.inf

    def _terms(self, n_patients: int | None, n_seeds: int | None) -> dict[str, tuple[float, float]]:
        """Coefficient and variance of each component in the variance of the mean."""
        sizes = np.asarray(self.patients_per_fold, float)
        total = sizes.sum()
        p = float(n_patients or total)
        s = float(n_seeds or self.n_seeds)
        w = sizes / total  # folds' shares of the patients
        return {
            "patient": (1 / p, self.patient),
            "seed": (float(np.sum(w**2)) / s, self.seed),
            "residual": (1 / (p * s), self.residual),
            "fold": (float(np.sum(w**2)) if len(sizes) > 1 else 0.0, self.fold),
        }

    def _ms_terms(self) -> dict[str, float]:
        """The variance of the mean as coefficients of the mean squares (for Satterthwaite)."""
        k = {name: c for name, (c, _) in self._terms(None, None).items()}
        s, p_bar = self.n_seeds, float(np.mean(self.patients_per_fold))
        coef = {"residual": k["residual"]}
        if self.patient > 0:  # patient = (MS_P - MS_E) / S
            coef["patient"] = k["patient"] / s
            coef["residual"] -= k["patient"] / s
        if self.seed > 0:  # seed = (MS_S - MS_E) / mean patients per fold
            coef["seed"] = k["seed"] / p_bar
            coef["residual"] -= k["seed"] / p_bar
        if self.fold > 0:
            coef["fold"] = k["fold"]
        return coef


def variance_components(table: np.ndarray, folds: Sequence | None = None) -> Components:
    """Method-of-moments (two-way ANOVA) components of a patients x seeds table.

    ``table[p, s]`` is patient ``p``'s value under seed ``s`` of the patient's fold
    (``folds[p]``, all one fold when None): with cross-validation a column is a seed, and a
    model is the pair (fold, seed). Mean squares are pooled over folds; negative components
    are set to 0. Needs a complete table (no NaN) and at least two patients.
    """
    table = np.asarray(table, dtype=float)
    if table.ndim != 2 or table.shape[0] < 2 or not np.isfinite(table).all():
        raise ValueError("variance_components needs a finite patients x seeds table, >= 2 rows")
    folds = np.zeros(len(table), int) if folds is None else np.asarray(folds)
    n_seeds = table.shape[1]
    ss = dict.fromkeys(("patient", "seed", "residual"), 0.0)
    df = dict.fromkeys(("patient", "seed", "residual"), 0.0)
    sizes, fold_means = [], []
    for fold in pd.unique(folds):
        x = table[folds == fold]
        grand, rows, cols = x.mean(), x.mean(axis=1), x.mean(axis=0)
        sizes.append(len(x))
        fold_means.append(grand)
        ss["patient"] += n_seeds * np.sum((rows - grand) ** 2)
        ss["seed"] += len(x) * np.sum((cols - grand) ** 2)
        ss["residual"] += np.sum((x - rows[:, None] - cols[None, :] + grand) ** 2)
        df["patient"] += len(x) - 1
        df["seed"] += n_seeds - 1
        df["residual"] += (len(x) - 1) * (n_seeds - 1)
    ms = {k: (ss[k] / df[k] if df[k] > 0 else 0.0) for k in ss}
    residual = ms["residual"]
    patient = max(0.0, (ms["patient"] - residual) / n_seeds)
    seed = max(0.0, (ms["seed"] - residual) / float(np.mean(sizes))) if df["seed"] else 0.0
    fold = 0.0
    ms["fold"], df["fold"] = 0.0, float(len(sizes) - 1)
    if len(sizes) > 1:
        # Fold means vary by the fold effect plus what patients and seeds contribute to them.
        ms["fold"] = float(np.var(fold_means, ddof=1))
        within = np.mean([patient / n + seed / n_seeds + residual / (n * n_seeds) for n in sizes])
        fold = max(0.0, ms["fold"] - within)
    return Components(patient, seed, residual, fold, ms, df, tuple(sizes), n_seeds)


def crossed_interval(
    table: np.ndarray, folds: Sequence | None = None, level: float = 0.95
) -> tuple[float, float, float, Components]:
    """Mean of ``table`` (patients x seeds) with its crossed ``level`` t-interval.

    Returns ``(mean, low, high, components)``; with one seed the interval covers patients only.
    """
    components = variance_components(table, folds)
    mean = float(np.mean(table))
    se = math.sqrt(components.variance_of_mean())
    dof = components.degrees_of_freedom()
    half = stats.t.ppf(0.5 + level / 2, dof) * se if se > 0 else 0.0
    return mean, mean - half, mean + half, components


def projected_df(components: Components, n_patients: int, n_seeds: int) -> float:
    """Satterthwaite degrees of freedom a one-fold design of this size would have, from the
    mean squares the components predict for it (not the observed ones)."""
    ms = {
        "patient": components.residual + n_seeds * components.patient,
        "seed": components.residual + n_patients * components.seed,
        "residual": components.residual,
    }
    df = {
        "patient": n_patients - 1,
        "seed": n_seeds - 1,
        "residual": (n_patients - 1) * (n_seeds - 1),
    }
    coef = {"patient": 1.0, "seed": 1.0, "residual": -1.0}  # times 1 / (P * S)
    num = sum(coef[k] * ms[k] for k in ms) ** 2
    den = sum((coef[k] * ms[k]) ** 2 / df[k] for k in ms if df[k] > 0)
    return num / den if den > 0 else math.inf


def minimum_detectable(components: Components, alpha: float, n_patients=None, n_seeds=None):
    """Smallest true difference a two-sided test at ``alpha`` detects with 80 % power.

    For the observed design the degrees of freedom are the interval's; for another design
    (``n_patients`` or ``n_seeds`` given) those that design would have (:func:`projected_df`).
    """
    se = math.sqrt(components.variance_of_mean(n_patients, n_seeds))
    if n_patients is None and n_seeds is None:
        dof = components.degrees_of_freedom()
    else:
        dof = projected_df(
            components,
            n_patients or sum(components.patients_per_fold),
            n_seeds or components.n_seeds,
        )
    dof = max(dof, 1.0)
    return float((stats.t.ppf(1 - alpha / 2, dof) + stats.t.ppf(POWER, dof)) * se)


def design_needed(components: Components, alpha: float, margin: float, vary: str) -> int | None:
    """Fewest patients (``vary="patients"``, seeds as observed) or seeds (patients as
    observed) whose minimum detectable difference is at most ``margin``; None if unreachable."""
    if margin <= 0:
        return None

    def mde(n: int) -> float:
        sizes = {"n_patients": n} if vary == "patients" else {"n_seeds": n}
        return minimum_detectable(components, alpha, **sizes)

    low = 2 if vary == "patients" else 1
    if mde(_MAX_DESIGN) > margin:
        return None
    high = _MAX_DESIGN
    while low < high:  # mde falls as the design grows: bisect for the first n that suffices
        mid = (low + high) // 2
        low, high = (low, mid) if mde(mid) <= margin else (mid + 1, high)
    return low


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


def paired_comparison(
    scores: pd.DataFrame,
    baseline: str,
    candidate: str,
    *,
    metric: str,
    higher_is_better: bool = True,
    alpha: float = 0.05,
    margin: float = 0.02,
    seed: int = 0,
    drop_seeds: Sequence[int] = (),
) -> dict[str, Any]:
    """Compare ``candidate`` with ``baseline`` on ``scores`` (loss, seed, patient, value[, fold]).

    ``mean_difference`` is candidate - baseline in the metric's units, averaged over seeds per
    patient, then over patients. ``ci`` is the crossed ``1 - alpha`` interval, ``verdict``
    follows :func:`decide` against ``margin``, ``p_value`` is the Wilcoxon signed-rank test
    over the patients' seed means (secondary), ``bayes`` baycomp's signed-rank test on the same
    means with ``margin`` as the ROPE, ``power`` what this design detects. Seeds in
    ``drop_seeds`` are left out of both losses (sensitivity analyses). JSON-serialisable.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    base, cand = model_table(scores, baseline), model_table(scores, candidate)
    seeds = [s for s in base.columns if s in cand.columns and s not in set(drop_seeds)]
    if not seeds:
        raise ValueError(f"{baseline!r} and {candidate!r} share no seed")
    diff = complete(cand[seeds] - base[seeds])
    if len(diff) < 2 or diff.shape[1] == 0:
        raise ValueError(f"{baseline!r} and {candidate!r} share fewer than 2 patients")
    folds = diff.index.get_level_values("fold")
    mean, low, high, components = crossed_interval(diff.to_numpy(), folds, 1 - alpha)
    base_means = base.loc[diff.index, diff.columns].mean(axis=1).to_numpy()
    cand_means = cand.loc[diff.index, diff.columns].mean(axis=1).to_numpy()
    d = cand_means - base_means
    shares = components.shares()
    return {
        "baseline": baseline,
        "candidate": candidate,
        "metric": metric,
        "higher_is_better": bool(higher_is_better),
        "mean_difference": _clean(mean),
        "ci": [_clean(low), _clean(high)],
        "ci_level": 1 - float(alpha),
        "ci_method": CI_METHOD,
        "margin": float(margin),
        "verdict": decide(low, high, margin, higher_is_better),
        "p_value": _clean(wilcoxon_p(d)),
        "p_holm": None,
        "effect_size": _clean(rank_biserial(d)),
        "bayes": bayes_signed_rank(base_means, cand_means, margin, higher_is_better, seed),
        "power": {
            "mde": _clean(minimum_detectable(components, alpha)),
            "patients_needed": design_needed(components, alpha, margin, "patients"),
            "seeds_needed": design_needed(components, alpha, margin, "seeds"),
        },
        "variance": shares,
        "n_pairs": int(len(diff)),
        "n_seeds": int(diff.shape[1]),
        "n_folds": int(len(components.patients_per_fold)),
        "per_seed_differences": {
            (s.item() if isinstance(s, np.generic) else s): _clean(v)
            for s, v in diff.mean(axis=0).items()
        },
        "alpha": float(alpha),
    }


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
