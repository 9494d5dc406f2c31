"""The report on evaluation outputs of untrained tiny models: two losses, and one loss only."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from test_evaluation import EVAL_CFG, write_checkpoint

from segloss.data.prepared import load_meta
from segloss.evaluation import evaluate
from segloss.report import build_report
from segloss.report.tables import size_terciles, training_regime
from segloss.report.verdict import build_verdict

SETTINGS = {
    "baseline": "bce",
    "candidate": "bce_dice",
    "metric": "dice_per_patient",
    "alpha": 0.05,
    "n_boot": 200,
    "bootstrap_seed": 0,
    "overlay_count": 3,
    "dpi": 40,
}
N_FIGURES = 8


def evaluated_report(tmp: Path, prepared: Path, losses: tuple[str, ...]) -> dict[str, Path]:
    torch.set_num_threads(1)
    meta = load_meta(prepared)
    for loss in losses:
        write_checkpoint(tmp / "models", loss, 0, meta)
    metrics_dir = tmp / "reports" / "metrics"
    evaluate(prepared, tmp / "models", tmp / "predictions", metrics_dir, tmp / "plots", EVAL_CFG)
    return build_report(prepared, tmp / "predictions", metrics_dir, tmp / "reports", SETTINGS)


@pytest.mark.parametrize("losses", [("bce", "bce_dice"), ("bce",)], ids=["two", "one"])
def test_report_renders_every_section_and_figure(tiny_prepared, tmp_path, losses):
    paths = evaluated_report(tmp_path, tiny_prepared, losses)
    html = paths["report_html"].read_text()
    assert html.count('<img src="data:image/png;base64,') == N_FIGURES
    assert len(list(paths["figures"].glob("*.png"))) == N_FIGURES
    markdown = paths["report_md"].read_text()
    for section in ("1. Data card", "2. Every metric", "3. Figures", "4. Where", "5. The verdict"):
        assert section in markdown and section in html
    verdict = json.loads(paths["verdict"].read_text())
    assert verdict["n_pairs"] == 3 and verdict["n_seeds"] == 1
    if len(losses) == 1:
        assert verdict["verdict"] is None and verdict["comparisons"] == []
        assert "no comparison possible" in verdict["reason"]
        assert "No comparison possible" in markdown
    else:
        assert verdict["verdict"] in {"better", "no_difference", "worse"}
        assert len(verdict["ci95"]) == 2 and 0 <= verdict["p_value"] <= 1
        assert {c["metric"] for c in verdict["comparisons"]} == {"iou_per_patient", "hd95", "nsd"}
    assert verdict["headline"] in markdown


def scores(shift: float, n_patients: int = 12, seeds: int = 3) -> pd.DataFrame:
    """A per-patient table for two losses, the candidate ``shift`` above the baseline."""
    rng = np.random.default_rng(1)
    base = rng.uniform(0.4, 0.8, size=n_patients)
    rows = [
        (loss, seed, f"P{p}", base[p] + offset + rng.normal(0, 0.005))
        for loss, offset in (("bce", 0.0), ("bce_dice", shift))
        for seed in range(seeds)
        for p in range(n_patients)
    ]
    return pd.DataFrame(rows, columns=["loss", "seed", "patient", "dice"])


@pytest.mark.parametrize(("shift", "expected"), [(0.0, "no_difference"), (0.1, "better")])
def test_verdict_on_hand_made_scores(shift, expected):
    per_patient = scores(shift).assign(iou=lambda f: f["dice"] / 2)
    per_image = per_patient.assign(slice=1, hd95=1.0, nsd=1.0)
    verdict = build_verdict(per_image, per_patient, SETTINGS)
    assert verdict["verdict"] == expected
    assert verdict["n_pairs"] == 12 and verdict["n_seeds"] == 3
    if expected == "better":
        assert verdict["mean_difference"] == pytest.approx(0.1, abs=0.01)
        assert all(v > 0 for v in verdict["per_seed_differences"].values())


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
