"""The whole pipeline through `dvc repro` on a tiny config in a temporary copy of the repo."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from segloss import metrics
from segloss.data.prepared import load_tested

REPO = Path(__file__).resolve().parents[1]
LOSSES = ("bce", "bce_dice")
N_FIGURES = 10  # with two losses: the paired figure, no critical-difference diagram
pytestmark = pytest.mark.slow

TINY = {
    "conf/data/synthetic.yaml": {
        "n_patients": 12,
        "n_slices": [6, 8],
        "tiff_size": 64,
        "image_size": 32,
    },
    "conf/train/default.yaml": {
        "epochs": 1,
        "batch_size": 8,
        "num_threads": 1,
    },
    "conf/eval/default.yaml": {"num_threads": 1, "batch_size": 32},
    "conf/report/default.yaml": {"overlay_count": 3, "dpi": 40},
    "conf/config.yaml": {"hydra": {"sweeper": {"params": {"loss": ",".join(LOSSES), "seed": "0"}}}},
}


def _set(path: Path, values: dict) -> None:
    """Merge ``values`` into a YAML config file of the copy (comments are lost; fine here)."""
    cfg = OmegaConf.merge(OmegaConf.load(path), values)
    path.write_text(OmegaConf.to_yaml(cfg))


def _run(cmd: list[str], cwd: Path, env: dict) -> str:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stdout[-3000:]}\n{done.stderr}"
    return done.stdout


def tiny_copy(base: Path) -> tuple[Path, dict]:
    """A git repository at ``base/repo``: the working tree (tracked + untracked, not
    ignored), shrunk to the tiny config; and the environment to run DVC in it."""
    root = base / "repo"
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\n")
    for name in filter(None, listed):
        if (REPO / name).is_file():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, root / name)
    for name, values in TINY.items():
        _set(root / name, values)
    _set(
        root / "conf/tracking/mlflow.yaml",
        {"uri": f"sqlite:///{root.parent}/mlflow.db", "log_model": False},
    )
    env = os.environ | {
        "PATH": f"{REPO / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(root / "src"),  # the copy's code, not the editable install's
        "OMP_NUM_THREADS": "1",
        "DVC_NO_ANALYTICS": "1",
    }
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com"]
    _run(["git", "init", "-q"], root, env)
    _run(["git", "add", "-A"], root, env)
    _run([*git, "commit", "-qm", "tiny copy"], root, env)
    return root, env


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> tuple[Path, dict]:
    """Copy the working tree, shrink it, run `dvc repro`."""
    if not (REPO / ".venv" / "bin" / "dvc").is_file():
        pytest.skip("needs the project's .venv (make run or make test creates it)")
    root, env = tiny_copy(tmp_path_factory.mktemp("pipeline"))
    _run(["dvc", "repro"], root, env)
    return root, env


def test_every_output_exists(pipeline):
    root, _ = pipeline
    expected = [
        "data/prepared/meta.json",
        "reports/data_card.md",
        *(f"models/{loss}/seed0/model.pt" for loss in LOSSES),
        *(f"models/{loss}/seed0/history.csv" for loss in LOSSES),
        *(f"predictions/{loss}_seed0.npz" for loss in LOSSES),
        *(
            f"reports/metrics/{name}"
            for name in (
                "per_image.csv",
                "per_patient.csv",
                "per_model.csv",
                "thresholds.csv",
                "calibration.csv",
                "learning_curves.csv",
                "summary.json",
            )
        ),
        "reports/plots/learning_curves.csv",  # tidy: one table, a `loss` column
        "reports/plots/reliability.csv",
        "reports/report.md",
        "reports/report.html",
        "reports/verdict.json",
    ]
    missing = [name for name in expected if not (root / name).is_file()]
    assert not missing, f"missing outputs: {missing}"
    assert len(list((root / "reports/figures").glob("*.png"))) == N_FIGURES


def test_per_image_csv_agrees_with_the_saved_predictions(pipeline):
    root, _ = pipeline
    table = pd.read_csv(root / "reports/metrics/per_image.csv", dtype={"patient": str})
    test, native = load_tested(root / "data/prepared")  # scored at the source resolution
    # Counts and overlap scores do not depend on the distance unit; hd95/nsd are renamed.
    columns = [c for c in metrics.COLUMNS if c not in ("hd95", "nsd")]
    for loss in LOSSES:
        saved = np.load(root / f"predictions/{loss}_seed0.npz")
        np.testing.assert_array_equal(saved["patient"], test.patients)
        np.testing.assert_array_equal(saved["slice"], test.slices)
        assert saved["masks"].shape == native.shape
        recomputed = metrics.per_image(saved["masks"], native, nsd_tolerance=2.0)[columns]
        rows = table.query("loss == @loss and seed == 0").reset_index(drop=True)
        np.testing.assert_array_equal(rows["patient"], test.patients)
        pd.testing.assert_frame_equal(rows[columns], recomputed, check_dtype=False, atol=1e-9)


def test_verdict_is_well_formed_and_agrees_with_per_image_csv(pipeline):
    root, _ = pipeline
    verdict = json.loads((root / "reports/verdict.json").read_text())
    assert (verdict["baseline"], verdict["candidate"]) == ("bce", "bce_dice")
    assert verdict["metric"] == "dice_per_patient"
    assert verdict["verdict"] in {"better", "worse", "equivalent", "inconclusive"}
    assert 0 <= verdict["p_value"] <= 1 and len(verdict["ci"]) == 2
    assert verdict["n_seeds"] == 1 and isinstance(verdict["comparisons"], list)

    table = pd.read_csv(root / "reports/metrics/per_image.csv", dtype={"patient": str})
    dice = metrics.per_patient(table).pivot(index="patient", columns="loss", values="dice")
    assert verdict["n_pairs"] == len(dice) == table["patient"].nunique()
    expected = (dice["bce_dice"] - dice["bce"]).mean()
    assert verdict["mean_difference"] == pytest.approx(expected, abs=1e-9)


def test_html_report_embeds_every_figure(pipeline):
    root, _ = pipeline
    html = (root / "reports/report.html").read_text()
    assert html.count('<img src="data:image/png;base64,') == N_FIGURES
    assert 'src="figures/' not in html  # nothing outside the file


def test_dvc_metrics_show_lists_every_loss(pipeline):
    root, env = pipeline
    shown = json.loads(_run(["dvc", "metrics", "show", "--json"], root, env))
    workspace = next(iter(shown.values()))  # keyed "workspace" or "" by DVC version
    summary = workspace["data"]["reports/metrics/summary.json"]["data"]
    assert set(summary) == set(LOSSES)


def test_second_repro_does_nothing_and_a_report_setting_reruns_only_report(pipeline):
    root, env = pipeline
    _run(["dvc", "repro"], root, env)
    assert json.loads(_run(["dvc", "status", "--json"], root, env)) == {}
    _set(root / "conf/report/default.yaml", {"alpha": 0.01})
    assert set(json.loads(_run(["dvc", "status", "--json"], root, env))) == {"report"}
