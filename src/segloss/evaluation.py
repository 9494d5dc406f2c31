"""Evaluate every trained model on the prepared test split; write the tables the report reads.

Middle floor: knows of config mappings and the paths it is given, not of Hydra or DVC.
For each ``models/<loss>/seed<k>/model.pt`` (``.../fold<f>/model.pt`` with cross-validation:
each model predicts its own fold's test patients, so the tables pool the out-of-fold
predictions of all patients) it predicts the test split, upsamples the probabilities to the
source resolution (:mod:`segloss.scoring`), binarises at the configured threshold and scores
every slice against the original masks with :func:`segloss.metrics.per_image`. It also
predicts the validation split to find the threshold that is best there (reported next to the
fixed one, never used for the verdict) and bins the test probabilities for calibration.

Outputs (docs/architecture.md, "Evaluation outputs"), each written atomically:

* ``predictions/<loss>_seed<k>[_fold<f>].npz``: native ``masks`` bool (N,H0,W0), ``patient``,
  ``slice``
* ``<metrics>/per_image.csv``: ``loss,seed,fold,patient,slice`` + every ``per_image`` column
  (counts at native resolution; ``hd95_<unit>``, ``nsd_<tol><unit>`` per slice)
* ``<metrics>/per_patient.csv``: ``loss,seed,fold`` + every ``per_patient`` column, the
  volume ``hd95_<unit>``/``nsd_<tol><unit>`` (surface distances pooled over the patient's
  slices), ``dice_at_best`` and ``dice_train_res`` (volume Dice at the training size)
* ``<metrics>/per_model.csv``: one row per model: training facts and test summary metrics
* ``<metrics>/summary.json``: per loss, the mean over seeds of ``per_model``'s metrics
* ``<metrics>/thresholds.csv``: per-patient Dice per threshold on val and test
* ``<metrics>/calibration.csv``: reliability-diagram bins over test pixels
* ``<metrics>/learning_curves.csv``: every ``history.csv`` with ``loss,seed`` in front
* ``<plots>/learning_curves.csv`` (``loss,epoch,val_dice``, mean over seeds) and
  ``<plots>/reliability.csv`` (``loss,mean_prob,frac_positive,count``, bins pooled over seeds):
  tidy tables for ``dvc plots show``, one line per ``loss`` (template ``.dvc/plots/by_loss.json``)
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

from segloss import metrics, scoring
from segloss.data.prepared import (
    PreparedSplit,
    fold_splits,
    load_meta,
    load_native,
    load_split,
    n_folds,
)
from segloss.errors import ConfigError, SeglossError
from segloss.io import atomic_path, write_csv, write_json
from segloss.models import load_checkpoint, preprocess, resolve_device

ID_COLUMNS = ["loss", "seed", "fold", "patient", "slice"]
_SEED_DIR = re.compile(r"seed(\d+)")
_FOLD_DIR = re.compile(r"fold(\d+)")

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
    nsd_tolerance: float = 2.0  # in the distance unit: mm where the spacing is known, else px

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
            nsd_tolerance=float(cfg.get("nsd_tolerance", cls.nsd_tolerance)),
        )
        if not settings.nsd_tolerance >= 0:
            raise ConfigError(f"eval.nsd_tolerance must be >= 0, got {settings.nsd_tolerance}")
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
    fold: int | None = None

    @property
    def name(self) -> str:
        return f"{self.loss}_seed{self.seed}" + ("" if self.fold is None else f"_fold{self.fold}")


def find_checkpoints(models_dir: str | os.PathLike, folds: bool = False) -> list[Checkpoint]:
    """Every ``<models_dir>/<loss>/seed<k>/model.pt`` (``.../seed<k>/fold<f>/model.pt`` with
    ``folds``), sorted; none at all is an error."""
    root = Path(models_dir)
    found = []
    pattern = "*/seed*/fold*/model.pt" if folds else "*/seed*/model.pt"
    for path in sorted(root.glob(pattern)):
        seed_dir = path.parent.parent if folds else path.parent
        seed, fold = _SEED_DIR.fullmatch(seed_dir.name), _FOLD_DIR.fullmatch(path.parent.name)
        if seed and (fold or not folds):
            found.append(
                Checkpoint(
                    seed_dir.parent.name,
                    int(seed.group(1)),
                    path,
                    int(fold.group(1)) if folds else None,
                )
            )
    if not found:
        where = f"{root}/<loss>/seed<k>/" + ("fold<f>/" if folds else "")
        raise SeglossError(
            f"no trained models in {root}/ (expected {where}model.pt): "
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
    try:
        data_splits = fold_splits(meta, checkpoint_data.get("fold"))
    except SeglossError as exc:
        raise SeglossError(f"{model_path} does not match the prepared data: {exc}") from None
    model_splits = checkpoint_data.get("splits") or {}
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


def score(
    masks: np.ndarray,
    split: PreparedSplit,
    target: np.ndarray | None = None,
    units: Mapping | None = None,
) -> pd.DataFrame:
    """``per_image`` of binary masks against ``target`` (default: the split's masks), with
    ``patient`` and ``slice`` in front; with ``units``, in its spacing and with the distance
    columns named with their unit (``hd95_px``, ``nsd_2px``, ...)."""
    target = np.asarray(split.masks if target is None else target, dtype=bool)
    if units is None:
        frame = metrics.per_image(masks, target)
    else:
        frame = metrics.per_image(
            masks, target, spacing=units["spacing"], nsd_tolerance=units["tolerance"]
        ).rename(columns={"hd95": units["hd95"], "nsd": units["nsd"]})
    frame.insert(0, "patient", split.patients)
    frame.insert(1, "slice", split.slices)
    return frame


def dice_per_patient(frame: pd.DataFrame) -> float:
    """Mean over patients of the volume Dice (``per_patient``): the verdict's unit."""
    return float(metrics.per_patient(frame)["dice"].mean())


def patient_dice_at(
    probabilities: np.ndarray, split: PreparedSplit, t: float, target: np.ndarray | None = None
) -> pd.DataFrame:
    """Volume Dice per patient of the masks ``probabilities >= t`` (columns patient, dice)
    against ``target`` (default: the split's masks, at the probabilities' size).

    Only the confusion counts are needed (no surface distances), so this stays cheap.
    """
    target = np.asarray(split.masks if target is None else target, dtype=bool)
    counts = pd.DataFrame(metrics.confusion_counts(probabilities >= t, target))
    return metrics.per_patient(counts.assign(patient=split.patients))[["patient", "dice"]]


def threshold_curve(
    probabilities: np.ndarray,
    split: PreparedSplit,
    thresholds: tuple[float, ...],
    target: np.ndarray | None = None,
) -> pd.DataFrame:
    """Per-patient Dice (mean over patients) of ``probabilities >= t`` for every ``t``."""
    rows = [
        (t, float(patient_dice_at(probabilities, split, t, target)["dice"].mean()))
        for t in thresholds
    ]
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
    frame: pd.DataFrame,
    ece: float,
    curve_val: pd.DataFrame,
    curve_test: pd.DataFrame,
    patients: pd.DataFrame,
    units: Mapping,
) -> dict[str, float]:
    """One model's test summary from its per-image and per-patient frames and curves.

    HD95 and NSD are means over patients of the volume values in ``patients`` (column names
    with their unit), not means of per-slice values.
    """
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
        units["hd95"]: float(patients[units["hd95"]].mean()),
        units["nsd"]: float(patients[units["nsd"]].mean()),
        "fp_rate_empty": metrics.false_positive_rate(frame),
        "ece": ece,
        "best_threshold": float(best),
        "dice_per_patient_at_best": float(at_best.iloc[0]),
    }


def summary_metrics(units: Mapping) -> tuple[str, ...]:
    """:data:`SUMMARY_METRICS` with ``hd95``/``nsd`` named with their unit."""
    names = {"hd95": units["hd95"], "nsd": units["nsd"]}
    return tuple(names.get(m, m) for m in SUMMARY_METRICS)


def _history(path: Path) -> pd.DataFrame:
    history = path.parent / "history.csv"
    return pd.read_csv(history) if history.is_file() else pd.DataFrame()


@dataclass(frozen=True)
class FoldData:
    """One fold's test and validation splits and their masks at the source resolution."""

    test: PreparedSplit
    val: PreparedSplit
    target_test: np.ndarray  # bool (N, H0, W0): native masks (prepared ones in old folders)
    target_val: np.ndarray

    @classmethod
    def load(cls, prepared_dir: str | os.PathLike, fold: int | None) -> FoldData:
        test, val = (load_split(prepared_dir, name, fold=fold) for name in ("test", "val"))
        targets = []
        for name, split in (("test", test), ("val", val)):
            native = load_native(prepared_dir, name, fold=fold)
            targets.append(np.asarray(split.masks, bool) if native is None else native)
        return cls(test, val, *targets)


def _evaluate_model(
    ckpt: Checkpoint,
    model: torch.nn.Module,
    state: Mapping,
    data: FoldData,
    settings: EvalSettings,
    units: Mapping,
    device: torch.device,
    pred_dir: Path,
) -> dict[str, pd.DataFrame | dict]:
    """Predict, upsample to the source size, save the masks and compute every table."""
    test, val = data.test, data.val
    ids = {"loss": ckpt.loss, "seed": ckpt.seed, "fold": 0 if ckpt.fold is None else ckpt.fold}
    size = data.target_test.shape[1:]
    low_test = predict_probabilities(model, test.images, settings.batch_size, device)
    prob_test = scoring.native_probabilities(low_test, size)
    prob_val = scoring.native_probabilities(
        predict_probabilities(model, val.images, settings.batch_size, device), size
    )
    masks = prob_test >= settings.threshold
    np.savez_compressed(
        pred_dir / f"{ckpt.name}.npz", masks=masks, patient=test.patients, slice=test.slices
    )
    frame = score(masks, test, data.target_test, units)
    surface = scoring.per_patient_surface(
        masks, data.target_test, test.patients, units["spacing"], units["tolerance"],
        (units["hd95"], units["nsd"]),
    )  # fmt: skip
    curve_val = threshold_curve(prob_val, val, settings.thresholds, data.target_val)
    curve_test = threshold_curve(prob_test, test, settings.thresholds, data.target_test)
    bins = calibration_table(prob_test, data.target_test, settings.calibration_bins)
    history = _history(ckpt.path)
    summary = summarise(
        frame, expected_calibration_error(bins), curve_val, curve_test, surface, units
    )
    at_best = patient_dice_at(prob_test, test, summary["best_threshold"], data.target_test)
    train_res = patient_dice_at(low_test, test, settings.threshold)
    per_patient = (
        metrics.per_patient(frame)
        .merge(surface, on="patient")
        # dice_at_best: at the threshold that was best on the validation split (a sensitivity
        # analysis of the verdict; the headline uses the fixed threshold). dice_train_res: the
        # same model scored at the training size (secondary; every other column is native).
        .merge(at_best.rename(columns={"dice": "dice_at_best"}), on="patient")
        .merge(train_res.rename(columns={"dice": "dice_train_res"}), on="patient")
        .assign(**ids)
    )
    return {
        "per_image": frame.assign(**ids)[ID_COLUMNS + list(frame.columns[2:])],
        "per_patient": per_patient,
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

    Every checkpoint is checked against the prepared data before any prediction. With
    cross-validated data only ``<loss>/seed<k>/fold<f>/model.pt`` are evaluated, each on its
    fold's test patients. Test metrics go to each model's MLflow run (``mlflow_run_id`` in its
    checkpoint) when ``tracking_uri`` is given; a checkpoint without a run id is evaluated all
    the same, with a warning.
    """
    settings = EvalSettings.from_mapping(eval_cfg)
    meta = load_meta(prepared_dir)
    units = scoring.units(meta, settings.nsd_tolerance)
    checkpoints = find_checkpoints(models_dir, folds=n_folds(meta) >= 2)
    torch.set_num_threads(settings.num_threads)
    device = resolve_device(settings.device)
    loaded = []
    for ckpt in checkpoints:
        model, state = load_checkpoint(ckpt.path, device=device)
        check_matches_data(state.get("data", {}), meta, ckpt.path)
        loaded.append((ckpt, model, state))
    loaded.sort(key=lambda item: -1 if item[0].fold is None else item[0].fold)  # fold by fold

    folds: dict[int | None, FoldData] = {}
    results = []
    with atomic_path(predictions_dir) as pred_dir:
        pred_dir.mkdir()
        for ckpt, model, state in loaded:
            if ckpt.fold not in folds:
                folds = {ckpt.fold: FoldData.load(prepared_dir, ckpt.fold)}  # one fold in memory
            data = folds[ckpt.fold]
            result = _evaluate_model(ckpt, model, state, data, settings, units, device, pred_dir)
            _log_test_metrics(tracking_uri, state, result["summary"], ckpt, prepared_dir, meta)
            results.append(result)
    paths = _write_tables(Path(metrics_dir), Path(plots_dir), results, units)
    return paths | {"predictions": Path(predictions_dir)}


def _log_test_metrics(
    tracking_uri: str | None,
    state: Mapping,
    summary: Mapping[str, float],
    ckpt: Checkpoint,
    prepared_dir: str | os.PathLike,
    meta: Mapping,
) -> None:
    """Log ``test_<metric>`` to the model's MLflow run, or warn why not.

    The test split is recorded as the run's ``testing`` data set, and the metrics are
    attached to the run's logged model and to that data set (MLflow 3 shows them on the
    model's page).
    """
    from segloss import tracking  # imports mlflow: only when something is logged

    if not tracking.enabled(tracking_uri):
        return
    run_id = state.get("mlflow_run_id")
    if not run_id:
        warnings.warn(
            f"{ckpt.path} has no mlflow_run_id: its test metrics are not logged to MLflow",
            stacklevel=2,
        )
        return
    from segloss.training import split_dataset

    data = state.get("data") or {}
    patients = (data.get("splits") or meta.get("splits") or {}).get("test", [])
    dataset = split_dataset(prepared_dir, meta, "test", list(patients), data.get("fold"))
    tracking.log_datasets(tracking_uri, run_id, [dataset])
    model_id = state.get("mlflow_model_id") or tracking.logged_model_id(tracking_uri, run_id)
    finite = {f"test_{k}": float(v) for k, v in summary.items() if np.isfinite(v)}
    tracking.log_metrics(tracking_uri, run_id, finite, model_id=model_id, dataset=dataset)


def _front(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """The same frame with ``columns`` moved to the front."""
    return frame[columns + [c for c in frame.columns if c not in columns]]


def out_of_fold_summary(tables: Mapping[str, pd.DataFrame], units: Mapping) -> pd.DataFrame:
    """Per (loss, seed), every summary metric over all test patients of all folds together.

    Patient-level metrics come from ``per_patient`` (each patient scored by its own fold's
    model), slice-level ones from ``per_image``; ``ece`` and ``best_threshold`` are the mean
    over the folds' models. Without cross-validation this equals ``per_model``'s values.
    """
    rows = []
    per_patient = tables["per_patient"]
    for (loss, seed), frame in tables["per_image"].groupby(["loss", "seed"], sort=False):
        patients = per_patient[(per_patient["loss"] == loss) & (per_patient["seed"] == seed)]
        models = tables["per_model"].query("loss == @loss and seed == @seed")
        plain = frame.drop(columns=["loss", "seed", "fold"])
        rows.append(
            {
                "loss": loss,
                "seed": seed,
                "dice_per_image": metrics.mean_per_image(plain, "dice"),
                "dice_tumour_slices": metrics.mean_per_image(plain, "dice", tumour_only=True),
                "iou": metrics.mean_per_image(plain, "iou"),
                "pixel_accuracy": metrics.mean_per_image(plain, "pixel_accuracy"),
                "dice_per_patient": float(patients["dice"].mean()),
                "iou_per_patient": float(patients["iou"].mean()),
                "dice_pooled": float(metrics.pooled(plain)["dice"].iloc[0]),
                units["hd95"]: float(patients[units["hd95"]].mean()),
                units["nsd"]: float(patients[units["nsd"]].mean()),
                "fp_rate_empty": metrics.false_positive_rate(plain),
                "ece": float(models["ece"].mean()),
                "best_threshold": float(models["best_threshold"].mean()),
                "dice_per_patient_at_best": float(patients["dice_at_best"].mean()),
            }
        )
    return pd.DataFrame(rows)


def _write_tables(
    metrics_dir: Path, plots_dir: Path, results: list[dict], units: Mapping
) -> dict[str, Path]:
    """Concatenate the per-model tables and write every file; return their paths."""
    tables = {
        name: _front(pd.concat([r[name] for r in results], ignore_index=True), front)
        for name, front in (
            ("per_image", ID_COLUMNS),
            ("per_patient", ["loss", "seed", "fold"]),
            ("thresholds", ["loss", "seed", "fold", "split"]),
            ("calibration", ["loss", "seed", "fold"]),
            ("learning_curves", ["loss", "seed", "fold"]),
        )
    }
    tables["per_model"] = pd.DataFrame([r["per_model"] for r in results])
    paths = {}
    for name, frame in tables.items():
        paths[name] = metrics_dir / f"{name}.csv"
        write_csv(frame, paths[name])

    oof = out_of_fold_summary(tables, units)
    summary = oof.groupby("loss", sort=False)[list(summary_metrics(units))].mean()
    summary["n_seeds"] = oof.groupby("loss", sort=False)["seed"].nunique()
    summary["n_folds"] = tables["per_model"].groupby("loss", sort=False)["fold"].nunique()
    summary["nsd_tolerance"] = units["tolerance"]
    paths["summary"] = metrics_dir / "summary.json"
    write_json(summary.to_dict(orient="index"), paths["summary"])

    paths["plots"] = write_plot_tables(plots_dir, tables["learning_curves"], tables["calibration"])
    return paths


def write_plot_tables(
    plots_dir: str | os.PathLike, learning_curves: pd.DataFrame, calibration: pd.DataFrame
) -> Path:
    """The folder ``dvc plots show`` reads: ``learning_curves.csv`` (``loss,epoch,val_dice``,
    mean over seeds) and ``reliability.csv`` (``loss,mean_prob,frac_positive,count``, bins
    pooled over seeds), tidy tables drawn one line per ``loss`` (``.dvc/plots/by_loss.json``)."""
    plots_dir = Path(plots_dir)
    with atomic_path(plots_dir) as tmp:
        tmp.mkdir(parents=True)
        columns = ["loss", "epoch", "val_dice"]
        mean_curves = (
            learning_curves.groupby(["loss", "epoch"], sort=False)["val_dice"].mean().reset_index()
            if "val_dice" in learning_curves
            else pd.DataFrame(columns=columns)
        )
        mean_curves[columns].to_csv(tmp / "learning_curves.csv", index=False)
        reliability = pool_calibration(calibration)
        reliability[["loss", "mean_prob", "frac_positive", "count"]].dropna().to_csv(
            tmp / "reliability.csv", index=False
        )
    return plots_dir
