"""Evaluation on the tiny prepared set with untrained checkpoints in the documented format."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import settings

from segloss import metrics
from segloss.calibration import calibration_table, expected_calibration_error
from segloss.config import plain
from segloss.data.prepared import load_meta, load_split
from segloss.errors import SeglossError
from segloss.evaluation import evaluate, score_models, write_outputs
from segloss.evaluation.tables import ID_COLUMNS
from segloss.models import build_model
from segloss.scoring import SUMMARY_METRICS

REPO = Path(__file__).resolve().parents[1]

TINY_OVERRIDES = [
    "model.encoder_depth=3",
    "model.decoder_channels=[16,8,4]",
    "eval.batch_size=8",
    "eval.num_threads=1",
    "eval.threshold_grid={start: 0.1, stop: 0.9, step: 0.2}",
    "eval.calibration_bins=5",
]
# The settings as the stages get them: a 3-level ResNet-18 U-Net evaluated in small batches.
_TINY = settings(*TINY_OVERRIDES)
TINY_MODEL = _TINY.model
EVAL_CFG = _TINY.eval


def write_checkpoint(models: Path, loss: str, seed: int, meta: dict, **data_overrides) -> Path:
    """An untrained model saved as the train stage saves one, with a two-epoch history."""
    torch.manual_seed(seed)
    folder = models / loss / f"seed{seed}"
    folder.mkdir(parents=True)
    data = {k: meta[k] for k in ("image_size", "data_hash", "splits", "source")}
    torch.save(
        {
            "state_dict": build_model(TINY_MODEL).state_dict(),
            # the settings as the train stage stores them
            "config": plain(settings(*TINY_OVERRIDES, f"loss={loss}", f"seed={seed}")),
            "data": data | data_overrides,
            "best_epoch": 2,
            "best_val_dice": 0.1,
            "mlflow_run_id": None,
            "mlflow_parent_run_id": None,
        },
        folder / "model.pt",
    )
    pd.DataFrame(
        {
            "epoch": [1, 2],
            "train_loss": [0.9, 0.8],
            "val_loss": [0.9, 0.85],
            "val_dice": [0.05, 0.1],
            "val_iou": [0.02, 0.05],
            "lr": [1e-3, 1e-3],
            "seconds": [1.0, 1.0],
        }
    ).to_csv(folder / "history.csv", index=False)
    return folder / "model.pt"


def run(tmp: Path, prepared: Path, **kwargs) -> dict[str, Path]:
    return evaluate(
        prepared,
        tmp / "models",
        tmp / "predictions",
        tmp / "reports" / "metrics",
        tmp / "reports" / "plots",
        EVAL_CFG,
        **kwargs,
    )


@pytest.fixture(scope="module")
def evaluated(tiny_prepared: Path, tmp_path_factory) -> tuple[Path, dict[str, Path]]:
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("eval")
    meta = load_meta(tiny_prepared)
    for loss in ("bce", "bce_dice"):
        write_checkpoint(tmp / "models", loss, 0, meta)
    return tmp, run(tmp, tiny_prepared)


def test_per_image_csv_matches_a_recomputation_from_the_predictions(evaluated, tiny_prepared):
    tmp, paths = evaluated
    table = pd.read_csv(paths["per_image"], dtype={"patient": str})
    # no pixel spacing in the tiny set: distances in native pixels, named so
    units = {"hd95": "hd95_px", "nsd": "nsd_2px"}
    assert list(table.columns) == ID_COLUMNS + [units.get(c, c) for c in metrics.COLUMNS]
    assert (table["fold"] == 0).all()
    test = load_split(tiny_prepared, "test")
    for (loss, seed), rows in table.groupby(["loss", "seed"]):
        saved = np.load(tmp / "predictions" / f"{loss}_seed{seed}.npz")
        assert saved["masks"].dtype == bool and saved["masks"].shape == test.masks.shape
        np.testing.assert_array_equal(saved["patient"], test.patients)
        np.testing.assert_array_equal(saved["slice"], test.slices)
        tolerance = EVAL_CFG.nsd_tolerance
        expected = metrics.per_image(saved["masks"], test.masks, nsd_tolerance=tolerance)
        expected = expected.rename(columns=units)
        pd.testing.assert_frame_equal(
            rows[list(expected.columns)].reset_index(drop=True), expected, check_dtype=False
        )


def test_summary_and_side_tables(evaluated):
    _, paths = evaluated
    summary = json.loads(paths["summary"].read_text())
    assert set(summary) == {"bce", "bce_dice"}
    names = {"hd95": "hd95_px", "nsd": "nsd_2px"}
    expected = {names.get(m, m) for m in SUMMARY_METRICS}
    assert set(summary["bce"]) == expected | {"n_seeds", "n_folds", "nsd_tolerance"}
    thresholds = pd.read_csv(paths["thresholds"])
    assert set(thresholds["split"]) == {"val", "test"}
    assert np.allclose(sorted(thresholds["threshold"].unique()), [0.1, 0.3, 0.5, 0.7, 0.9])
    calibration = pd.read_csv(paths["calibration"])
    assert (calibration.groupby(["loss", "seed"])["count"].sum() == 3 * 6 * 32 * 32).all()
    curves = pd.read_csv(paths["learning_curves"])
    assert list(curves.columns[:4]) == ["loss", "seed", "fold", "epoch"] and len(curves) == 4
    assert sorted(p.name for p in paths["plots"].iterdir()) == [
        "learning_curves.csv",
        "reliability.csv",
    ]
    plotted = pd.read_csv(paths["plots"] / "learning_curves.csv")
    assert sorted(plotted["loss"].unique()) == ["bce", "bce_dice"]


def test_calibration_of_a_calibrated_predictor_is_near_zero():
    rng = np.random.default_rng(0)
    probabilities = rng.uniform(size=(20, 32, 32)).astype(np.float32)
    target = rng.uniform(size=probabilities.shape) < probabilities
    table = calibration_table(probabilities, target, 10)
    assert expected_calibration_error(table) < 0.01
    overconfident = calibration_table(np.where(target, 1.0, 0.8), target, 10)
    assert expected_calibration_error(overconfident) > 0.3


def test_no_models_names_the_folder_and_the_train_stage(tiny_prepared, tmp_path):
    (tmp_path / "models").mkdir()
    with pytest.raises(SeglossError, match=r"no trained models in .*models.*train stage"):
        run(tmp_path, tiny_prepared)


def test_model_of_another_image_size_is_refused_before_any_output(tiny_prepared, tmp_path):
    meta = load_meta(tiny_prepared)
    write_checkpoint(tmp_path / "models", "bce", 0, meta)
    bad = write_checkpoint(tmp_path / "models", "dice", 0, meta, image_size=64)
    with pytest.raises(SeglossError, match=rf"{bad}.*image_size 64 \(model\) vs 32"):
        run(tmp_path, tiny_prepared)
    assert not (tmp_path / "predictions").exists()


def test_model_of_other_splits_is_refused(tiny_prepared, tmp_path):
    meta = load_meta(tiny_prepared)
    splits = meta["splits"] | {"test": ["P_OTHER"]}
    write_checkpoint(tmp_path / "models", "bce", 0, meta, splits=splits)
    with pytest.raises(SeglossError, match="test split's patients differ"):
        run(tmp_path, tiny_prepared)


def test_model_whose_stored_settings_do_not_fit_the_schema_is_refused(tiny_prepared, tmp_path):
    path = write_checkpoint(tmp_path / "models", "bce", 0, load_meta(tiny_prepared))
    state = torch.load(path, weights_only=False)
    state["config"]["train"]["epochz"] = 3  # a setting this version does not know
    torch.save(state, path)
    with pytest.raises(SeglossError) as caught:
        run(tmp_path, tiny_prepared)
    message = str(caught.value)
    assert message.startswith(f"{path}: its stored settings do not fit") and "epochz" in message
    assert "\n" not in message and not (tmp_path / "predictions").exists()


def _entry_point(name: str) -> ModuleType:
    """``pipelines/<name>.py`` as a module (its logging functions, without running Hydra)."""
    spec = importlib.util.spec_from_file_location(
        f"{name}_stage", REPO / "pipelines" / f"{name}.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_missing_mlflow_run_id_warns_and_still_evaluates(tiny_prepared, tmp_path):
    write_checkpoint(tmp_path / "models", "bce", 0, load_meta(tiny_prepared))
    evaluation = score_models(tiny_prepared, tmp_path / "models", tmp_path / "pred", EVAL_CFG)
    paths = write_outputs(evaluation, tmp_path / "metrics", tmp_path / "plots")
    assert paths["per_image"].is_file() and evaluation.models[0].summary["ece"] >= 0
    log_test_metrics = _entry_point("evaluate").log_test_metrics
    with pytest.warns(UserWarning, match="no mlflow_run_id"):
        log_test_metrics(f"sqlite:///{tmp_path}/mlflow.db", evaluation, str(tiny_prepared))


def test_evaluation_and_the_report_import_no_mlflow():
    """MLflow at the edges: only the entry points (and segloss.tracking) log."""
    code = (
        "import sys, segloss.evaluation, segloss.report; "
        "sys.exit(any(m.split('.')[0] == 'mlflow' or m.startswith('segloss.tracking') "
        "for m in sys.modules))"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
