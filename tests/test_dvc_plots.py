"""`dvc plots show` draws one line per loss from the evaluation's tidy CSVs: a loss that is not
in the default sweep shows up without editing dvc.yaml."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from segloss.evaluation import write_plot_tables

DVC = Path(__file__).resolve().parents[1] / ".venv" / "bin" / "dvc"
LOSSES = ["bce", "dice", "bce_dice", "focal"]  # focal: outside the default sweep


def _tables() -> tuple[pd.DataFrame, pd.DataFrame]:
    """learning_curves.csv and calibration.csv as the evaluation writes them: 4 losses x 2 seeds."""
    curves, bins = [], []
    for i, loss in enumerate(LOSSES):
        for seed in (0, 1):
            ids = {"loss": loss, "seed": seed}
            curves.append(
                pd.DataFrame(
                    {"epoch": [1, 2, 3], "val_dice": [0.1 * i, 0.2 * i + seed / 100, 0.3 * i]}
                ).assign(**ids)
            )
            bins.append(
                pd.DataFrame(
                    {
                        "bin": [0, 1],
                        "lower": [0.0, 0.5],
                        "upper": [0.5, 1.0],
                        "count": [90, 10],
                        "mean_prob": [0.1, 0.8],
                        "frac_positive": [0.05, 0.7],
                    }
                ).assign(**ids)
            )
    return pd.concat(curves, ignore_index=True), pd.concat(bins, ignore_index=True)


def test_tidy_plot_tables_have_one_series_per_loss(tmp_path):
    write_plot_tables(tmp_path / "plots", *_tables())
    curves = pd.read_csv(tmp_path / "plots" / "learning_curves.csv")
    assert list(curves.columns) == ["loss", "epoch", "val_dice"]
    assert sorted(curves["loss"].unique()) == sorted(LOSSES)
    # mean over the two seeds
    dice = curves.query("loss == 'dice' and epoch == 2")["val_dice"].item()
    assert dice == pytest.approx(0.2 + 0.005)
    reliability = pd.read_csv(tmp_path / "plots" / "reliability.csv")
    assert list(reliability.columns) == ["loss", "mean_prob", "frac_positive", "count"]
    assert sorted(reliability["loss"].unique()) == sorted(LOSSES)


@pytest.mark.slow
def test_dvc_plots_show_draws_every_loss(repo_root, tmp_path):
    if not DVC.is_file():
        pytest.skip("needs the project's .venv with dvc")
    root = tmp_path / "repo"
    root.mkdir()
    shutil.copy(repo_root / "dvc.yaml", root / "dvc.yaml")
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run([DVC, "init", "-q"], cwd=root, check=True)
    (root / ".dvc" / "plots").mkdir()
    shutil.copy(repo_root / ".dvc" / "plots" / "by_loss.json", root / ".dvc" / "plots")
    write_plot_tables(root / "reports" / "plots", *_tables())
    out = subprocess.run(
        [DVC, "plots", "show", "--json"], cwd=root, capture_output=True, text=True, check=True
    )
    plots = json.loads(out.stdout)["data"]
    assert set(plots) == {"learning_curves", "reliability"}
    for name, x in (("learning_curves", "epoch"), ("reliability", "mean_prob")):
        (plot,) = plots[name]
        content = plot["content"]
        assert content["encoding"]["color"]["field"] == "loss"
        assert content["encoding"]["x"]["field"] == x
        assert sorted({row["loss"] for row in content["data"]["values"]}) == sorted(LOSSES)
