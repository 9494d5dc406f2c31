"""Single-run risk: the probability that one training run of the candidate scores higher than
one independent run of the baseline on a random test patient.

For patient ``p`` (of fold ``f``) and every pair of *different* seeds ``s != t`` of that fold,
the kernel is ``1[C[p, s] > B[p, t]] + 0.5 * 1[C[p, s] == B[p, t]]``; the estimate is the mean
over pairs, then over patients. Pairs of the same seed are left out: in this pipeline the
same seed gives the two losses the same initial weights and batches, so they are not
independent runs.

The interval: the estimate is a U-statistic over two crossed random factors (patients and
models), so its variance has a patient part and a model part. Each is estimated by a
delete-one jackknife over that factor (a patient; a seed, removed from both losses in every
fold), and the two are added; both jackknifes also see the residual, so the sum errs on the
wide side. The t quantile takes Satterthwaite's degrees of freedom of the sum (patients - 1
and seeds - 1), because with five seeds the model part is itself uncertain. Coverage is
checked by simulation with a known truth (tests/test_stats_risk.py). No library computes this
crossed interval (the probability of superiority of MRMC studies is an AUC with
readers x cases variance, Obuchowski-Rockette; the estimator here is the same idea).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats


def _kernel(cand: np.ndarray, base: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """Per patient, the mean kernel over pairs of different seeds among ``seeds`` (columns:
    a patient's row holds its own fold's models, so every pair is of one fold)."""
    c, b = cand[:, seeds], base[:, seeds]
    wins = (c[:, :, None] > b[:, None, :]) + 0.5 * (c[:, :, None] == b[:, None, :])
    off = ~np.eye(len(seeds), dtype=bool)
    return wins[:, off].mean(axis=1)


@dataclass(frozen=True)
class Superiority:
    """P(one candidate run beats one baseline run) and its ``ci_level`` interval (null where
    too few seeds)."""

    estimate: float | None
    ci: list[float] | None
    ci_level: float


def superiority(
    cand: pd.DataFrame, base: pd.DataFrame, higher_is_better: bool = True, level: float = 0.95
) -> Superiority:
    """P(candidate run > baseline run) from two complete ``patient x seed`` tables (index
    ``(fold, patient)``, the same seeds as columns).

    ``estimate`` is null with fewer than two seeds (no pair of independent runs); ``ci`` is
    null with fewer than three (the seed jackknife needs two seeds left).
    """
    sign = 1.0 if higher_is_better else -1.0
    c, b = sign * cand.to_numpy(float), sign * base.to_numpy(float)
    n_patients, n_seeds = c.shape
    level = float(level)
    if n_seeds < 2:
        return Superiority(None, None, level)
    every = np.arange(n_seeds)
    per_patient = _kernel(c, b, every)
    estimate = float(per_patient.mean())
    if n_seeds < 3 or n_patients < 2:
        return Superiority(estimate, None, level)
    var_patients = float(per_patient.var(ddof=1)) / n_patients
    dropped = np.array([_kernel(c, b, np.delete(every, k)).mean() for k in every])
    var_seeds = (n_seeds - 1) / n_seeds * float(np.sum((dropped - dropped.mean()) ** 2))
    total = var_patients + var_seeds
    if total <= 0:
        return Superiority(estimate, [estimate, estimate], level)
    dof = total**2 / (var_patients**2 / (n_patients - 1) + var_seeds**2 / (n_seeds - 1))
    half = stats.t.ppf(0.5 + level / 2, dof) * math.sqrt(total)
    return Superiority(estimate, [max(0.0, estimate - half), min(1.0, estimate + half)], level)
