"""The crossed patients x models model: ANOVA variance components, the Satterthwaite
t-interval of the mean difference, and the power of a design (see :mod:`segloss.stats`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

CI_METHOD = (
    "crossed random effects (patients x models): ANOVA variance components, "
    "Satterthwaite t-interval"
)
POWER = 0.8
_MAX_DESIGN = 100_000  # the largest number of patients or seeds a power search tries


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


@dataclass(frozen=True)
class Power:
    """What the observed design detects (``mde``), and the patients or seeds that would detect
    the margin (None where no design up to 100,000 does)."""

    mde: float | None
    patients_needed: int | None
    seeds_needed: int | None


def power(components: Components, alpha: float, margin: float) -> Power:
    """:class:`Power` of the observed design against ``margin``."""
    mde = minimum_detectable(components, alpha)
    return Power(
        mde=mde if math.isfinite(mde) else None,
        patients_needed=design_needed(components, alpha, margin, "patients"),
        seeds_needed=design_needed(components, alpha, margin, "seeds"),
    )
