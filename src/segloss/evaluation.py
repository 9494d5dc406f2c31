"""Evaluate every trained model on the prepared test split; write the tables the report reads.

Middle floor: knows of config mappings and the paths it is given, not of Hydra or DVC.
For each ``models/<loss>/seed<k>/model.pt`` it predicts the test split, binarises at the
configured threshold and scores every slice with :func:`segloss.metrics.per_image`. It also
predicts the validation split to find the threshold that is best there (reported next to the
fixed one, never used for the verdict) and bins the test probabilities for calibration.

Outputs (docs/architecture.md, "Evaluation outputs"), each written atomically:

* ``predictions/<loss>_seed<k>.npz``: ``masks`` bool (N,H,W), ``patient``, ``slice``
* ``<metrics>/per_image.csv``: ``loss,seed,patient,slice`` + every ``per_image`` column
* ``<metrics>/per_patient.csv``: ``loss,seed`` + every ``per_patient`` column
* ``<metrics>/per_model.csv``: one row per model: training facts and test summary metrics
* ``<metrics>/summary.json``: per loss, the mean over seeds of ``per_model``'s metrics
* ``<metrics>/thresholds.csv``: per-patient Dice per threshold on val and test
* ``<metrics>/calibration.csv``: reliability-diagram bins over test pixels
* ``<metrics>/learning_curves.csv``: every ``history.csv`` with ``loss,seed`` in front
* ``<plots>/learning_curves/<loss>.csv``, ``<plots>/reliability/<loss>.csv``: per-loss
  series for ``dvc plots show`` (one file per loss, as DVC draws one line per file)
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from segloss import metrics
from segloss.data.prepared import PreparedSplit, load_meta, load_split
from segloss.errors import ConfigError, SeglossError
from segloss.io import atomic_path, write_csv, write_json
from segloss.models import load_checkpoint, preprocess, resolve_device

ID_COLUMNS = ["loss", "seed", "patient", "slice"]
_SEED_DIR = re.compile(r"seed(\d+)")

# Summary metrics of one model on the test split; summary.json holds their mean over seeds.
SUMMARY_METRICS = (
    "dice_per_image",
    "dice_tumour_slices",
    "iou",
    "pixel_accuracy",
    "dice_per_patient",
    "iou_per_patient",
    "dice_pooled",
    "hd95",
    "nsd",
    "fp_rate_empty",
    "ece",
    "best_threshold",
    "dice_per_patient_at_best",
)


@dataclass(frozen=True)
class EvalSettings:
    """The ``eval`` config group, validated before any model is loaded."""

    threshold: float = 0.5
    batch_size: int = 64
    device: str = "auto"
    num_threads: int = 2
    thresholds: tuple[float, ...] = tuple(np.round(np.arange(0.05, 0.951, 0.05), 2))
    calibration_bins: int = 10

    @classmethod
    def from_mapping(cls, cfg: Mapping) -> EvalSettings:
        """Build from ``cfg.eval``; a ``threshold_grid`` of start/stop/step becomes the grid."""
        grid = cfg.get("threshold_grid")
        thresholds = cls.thresholds
        if grid is not None:
            start, stop, step = (float(grid[k]) for k in ("start", "stop", "step"))
            if not 0.0 < start <= stop < 1.0 or step <= 0:
                raise ConfigError(
                    f"eval.threshold_grid must satisfy 0 < start <= stop < 1 and step > 0, "
                    f"got start={start} stop={stop} step={step}"
                )
            thresholds = tuple(np.round(np.arange(start, stop + step / 2, step), 6))
        settings = cls(
            threshold=float(cfg.get("threshold", cls.threshold)),
            batch_size=int(cfg.get("batch_size", cls.batch_size)),
            device=str(cfg.get("device", cls.device)),
            num_threads=int(cfg.get("num_threads", cls.num_threads)),
            thresholds=thresholds,
            calibration_bins=int(cfg.get("calibration_bins", cls.calibration_bins)),
        )
        if not 0.0 < settings.threshold < 1.0:
            raise ConfigError(f"eval.threshold must be in (0, 1), got {settings.threshold}")
        for name in ("batch_size", "num_threads", "calibration_bins"):
            if getattr(settings, name) < 1:
                raise ConfigError(f"eval.{name} must be >= 1, got {getattr(settings, name)}")
        return settings


@dataclass(frozen=True)
class Checkpoint:
    """One trained model's place in the sweep."""

    loss: str
    seed: int
    path: Path

    @property
    def name(self) -> str:
        return f"{self.loss}_seed{self.seed}"


def find_checkpoints(models_dir: str | os.PathLike) -> list[Checkpoint]:
    """Every ``<models_dir>/<loss>/seed<k>/model.pt``, sorted; none at all is an error."""
    root = Path(models_dir)
    found = []
    for path in sorted(root.glob("*/seed*/model.pt")):
        match = _SEED_DIR.fullmatch(path.parent.name)
        if match:
            found.append(Checkpoint(path.parent.parent.name, int(match.group(1)), path))
    if not found:
        raise SeglossError(
            f"no trained models in {root}/ (expected {root}/<loss>/seed<k>/model.pt): "
            "run the train stage first (`dvc repro train` or `python pipelines/train.py -m`)"
        )
    return found


def check_matches_data(checkpoint_data: Mapping, meta: Mapping, model_path: Path) -> None:
    """Raise if a model was trained on other data than the prepared folder holds now."""
    differences = []
    for key in ("image_size", "data_hash"):
        if checkpoint_data.get(key) != meta.get(key):
            differences.append(
                f"{key} {checkpoint_data.get(key)!r} (model) vs {meta.get(key)!r} (prepared data)"
            )
    model_splits, data_splits = checkpoint_data.get("splits") or {}, meta.get("splits") or {}
    for split in sorted(set(model_splits) | set(data_splits)):
        if sorted(model_splits.get(split, [])) != sorted(data_splits.get(split, [])):
            differences.append(f"the {split} split's patients differ")
    if differences:
        raise SeglossError(
            f"{model_path} does not match the prepared data: {'; '.join(differences)}; "
            "retrain it on this data (`dvc repro train`) or prepare the data it was trained on"
        )


def predict_probabilities(
    model: torch.nn.Module, images: np.ndarray, batch_size: int, device: torch.device
) -> np.ndarray:
    """Foreground probabilities (N,H,W) float32 for uint8 (N,H,W,3) images, batch by batch."""
    out = np.empty(images.shape[:3], dtype=np.float32)
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            batch = torch.from_numpy(
                np.array(images[start : start + batch_size])
            )  # copy off the mmap
            logits = model(preprocess(batch.to(device)))
            out[start : start + len(batch)] = torch.sigmoid(logits[:, 0]).float().cpu().numpy()
    return out


def score(masks: np.ndarray, split: PreparedSplit) -> pd.DataFrame:
    """``per_image`` of binary masks against a split, with ``patient`` and ``slice`` in front."""
    frame = metrics.per_image(masks, np.asarray(split.masks, dtype=bool))
    frame.insert(0, "patient", split.patients)
    frame.insert(1, "slice", split.slices)
    return frame


def dice_per_patient(frame: pd.DataFrame) -> float:
    """Mean over patients of the volume Dice (``per_patient``): the verdict's unit."""
    return float(metrics.per_patient(frame)["dice"].mean())


def patient_dice_at(probabilities: np.ndarray, split: PreparedSplit, t: float) -> pd.DataFrame:
    """Volume Dice per patient of the masks ``probabilities >= t`` (columns patient, dice).

    Only the confusion counts are needed (no surface distances), so this stays cheap.
    """
    target = np.asarray(split.masks, dtype=bool)
    counts = pd.DataFrame(metrics.confusion_counts(probabilities >= t, target))
    return metrics.per_patient(counts.assign(patient=split.patients))[["patient", "dice"]]


def threshold_curve(
    probabilities: np.ndarray, split: PreparedSplit, thresholds: tuple[float, ...]
) -> pd.DataFrame:
    """Per-patient Dice (mean over patients) of ``probabilities >= t`` for every ``t``."""
    rows = [(t, float(patient_dice_at(probabilities, split, t)["dice"].mean())) for t in thresholds]
    return pd.DataFrame(rows, columns=["threshold", "dice_per_patient"])


def calibration_table(probabilities: np.ndarray, target: np.ndarray, n_bins: int) -> pd.DataFrame:
    """Equal-width bins of foreground probability over all pixels: the reliability diagram.

    Per bin: pixel ``count``, mean predicted probability and the observed foreground fraction.
    """
    p = probabilities.ravel().astype(np.float64)
    y = np.asarray(target, dtype=bool).ravel()
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    index = np.clip(np.digitize(p, edges[1:-1]), 0, n_bins - 1)
    count = np.bincount(index, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_prob = np.bincount(index, weights=p, minlength=n_bins) / count
        frac_positive = np.bincount(index, weights=y, minlength=n_bins) / count
    return pd.DataFrame(
        {
            "bin": np.arange(n_bins),
            "lower": edges[:-1],
            "upper": edges[1:],
            "count": count,
            "mean_prob": mean_prob,
            "frac_positive": frac_positive,
        }
    )


def pool_calibration(table: pd.DataFrame) -> pd.DataFrame:
    """Merge the seeds' bins of each loss, weighting each seed's bin by its pixel count."""
    weighted = table.assign(
        prob_sum=table["mean_prob"].fillna(0) * table["count"],
        pos_sum=table["frac_positive"].fillna(0) * table["count"],
    )
    sums = weighted.groupby(["loss", "bin"], sort=False)[["count", "prob_sum", "pos_sum"]].sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        sums["mean_prob"] = sums["prob_sum"] / sums["count"]
        sums["frac_positive"] = sums["pos_sum"] / sums["count"]
    return sums.drop(columns=["prob_sum", "pos_sum"]).reset_index()


def expected_calibration_error(table: pd.DataFrame) -> float:
    """ECE: the pixel-weighted mean gap between predicted probability and observed frequency."""
    filled = table[table["count"] > 0]
    weights = filled["count"] / filled["count"].sum()
    return float((weights * (filled["mean_prob"] - filled["frac_positive"]).abs()).sum())


def summarise(
    frame: pd.DataFrame, ece: float, curve_val: pd.DataFrame, curve_test: pd.DataFrame
) -> dict[str, float]:
    """One model's test summary from its per-image frame and threshold curves."""
    best = curve_val.loc[curve_val["dice_per_patient"].idxmax(), "threshold"]
    at_best = curve_test.loc[np.isclose(curve_test["threshold"], best), "dice_per_patient"]
    return {
        "dice_per_image": metrics.mean_per_image(frame, "dice"),
        "dice_tumour_slices": metrics.mean_per_image(frame, "dice", tumour_only=True),
        "iou": metrics.mean_per_image(frame, "iou"),
        "pixel_accuracy": metrics.mean_per_image(frame, "pixel_accuracy"),
        "dice_per_patient": dice_per_patient(frame),
        "iou_per_patient": float(metrics.per_patient(frame)["iou"].mean()),
        "dice_pooled": float(metrics.pooled(frame)["dice"].iloc[0]),
        "hd95": metrics.mean_per_image(frame, "hd95"),
        "nsd": metrics.mean_per_image(frame, "nsd"),
        "fp_rate_empty": metrics.false_positive_rate(frame),
        "ece": ece,
        "best_threshold": float(best),
        "dice_per_patient_at_best": float(at_best.iloc[0]),
    }


def _history(path: Path) -> pd.DataFrame:
    history = path.parent / "history.csv"
    return pd.read_csv(history) if history.is_file() else pd.DataFrame()


def _evaluate_model(
    ckpt: Checkpoint,
    model: torch.nn.Module,
    state: Mapping,
    splits: Mapping[str, PreparedSplit],
    settings: EvalSettings,
    device: torch.device,
    pred_dir: Path,
) -> dict[str, pd.DataFrame | dict]:
    """Predict, save the masks and compute every table for one model."""
    test, val = splits["test"], splits["val"]
    ids = {"loss": ckpt.loss, "seed": ckpt.seed}
    prob_test = predict_probabilities(model, test.images, settings.batch_size, device)
    prob_val = predict_probabilities(model, val.images, settings.batch_size, device)
    masks = prob_test >= settings.threshold
    np.savez_compressed(
        pred_dir / f"{ckpt.name}.npz", masks=masks, patient=test.patients, slice=test.slices
    )
    frame = score(masks, test)
    curve_val = threshold_curve(prob_val, val, settings.thresholds)
    curve_test = threshold_curve(prob_test, test, settings.thresholds)
    bins = calibration_table(prob_test, test.masks, settings.calibration_bins)
    history = _history(ckpt.path)
    summary = summarise(frame, expected_calibration_error(bins), curve_val, curve_test)
    return {
        "per_image": frame.assign(**ids)[ID_COLUMNS + list(frame.columns[2:])],
        # dice_at_best: at the threshold that was best on the validation split (a sensitivity
        # analysis of the verdict; the headline uses the fixed threshold).
        "per_patient": metrics.per_patient(frame)
        .merge(
            patient_dice_at(prob_test, test, summary["best_threshold"]).rename(
                columns={"dice": "dice_at_best"}
            ),
            on="patient",
        )
        .assign(**ids),
        "thresholds": pd.concat(
            [curve_val.assign(split="val"), curve_test.assign(split="test")]
        ).assign(**ids),
        "calibration": bins.assign(**ids),
        "learning_curves": history.assign(**ids),
        "summary": summary,
        "per_model": {
            **ids,
            "threshold": settings.threshold,
            "epochs": len(history),
            "best_epoch": state.get("best_epoch"),
            "best_val_dice": state.get("best_val_dice"),
            # The learning rate it was trained with: the report says whether it was shared.
            "lr": state.get("config", {}).get("train", {}).get("lr"),
            "mlflow_run_id": state.get("mlflow_run_id"),
            "mlflow_parent_run_id": state.get("mlflow_parent_run_id"),
            **summary,
        },
    }


def evaluate(
    prepared_dir: str | os.PathLike,
    models_dir: str | os.PathLike,
    predictions_dir: str | os.PathLike,
    metrics_dir: str | os.PathLike,
    plots_dir: str | os.PathLike,
    eval_cfg: Mapping,
    tracking_uri: str | None = None,
) -> dict[str, Path]:
    """Evaluate every checkpoint under ``models_dir``; return the written paths by name.

    Every checkpoint is checked against the prepared data before any prediction. Test metrics
    go to each model's MLflow run (``mlflow_run_id`` in its checkpoint) when ``tracking_uri``
    is given; a checkpoint without a run id is evaluated all the same, with a warning.
    """
    settings = EvalSettings.from_mapping(eval_cfg)
    meta = load_meta(prepared_dir)
    checkpoints = find_checkpoints(models_dir)
    splits = {name: load_split(prepared_dir, name) for name in ("test", "val")}
    torch.set_num_threads(settings.num_threads)
    device = resolve_device(settings.device)
    loaded = []
    for ckpt in checkpoints:
        model, state = load_checkpoint(ckpt.path, device=device)
        check_matches_data(state.get("data", {}), meta, ckpt.path)
        loaded.append((ckpt, model, state))

    results = []
    with atomic_path(predictions_dir) as pred_dir:
        pred_dir.mkdir()
        for ckpt, model, state in loaded:
            result = _evaluate_model(ckpt, model, state, splits, settings, device, pred_dir)
            _log_test_metrics(tracking_uri, state.get("mlflow_run_id"), result["summary"], ckpt)
            results.append(result)
    paths = _write_tables(Path(metrics_dir), Path(plots_dir), results)
    return paths | {"predictions": Path(predictions_dir)}


def _log_test_metrics(
    tracking_uri: str | None, run_id: str | None, summary: Mapping[str, float], ckpt: Checkpoint
) -> None:
    """Log ``test_<metric>`` to the model's MLflow run, or warn why not."""
    if tracking_uri is None:
        return
    if not run_id:
        warnings.warn(
            f"{ckpt.path} has no mlflow_run_id: its test metrics are not logged to MLflow",
            stacklevel=2,
        )
        return
    from segloss import tracking  # imports mlflow: only when something is logged

    finite = {f"test_{k}": float(v) for k, v in summary.items() if np.isfinite(v)}
    tracking.log_metrics(tracking_uri, run_id, finite)


def _front(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """The same frame with ``columns`` moved to the front."""
    return frame[columns + [c for c in frame.columns if c not in columns]]


def _write_tables(metrics_dir: Path, plots_dir: Path, results: list[dict]) -> dict[str, Path]:
    """Concatenate the per-model tables and write every file; return their paths."""
    tables = {
        name: _front(pd.concat([r[name] for r in results], ignore_index=True), front)
        for name, front in (
            ("per_image", ID_COLUMNS),
            ("per_patient", ["loss", "seed"]),
            ("thresholds", ["loss", "seed", "split"]),
            ("calibration", ["loss", "seed"]),
            ("learning_curves", ["loss", "seed"]),
        )
    }
    tables["per_model"] = pd.DataFrame([r["per_model"] for r in results])
    paths = {}
    for name, frame in tables.items():
        paths[name] = metrics_dir / f"{name}.csv"
        write_csv(frame, paths[name])

    summary = tables["per_model"].groupby("loss", sort=False)[list(SUMMARY_METRICS)].mean()
    summary["n_seeds"] = tables["per_model"].groupby("loss", sort=False)["seed"].nunique()
    paths["summary"] = metrics_dir / "summary.json"
    write_json(summary.to_dict(orient="index"), paths["summary"])

    paths["plots"] = plots_dir
    with atomic_path(plots_dir) as tmp:
        for kind in ("learning_curves", "reliability"):
            (tmp / kind).mkdir(parents=True)
        curves = tables["learning_curves"]
        if "val_dice" in curves:
            mean_curves = curves.groupby(["loss", "epoch"], sort=False)["val_dice"].mean()
            for loss, curve in mean_curves.reset_index().groupby("loss", sort=False):
                curve[["epoch", "val_dice"]].to_csv(
                    tmp / "learning_curves" / f"{loss}.csv", index=False
                )
        reliability = pool_calibration(tables["calibration"])
        for loss, bins in reliability.groupby("loss", sort=False):
            bins[["mean_prob", "frac_positive", "count"]].dropna().to_csv(
                tmp / "reliability" / f"{loss}.csv", index=False
            )
    return paths
