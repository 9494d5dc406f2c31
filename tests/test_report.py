"""The report on evaluation outputs of untrained tiny models: two losses, and one loss only."""

from __future__ import annotations

import dataclasses
import itertools
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import settings
from statsmodels.stats.multitest import multipletests
from test_evaluation import EVAL_CFG, write_checkpoint

from segloss.data import card
from segloss.data.prepared import load_meta
from segloss.errors import SeglossError
from segloss.evaluation import evaluate
from segloss.report import Factor, build_report
from segloss.report.tables import Tables, size_terciles, training_regime
from segloss.report.verdict import build_verdict
from segloss.report.wording import headline, metric_trust, outcome
from segloss.stats import VERDICTS

SETTINGS = dataclasses.replace(settings().report, overlay_count=3, dpi=40)
N_FIGURES = 9  # without the paired figure (needs a comparison) and the CD diagram (3+ losses)


def evaluated_report(tmp: Path, prepared: Path, losses: tuple[str, ...]) -> dict[str, Path]:
    torch.set_num_threads(1)
    meta = load_meta(prepared)
    for loss in losses:
        write_checkpoint(tmp / "models", loss, 0, meta)
    metrics_dir = tmp / "reports" / "metrics"
    evaluate(prepared, tmp / "models", tmp / "predictions", metrics_dir, tmp / "plots", EVAL_CFG)
    card.write_tables(prepared)  # as the prepare stage does
    report = build_report(prepared, tmp / "predictions", metrics_dir, tmp / "reports", SETTINGS)
    return report.paths


@pytest.mark.parametrize(
    ("losses", "figures"),
    [
        (("bce", "dice", "bce_dice"), N_FIGURES + 2),
        (("bce", "bce_dice"), N_FIGURES + 1),
        (("bce",), N_FIGURES),
    ],
    ids=["three", "two", "one"],
)
def test_report_renders_every_section_and_figure(tiny_prepared, tmp_path, losses, figures):
    paths = evaluated_report(tmp_path, tiny_prepared, losses)
    html = paths["report_html"].read_text()
    assert html.count('<img src="data:image/png;base64,') == figures
    assert len(list(paths["figures"].glob("*.png"))) == figures
    markdown = paths["report_md"].read_text()
    for section in (
        "1. Data card",
        "2. Every metric",
        "3. Figures",
        "4. Where",
        "5. The verdict",
        "Where the variance comes from",
    ):
        assert section in markdown and section in html
    verdict = json.loads(paths["verdict"].read_text())
    assert verdict["n_pairs"] == 3 and verdict["n_seeds"] == 1
    # which variant each loss is: per_model.csv, verdict.json and every table of the report
    variants = {"bce": "pixel", "dice": "batch", "bce_dice": "batch"}
    per_model = pd.read_csv(tmp_path / "reports" / "metrics" / "per_model.csv")
    assert dict(zip(per_model["loss"], per_model["loss_variant"], strict=True)) == {
        loss: variants[loss] for loss in losses
    }
    assert verdict["loss_variants"] == {loss: variants[loss] for loss in losses}
    for comparison in verdict["comparisons"]:
        expected = {"baseline": "pixel", "candidate": variants[comparison["candidate"]]}
        assert comparison["variant"] == expected
    for loss in losses:  # a row of the calibration table
        assert re.search(rf"^\| {loss} \({variants[loss]}\) +\|", markdown, re.MULTILINE)
    assert "ci95" not in verdict and verdict["margin"] == SETTINGS.margin
    assert f"±{SETTINGS.margin:g}" in markdown
    if len(losses) == 1:
        assert verdict["verdict"] is None and verdict["comparisons"] == []
        assert "no comparison possible" in verdict["reason"]
        assert "No comparison possible" in markdown and "friedman" not in verdict
    else:
        assert verdict["variant"] == {"baseline": "pixel", "candidate": variants[losses[-1]]}
        assert verdict["verdict"] in VERDICTS and verdict["p_holm"] is None
        assert len(verdict["ci"]) == 2 and 0 <= verdict["p_value"] <= 1
        secondary = {(c["candidate"], c["metric"]) for c in verdict["comparisons"]}
        # volume HD95/NSD named with their unit: the tiny set has no pixel spacing -> px
        expected = {"iou_per_patient", "hd95_px", "nsd_2px"}
        assert {m for c, m in secondary if c == "bce_dice"} == expected
        assert ("friedman" in verdict) == (len(losses) == 3)
        assert "paired.png" in {p.name for p in paths["figures"].glob("*.png")}
    assert verdict["headline"] in markdown


def study(shifts: dict[str, float], n_patients=16, seeds=3, noise=0.005, collapsed=()):
    """Evaluation tables of hand-made per-patient scores: each loss = base + its shift.

    ``collapsed`` lists (loss, seed) models that never left the all-background solution:
    best validation Dice 0.02 and test Dice 0 on every patient.
    """
    rng = np.random.default_rng(1)
    base = rng.uniform(0.4, 0.8, size=n_patients)
    rows, models = [], []
    for loss, shift in shifts.items():
        for seed in range(seeds):
            dead = (loss, seed) in collapsed
            models.append((loss, seed, 0.02 if dead else 0.7, 1e-3))
            for p in range(n_patients):
                value = 0.0 if dead else base[p] + shift + rng.normal(0, noise)
                rows.append((loss, seed, f"P{p:02d}", value))
    per_patient = pd.DataFrame(rows, columns=["loss", "seed", "patient", "dice"]).assign(
        iou=lambda f: f["dice"] / (2 - f["dice"]), dice_at_best=lambda f: f["dice"]
    )
    per_image = per_patient.assign(
        slice=1,
        hd95=lambda f: 10 * (1 - f["dice"]),
        nsd=1.0,
        gt_pixels=100,
        # blind to the losses: the same accuracy up to noise far inside its 0.001 margin
        pixel_accuracy=lambda f: 0.99 + np.random.default_rng(2).normal(0, 2e-4, len(f)),
    )
    per_model = pd.DataFrame(models, columns=["loss", "seed", "best_val_dice", "lr"])
    return {"per_image": per_image, "per_patient": per_patient, "per_model": per_model}


@pytest.mark.parametrize(
    ("shift", "noise", "expected"),
    [
        (0.1, 0.005, "better"),
        (-0.1, 0.005, "worse"),
        (0.0, 0.002, "equivalent"),
        (0.02, 0.1, "inconclusive"),
    ],
)
def test_each_verdict_outcome_and_its_sentence(shift, noise, expected):
    verdict = build_verdict(study({"bce": 0.0, "bce_dice": shift}, noise=noise), SETTINGS)
    assert verdict["verdict"] == expected
    assert verdict["n_pairs"] == 16 and verdict["n_seeds"] == 3
    assert verdict["collapsed_seeds"] == {"bce": 0, "bce_dice": 0}
    assert verdict["without_collapsed"] is None
    sentence = headline(verdict, "synthetic", {"n_models": 0}, {"bce": 3, "bce_dice": 3}, 0.1)
    first = {
        "better": "bce_dice beats bce",
        "worse": "bce_dice is worse than bce",
        "equivalent": "are equivalent",
        "inconclusive": "Inconclusive",
    }[expected]
    assert first in sentence and "No model collapsed" in sentence and "Power:" in sentence
    assert "one learning rate shared by every loss (0.001)" in sentence


def test_a_better_inside_the_margin_says_so():
    verdict = build_verdict(study({"bce": 0.0, "bce_dice": 0.01}, noise=0.001), SETTINGS)
    assert verdict["verdict"] == "better"
    low, high = verdict["ci"]
    assert low > 0 and high < SETTINGS.margin
    assert "inside the pre-set ±0.02 margin" in outcome(verdict)


def test_a_collapsed_seed_is_counted_named_and_left_out_in_the_sensitivity_analysis():
    """The landed failure: one bce seed at the all-background solution makes bce_dice 'win'."""
    tables = study({"bce": 0.0, "bce_dice": -0.01}, collapsed=[("bce", 1)])
    verdict = build_verdict(tables, SETTINGS)
    assert verdict["collapsed_seeds"] == {"bce": 1, "bce_dice": 0}
    assert verdict["per_seed_differences"][1] > 0.4  # the collapsed seed's "win"
    assert verdict["verdict"] == "inconclusive"  # three seeds, one of them dead: wide CI
    without = verdict["without_collapsed"]
    assert without["dropped_seeds"] == [1] and without["n_seeds"] == 2
    assert without["mean_difference"] == pytest.approx(-0.01, abs=0.003)
    assert without["verdict"] == "worse"
    sentence = headline(verdict, "synthetic", {"n_models": 0}, {"bce": 3, "bce_dice": 3}, 0.1)
    assert "bce collapsed in 1 of 3 seeds" in sentence
    assert "without the collapsed seeds" in sentence and "worse" in sentence


def test_secondaries_are_holm_corrected_and_three_losses_get_friedman():
    verdict = build_verdict(
        study({"bce": 0.0, "dice": 0.03, "bce_dice": 0.05}, noise=0.05), SETTINGS
    )
    raw = [c["p_value"] for c in verdict["comparisons"]]
    assert len(raw) == 7  # dice: 4 metrics; bce_dice: the 3 non-primary ones
    assert [c["p_holm"] for c in verdict["comparisons"]] == pytest.approx(
        list(multipletests(raw, method="holm")[1])
    )
    assert verdict["p_holm"] is None  # the primary is not corrected
    assert set(verdict["friedman"]) >= {"statistic", "p_value"}
    assert set(verdict["variance_by_loss"]) == {"bce", "dice", "bce_dice"}
    assert verdict["at_best_threshold"]["metric"] == "dice_at_best"


def test_verdicts_per_metric_show_which_answers_change_with_the_metric():
    verdict = build_verdict(study({"bce": 0.0, "bce_dice": 0.1}), SETTINGS)
    by_metric = verdict["verdicts_by_metric"]["bce_dice"]
    assert set(by_metric) == {
        "pixel_accuracy", "dice_per_image", "dice_tumour_slices", "dice_per_patient", "iou",
        "hd95", "nsd",
    }  # fmt: skip
    primary = by_metric["dice_per_patient"]
    assert (primary["verdict"], primary["ci"]) == (verdict["verdict"], verdict["ci"])
    assert by_metric["dice_per_patient"]["verdict"] == "better"
    assert by_metric["pixel_accuracy"]["verdict"] == "equivalent"
    assert abs(by_metric["pixel_accuracy"]["mean_difference"]) < 1e-4
    text = metric_trust(verdict, n_models=6)
    assert "The verdict changes with the metric for: bce_dice" in text
    assert "pixel_accuracy equivalent" in text


def test_training_regime_reads_rising_curves():
    curves = pd.DataFrame(
        {
            "loss": ["bce"] * 4 + ["dice"] * 4,
            "seed": 0,
            "epoch": [1, 2, 3, 4] * 2,
            "val_dice": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.4, 0.3],
        }
    )
    assert training_regime(curves) == {
        "epochs_min": 4,
        "epochs_max": 4,
        "n_rising": 1,
        "n_models": 2,
    }


def test_size_terciles_use_the_same_slices_for_every_loss():
    per_image = pd.DataFrame(
        {
            "loss": ["a"] * 4 + ["b"] * 4,
            "seed": 0,
            "patient": ["P"] * 8,
            "slice": [1, 2, 3, 4] * 2,
            "gt_pixels": [0, 10, 50, 200] * 2,
            "dice": [1.0, 0.1, 0.5, 0.9, 1.0, 0.2, 0.6, 0.8],
        }
    )
    table = size_terciles(per_image).set_index(["loss", "tercile"])["dice"]
    assert table[("a", "small")] == 0.1 and table[("b", "large")] == 0.8


def test_the_report_reads_the_data_card_prepare_wrote(tiny_prepared, tmp_path):
    with pytest.raises(SeglossError, match=r"no data card: run the prepare stage"):
        card.read_tables(tmp_path)
    card.write_tables(tiny_prepared)
    tables = card.read_tables(tiny_prepared)
    assert list(tables["imbalance"]["split"]) == ["train", "val", "test"]
    background = tables["background"].iloc[0]
    assert background["Dice pooled"] == 0 and background["pixel accuracy (per slice)"] > 0.9


def test_report_before_evaluate_is_one_error_naming_the_missing_table(tmp_path):
    with pytest.raises(SeglossError, match=r"per_image\.csv not found: run the evaluate stage"):
        Tables.read(tmp_path)


def factorial_evaluation(tmp: Path, prepared: Path, cells: dict[str, tuple[str, ...]]) -> Path:
    """Untrained tiny models of three seeds per (sampling level, loss), evaluated with the
    factor; the metrics folder."""
    torch.set_num_threads(1)
    meta = load_meta(prepared)
    for level, losses in cells.items():
        for loss, seed in itertools.product(losses, range(3)):
            write_checkpoint(tmp / "models" / f"sampling_{level}", loss, seed, meta)
    metrics_dir = tmp / "reports" / "metrics"
    evaluate(
        prepared, tmp / "models", tmp / "predictions", metrics_dir, tmp / "plots", EVAL_CFG,
        factor="train.sampling",
    )  # fmt: skip
    card.write_tables(prepared)
    return metrics_dir


def test_a_second_factor_is_compared_per_level_and_as_an_interaction(tiny_prepared, tmp_path):
    both = ("bce", "bce_dice")
    metrics_dir = factorial_evaluation(
        tmp_path, tiny_prepared, {"uniform": both, "foreground": both}
    )
    per_patient = pd.read_csv(metrics_dir / "per_patient.csv")
    assert list(per_patient.columns[:4]) == ["sampling", "loss", "seed", "fold"]
    summary = json.loads((metrics_dir / "summary.json").read_text())
    assert sorted(summary) == ["sampling=foreground", "sampling=uniform"]
    assert sorted(summary["sampling=uniform"]) == ["bce", "bce_dice"]
    assert sorted(p.name for p in (tmp_path / "predictions").iterdir())[0] == (
        "foreground_bce_dice_seed0.npz"
    )
    factor = Factor("train.sampling", "foreground")
    report = build_report(
        tiny_prepared, tmp_path / "predictions", metrics_dir, tmp_path / "reports", SETTINGS,
        factor=factor,
    )  # fmt: skip
    verdict = json.loads(report.paths["verdict"].read_text())
    result = verdict["interaction"]
    assert result["factor"] == "train.sampling" and result["levels"] == ["uniform", "foreground"]
    edge = {}
    for level in result["levels"]:
        means = per_patient[per_patient["sampling"] == level].groupby("loss")["dice"].mean()
        edge[level] = means["bce_dice"] - means["bce"]
        assert result["per_level"][level]["mean_difference"] == pytest.approx(edge[level])
        assert result["per_level"][level]["verdict"] in VERDICTS
        assert result["per_level"][level]["collapse"]["bce"]["models"] == 3
    assert result["difference"] == pytest.approx(edge["uniform"] - edge["foreground"])
    assert result["verdict"] in VERDICTS
    # the main sections: the reference level only
    assert verdict["mean_difference"] == pytest.approx(edge["foreground"])
    assert verdict["collapse"]["bce"]["models"] == 3
    markdown = report.paths["report_md"].read_text()
    assert "7. A second factor: train.sampling" in markdown and "8. Files" in markdown
    assert "sampling=foreground arm" in verdict["headline"]


def test_a_factor_sweep_missing_a_cell_is_one_error_and_writes_no_report(tiny_prepared, tmp_path):
    metrics_dir = factorial_evaluation(
        tmp_path, tiny_prepared, {"uniform": ("bce_dice",), "foreground": ("bce", "bce_dice")}
    )
    with pytest.raises(
        SeglossError, match=r"cannot be paired: no models for sampling=uniform x loss=bce$"
    ):
        build_report(
            tiny_prepared, tmp_path / "predictions", metrics_dir, tmp_path / "reports", SETTINGS,
            factor=Factor("train.sampling", "foreground"),
        )  # fmt: skip
    assert not (tmp_path / "reports" / "verdict.json").exists()
    assert not (tmp_path / "reports" / "report.md").exists()
