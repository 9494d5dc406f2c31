"""The evaluate stage: score every trained model, then write the stage's files.

:func:`score_models` predicts and scores each model (writing its predicted masks) and returns
the tables with what each model's checkpoint says about it; :func:`write_outputs` writes the
tables. Nothing here logs to MLflow: ``pipelines/evaluate.py`` logs the returned results.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from segloss import scoring, stacks
from segloss.config import EvalConfig
from segloss.data.prepared import load_meta, n_folds
from segloss.evaluation.checkpoints import Checkpoint, Loaded, find_checkpoints, load_models
from segloss.evaluation.inference import FoldData, predict
from segloss.evaluation.outputs import join_tables, save_predictions, write_tables
from segloss.evaluation.summary import summary_row
from segloss.evaluation.tables import model_tables
from segloss.fingerprint import factor_setting
from segloss.io import atomic_path
from segloss.losses import loss_variant
from segloss.models import resolve_device


@dataclass(frozen=True)
class ModelResult:
    """One evaluated model: its tables, its ``per_model.csv`` row and test summary."""

    checkpoint: Checkpoint
    state: dict[str, object]  # the checkpoint's dict without the weights (run ids, data, ...)
    tables: dict[str, pd.DataFrame]  # per_image, per_patient, thresholds, calibration, ...
    per_model: dict[str, object]
    summary: dict[str, float]


@dataclass(frozen=True)
class Evaluation:
    """Every model's result, with the prepared data's ``meta`` and distance ``units``."""

    models: list[ModelResult]
    meta: dict[str, object]
    units: dict[str, object]
    predictions: Path


def _history(path: Path) -> pd.DataFrame:
    history = path.parent / "history.csv"
    return pd.read_csv(history) if history.is_file() else pd.DataFrame()


def _score_model(
    loaded: Loaded,
    data: FoldData,
    settings: EvalConfig,
    units: Mapping,
    device: torch.device,
    pred_dir: Path,
    factor: str | None,
) -> ModelResult:
    """Predict, upsample to the source size, save the masks and compute every table."""
    ckpt, state = loaded.checkpoint, loaded.state
    ids = {"loss": ckpt.loss, "seed": ckpt.seed, "fold": 0 if ckpt.fold is None else ckpt.fold}
    if factor is not None:
        ids = {factor: ckpt.level} | ids
    probs = predict(loaded.model, data, settings.batch_size, device)
    masks = stacks.apply(lambda p: p >= settings.threshold, probs.test)
    save_predictions(pred_dir, ckpt.name, masks, data.test)
    scored = model_tables(masks, probs, data, settings, units, ids)
    summary = summary_row(
        scored.per_image, scored.per_patient, units, scored.ece, scored.best_threshold
    )
    history = _history(ckpt.path)
    tables = {
        "per_image": scored.per_image,
        "per_patient": scored.per_patient,
        "thresholds": scored.thresholds,
        "calibration": scored.calibration,
        "learning_curves": history.assign(**ids),
    }
    per_model = {
        **ids,
        "loss_variant": loss_variant(loaded.settings.loss),
        "threshold": settings.threshold,
        "epochs": len(history),
        "best_epoch": state.get("best_epoch"),
        "best_val_dice": state.get("best_val_dice"),
        # The learning rate it was trained with: the report says whether it was shared.
        "lr": loaded.settings.train.lr,
        "mlflow_run_id": state.get("mlflow_run_id"),
        "mlflow_parent_run_id": state.get("mlflow_parent_run_id"),
        **summary,
    }
    return ModelResult(ckpt, state, tables, per_model, summary)


def score_models(
    prepared_dir: str | os.PathLike,
    models_dir: str | os.PathLike,
    predictions_dir: str | os.PathLike,
    settings: EvalConfig,
    factor: str | None = None,
) -> Evaluation:
    """Score every checkpoint under ``models_dir``; write the predicted masks.

    Every checkpoint is checked against the prepared data before any prediction. With
    cross-validated data only ``<loss>/seed<k>/fold<f>/model.pt`` are evaluated, each on its
    fold's test patients. ``factor``: the config's second factor (``train.sampling``); its
    levels' models are found under ``<setting>_<value>/`` and every table gets a column named
    by the setting (``sampling``).
    """
    setting = None if factor is None else factor_setting(factor)
    meta = load_meta(prepared_dir)
    units = scoring.units(meta, settings.nsd_tolerance)
    checkpoints = find_checkpoints(models_dir, folds=n_folds(meta) >= 2, factor=setting)
    torch.set_num_threads(settings.num_threads)
    device = resolve_device(settings.device)
    loaded = load_models(checkpoints, meta, device)
    folds: dict[int | None, FoldData] = {}
    results = []
    with atomic_path(predictions_dir) as pred_dir:
        pred_dir.mkdir()
        for item in loaded:
            fold = item.checkpoint.fold
            if fold not in folds:
                folds = {fold: FoldData.load(prepared_dir, fold)}  # one fold in memory
            results.append(
                _score_model(item, folds[fold], settings, units, device, pred_dir, setting)
            )
    return Evaluation(results, meta, units, Path(predictions_dir))


def write_outputs(
    evaluation: Evaluation, metrics_dir: str | os.PathLike, plots_dir: str | os.PathLike
) -> dict[str, Path]:
    """Write every table, ``summary.json`` and the plot tables; return the paths by name
    (``predictions``: the folder :func:`score_models` wrote)."""
    tables = join_tables(
        [m.tables for m in evaluation.models], [m.per_model for m in evaluation.models]
    )
    paths = write_tables(tables, evaluation.units, Path(metrics_dir), Path(plots_dir))
    return paths | {"predictions": evaluation.predictions}


def evaluate(
    prepared_dir: str | os.PathLike,
    models_dir: str | os.PathLike,
    predictions_dir: str | os.PathLike,
    metrics_dir: str | os.PathLike,
    plots_dir: str | os.PathLike,
    settings: EvalConfig,
    factor: str | None = None,
) -> dict[str, Path]:
    """:func:`score_models` then :func:`write_outputs`, for callers that log nothing."""
    evaluation = score_models(prepared_dir, models_dir, predictions_dir, settings, factor)
    return write_outputs(evaluation, metrics_dir, plots_dir)
