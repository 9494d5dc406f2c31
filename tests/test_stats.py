"""Paired comparison on hand-made scores: verdicts, direction, bootstrap CI, bad input."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from segloss.stats import (
    VERDICTS,
    cohens_dz,
    hierarchical_bootstrap,
    paired_comparison,
    rank_biserial,
)


def make_scores(shift: float, n_patients: int = 12, seeds=(0, 1, 2), noise: float = 0.01):
    """bce scores spread over patients; bce_dice = bce + shift + small per-run noise."""
    rng = np.random.default_rng(1)
    base = rng.uniform(0.5, 0.9, n_patients)
    rows = []
    for s in seeds:
        for i, b in enumerate(base):
            rows.append(("bce", s, f"P{i}", b + rng.normal(0, noise)))
            rows.append(("bce_dice", s, f"P{i}", b + shift + rng.normal(0, noise)))
    return pd.DataFrame(rows, columns=["loss", "seed", "patient", "value"])


def test_identical_losses_give_no_difference():
    scores = make_scores(0.0)
    same = pd.concat([scores[scores.loss == "bce"], scores[scores.loss == "bce"].assign(loss="x")])
    result = paired_comparison(same, "bce", "x", metric="dice_per_patient")
    assert result["verdict"] == "no_difference"
    assert result["p_value"] == 1.0 and result["mean_difference"] == 0.0
    assert result["ci95"] == [0.0, 0.0] and result["effect_size"] == 0.0
    assert result["per_seed_differences"] == {0: 0.0, 1: 0.0, 2: 0.0}


def test_noise_alone_gives_no_difference():
    result = paired_comparison(make_scores(0.0), "bce", "bce_dice", metric="dice")
    assert result["verdict"] == "no_difference" and result["p_value"] > 0.05


def test_clear_shift_is_better_or_worse_with_the_right_sign():
    scores = make_scores(0.05)
    up = paired_comparison(scores, "bce", "bce_dice", metric="dice")
    assert up["verdict"] == "better" and up["mean_difference"] == pytest.approx(0.05, abs=0.01)
    assert up["p_value"] < 0.001 and up["effect_size"] == 1.0 and up["cohens_dz"] > 2
    assert all(d > 0 for d in up["per_seed_differences"].values())
    assert (up["n_pairs"], up["n_seeds"]) == (12, 3)
    down = paired_comparison(scores, "bce_dice", "bce", metric="dice")
    assert down["verdict"] == "worse" and down["mean_difference"] < 0
    lower_is_better = paired_comparison(
        scores, "bce", "bce_dice", metric="hd95", higher_is_better=False
    )
    assert lower_is_better["verdict"] == "worse"


def test_ci_contains_the_mean_difference_and_result_is_json():
    result = paired_comparison(make_scores(0.02, noise=0.05), "bce", "bce_dice", metric="dice")
    lo, hi = result["ci95"]
    assert lo < result["mean_difference"] < hi
    assert result["verdict"] in VERDICTS
    assert json.loads(json.dumps(result))["ci95"] == [lo, hi]
    again = paired_comparison(make_scores(0.02, noise=0.05), "bce", "bce_dice", metric="dice")
    assert again == result  # seeded


def test_few_pairs_use_the_exact_test():
    result = paired_comparison(make_scores(0.05, n_patients=3), "bce", "bce_dice", metric="dice")
    assert result["p_value"] == pytest.approx(0.25)  # exact: 2 / 2**3, never significant
    assert result["verdict"] == "no_difference"


def test_seeds_and_patients_present_in_only_one_loss_are_left_out():
    scores = make_scores(0.05)
    scores = scores[~((scores.loss == "bce") & (scores.seed == 2))]
    extra = pd.DataFrame([("bce_dice", 0, "P_ONLY", 0.1)], columns=scores.columns)
    result = paired_comparison(pd.concat([scores, extra]), "bce", "bce_dice", metric="dice")
    assert (result["n_pairs"], result["n_seeds"]) == (12, 2)
    assert sorted(result["per_seed_differences"]) == [0, 1]


def test_bootstrap_resamples_seeds_within_patients():
    diff = np.array([[0.0, 1.0], [0.0, 1.0]])  # seeds disagree, patients agree
    boot = hierarchical_bootstrap(diff, 2000, seed=0)
    assert boot.shape == (2000,) and boot.min() >= 0 and boot.max() <= 1
    assert 0.4 < boot.mean() < 0.6 and boot.std() > 0.1


def test_effect_sizes():
    assert rank_biserial(np.array([1.0, 2.0, -3.0])) == pytest.approx(0.0)
    assert rank_biserial(np.array([1.0, 2.0, 0.0])) == 1.0
    assert cohens_dz(np.array([1.0, 3.0])) == pytest.approx(2 / np.sqrt(2))


@pytest.mark.parametrize(
    ("baseline", "candidate", "scores", "message"),
    [
        ("bce", "focal", make_scores(0.0), "focal"),
        ("bce", "bce_dice", make_scores(0.0).drop(columns="seed"), "seed"),
        (
            "bce",
            "bce_dice",
            make_scores(0.0).assign(
                patient=lambda f: np.where(f.loss == "bce", f.patient, "X" + f.patient)
            ),
            "share no patient",
        ),
        ("bce", "bce_dice", pd.concat([make_scores(0.0)] * 2), "duplicates"),
    ],
)
def test_bad_input_is_a_value_error(baseline, candidate, scores, message):
    with pytest.raises(ValueError, match=message):
        paired_comparison(scores, baseline, candidate, metric="dice")
