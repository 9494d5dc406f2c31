"""Collapse rates, single-run risk, the interaction with a second factor and metric agreement:
against scipy on the same numbers, against direct counts, and by simulation."""

from __future__ import annotations

import itertools
from dataclasses import asdict

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from segloss.report.verdict import agreement, collapse_rates
from segloss.stats import (
    clopper_pearson,
    crossed_verdict,
    discordant_share,
    fisher_test,
    interaction,
    metric_agreement,
    paired_comparison,
    superiority,
)

FOLDS = np.repeat(np.arange(3), 23)  # 69 patients in 3 folds, as experiment=lgg_sampling


@pytest.mark.parametrize(("k", "n"), [(0, 15), (1, 15), (5, 15), (15, 15), (3, 7), (0, 1)])
@pytest.mark.parametrize("level", [0.95, 0.9])
def test_clopper_pearson_equals_scipy_binomtest(k, n, level):
    expected = scipy_stats.binomtest(k, n).proportion_ci(confidence_level=level, method="exact")
    assert clopper_pearson(k, n, level) == pytest.approx((expected.low, expected.high), abs=1e-9)


def test_collapse_rates_and_fisher_count_the_models_below_the_threshold():
    per_model = pd.DataFrame(
        {
            "loss": ["bce"] * 6 + ["bce_dice"] * 6,
            "best_val_dice": [0.05, 0.6, 0.02, 0.7, 0.09, 0.5] + [0.6] * 5 + [0.08],
        }
    )
    rates = collapse_rates(per_model, 0.1, 0.95)
    assert {loss: (r.collapsed, r.models) for loss, r in rates.items()} == {
        "bce": (3, 6),
        "bce_dice": (1, 6),
    }
    assert rates["bce"].rate == 0.5
    assert rates["bce"].ci == pytest.approx(list(clopper_pearson(3, 6)))
    test = fisher_test(rates["bce"], rates["bce_dice"])
    assert test == {
        "method": "fisher_exact",
        "p_value": scipy_stats.fisher_exact([[3, 3], [1, 5]]).pvalue,
    }


def tables(
    cand: np.ndarray, base: np.ndarray, folds: np.ndarray
) -> tuple[pd.DataFrame, pd.DataFrame]:
    index = pd.MultiIndex.from_arrays(
        [folds, [f"P{p}" for p in range(len(folds))]], names=["fold", "patient"]
    )
    return pd.DataFrame(cand, index=index), pd.DataFrame(base, index=index)


def test_superiority_estimate_is_the_direct_count_over_pairs_of_different_seeds():
    rng = np.random.default_rng(0)
    cand = rng.integers(0, 4, (6, 3)) / 4  # ties on purpose
    base = rng.integers(0, 4, (6, 3)) / 4
    wins = [
        1.0 if cand[p, s] > base[p, t] else 0.5 if cand[p, s] == base[p, t] else 0.0
        for p in range(6)
        for s, t in itertools.permutations(range(3), 2)
    ]
    result = superiority(*tables(cand, base, np.zeros(6, int)))
    assert result.estimate == pytest.approx(np.mean(wins))
    flipped = superiority(*tables(cand, base, np.zeros(6, int)), higher_is_better=False)
    assert flipped.estimate == pytest.approx(1 - np.mean(wins))
    assert superiority(*tables(cand[:, :1], base[:, :1], np.zeros(6, int))).estimate is None
    assert superiority(*tables(cand[:, :2], base[:, :2], np.zeros(6, int))).ci is None


def arm(rng, mu, shared, sd_patient, sd_model, sd_residual, seeds=5, folds=FOLDS):
    """One loss's patients x seeds scores: a patient effect ``shared`` with the other loss
    plus its own, a model effect per (fold, seed), a residual."""
    n_folds = folds.max() + 1
    own = rng.normal(0, sd_patient, (len(folds), 1))
    model = rng.normal(0, sd_model, (n_folds, seeds))[folds]
    return mu + shared + own + model + rng.normal(0, sd_residual, (len(folds), seeds))


@pytest.mark.parametrize(
    ("components", "shift"),
    [((0.1, 0.1, 0.1), 0.05), ((0.05, 0.2, 0.05), 0.1), ((0.1, 0.02, 0.1), 0.0)],
    ids=["balanced", "models-dominate", "no-difference"],
)
def test_superiority_interval_covers_the_truth(components, shift):
    """300 simulated 5-seed, 3-fold studies; the truth for one new patient and two
    independent runs is Phi(shift / sd of their difference). Nominal 95 % covers 90-98 %."""
    rng = np.random.default_rng(5)
    sd = np.sqrt(2 * sum(c**2 for c in components))
    truth = scipy_stats.norm.cdf(shift / sd)
    covered = 0
    for _ in range(300):
        shared = rng.normal(0, 1, (len(FOLDS), 1))
        cand = arm(rng, shift, shared, *components)
        base = arm(rng, 0.0, shared, *components)
        low, high = superiority(*tables(cand, base, FOLDS)).ci
        covered += low <= truth <= high
    assert 0.90 <= covered / 300 <= 0.98


def factorial_scores(rng, edges, sd_model, sd_patient=0.08, sd_residual=0.05, seeds=5):
    """Scores of bce and bce_dice under two sampling levels: the same 69 patients (a patient
    effect shared by every arm), every (level, loss) its own models."""
    shared = rng.normal(0.6, 0.15, (len(FOLDS), 1))
    rows = []
    for level, edge in edges.items():
        for loss, mu in (("bce", 0.0), ("bce_dice", edge)):
            values = arm(rng, mu, shared, sd_patient, sd_model, sd_residual, seeds)
            for p, s in itertools.product(range(len(FOLDS)), range(seeds)):
                rows.append((level, loss, s, FOLDS[p], f"P{p:02d}", values[p, s]))
    return pd.DataFrame(rows, columns=["sampling", "loss", "seed", "fold", "patient", "value"])


def test_interaction_is_the_difference_of_the_levels_differences():
    rng = np.random.default_rng(1)
    scores = factorial_scores(rng, {"uniform": 0.08, "foreground": 0.01}, 0.05)
    result = interaction(
        scores, "sampling", ["uniform", "foreground"], "bce", "bce_dice", alpha=0.05, margin=0.02
    )
    per_level = result.per_level
    means = scores.groupby(["sampling", "loss"])["value"].mean()
    edge = {lv: means[lv, "bce_dice"] - means[lv, "bce"] for lv in ("uniform", "foreground")}
    assert per_level["uniform"]["mean_difference"] == pytest.approx(edge["uniform"])
    assert result.difference == pytest.approx(edge["uniform"] - edge["foreground"])
    assert result.levels == ["uniform", "foreground"] and result.ci_level == 0.95
    assert per_level["foreground"]["superiority"].estimate is not None


@pytest.mark.parametrize(
    ("sd_model", "edges"),
    [(0.02, {"u": 0.05, "f": 0.02}), (0.1, {"u": 0.08, "f": 0.0}), (0.05, {"u": 0.03, "f": 0.03})],
    ids=["patients-dominate", "models-dominate", "no-interaction"],
)
def test_interaction_interval_covers_the_truth(sd_model, edges):
    """300 simulated factorial studies with known components: nominal 95 % covers 90-98 %."""
    rng = np.random.default_rng(9)
    truth = edges["u"] - edges["f"]
    covered = 0
    for _ in range(300):
        scores = factorial_scores(rng, edges, sd_model)
        low, high = interaction(
            scores, "sampling", ["u", "f"], "bce", "bce_dice", alpha=0.05, margin=0.02
        ).ci
        covered += low <= truth <= high
    assert 0.90 <= covered / 300 <= 0.98


def test_metric_agreement_equals_scipy_kendalltau_and_counts_discordant_pairs():
    rng = np.random.default_rng(2)
    models = pd.DataFrame(
        {
            "dice": rng.uniform(0, 1, 12),
            "hd95": rng.uniform(0, 30, 12),
            "acc": rng.uniform(0.9, 1, 12),
        }
    )
    models.loc[3, "acc"] = models.loc[4, "acc"]  # a tie
    rows = metric_agreement(models, {"dice": True, "hd95": False, "acc": True})
    assert [(r["metric_a"], r["metric_b"]) for r in rows] == [
        ("dice", "hd95"),
        ("dice", "acc"),
        ("hd95", "acc"),
    ]
    for r in rows:
        a = models[r["metric_a"]] * (-1 if r["metric_a"] == "hd95" else 1)
        b = models[r["metric_b"]] * (-1 if r["metric_b"] == "hd95" else 1)
        assert r["kendall_tau"] == pytest.approx(scipy_stats.kendalltau(a, b).statistic)
        pairs = list(itertools.combinations(range(12), 2))
        reversed_pairs = sum((a[i] - a[j]) * (b[i] - b[j]) < 0 for i, j in pairs)
        assert r["discordant_share"] == pytest.approx(reversed_pairs / len(pairs))
    assert discordant_share(np.arange(5.0), -np.arange(5.0)) == 1.0


def test_agreement_ranks_losses_and_seeds_with_folds_averaged():
    per_model = pd.DataFrame(
        {
            "loss": ["a"] * 4 + ["b"] * 4,
            "seed": [0, 0, 1, 1] * 2,
            "fold": [0, 1] * 4,
            "dice_per_patient": [0.1, 0.3, 0.5, 0.5, 0.6, 0.8, 0.9, 0.7],
            "hd95_px": [9.0, 7.0, 5.0, 5.0, 4.0, 2.0, 1.0, 3.0],
        }
    )
    (row,) = agreement(per_model)
    assert (row["metric_a"], row["metric_b"]) == ("dice_per_patient", "hd95_px")
    assert row["kendall_tau"] == pytest.approx(1.0) and row["discordant_share"] == 0.0


def test_crossed_verdict_is_paired_comparisons_interval_alone():
    rng = np.random.default_rng(3)
    rows = [
        (loss, seed, f"p{p}", 0.5 + 0.05 * (loss == "b") + rng.normal(0, 0.1))
        for loss in ("a", "b")
        for seed in range(3)
        for p in range(12)
    ]
    scores = pd.DataFrame(rows, columns=["loss", "seed", "patient", "value"])
    args = {"higher_is_better": True, "alpha": 0.05, "margin": 0.02}
    full = asdict(paired_comparison(scores, "a", "b", metric="m", seed=0, **args))
    alone = asdict(crossed_verdict(scores, "a", "b", **args))
    assert alone == {k: full[k] for k in alone}
    assert set(alone) == {"mean_difference", "ci", "ci_level", "ci_method", "margin", "verdict"}
