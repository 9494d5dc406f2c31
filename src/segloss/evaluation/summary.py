"""Summary metrics: one model's, the out-of-fold ones per (loss, seed), and ``summary.json``.

Slice-level metrics come from ``per_image``, patient-level ones from ``per_patient`` (HD95
and NSD are the patients' volume values, not means of per-slice values).
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from segloss import metrics
from segloss.fingerprint import factor_columns
from segloss.scoring import summary_metrics

_MODEL_KEYS = ["loss", "seed", "fold"]


def summary_row(
    per_image: pd.DataFrame,
    per_patient: pd.DataFrame,
    units: Mapping,
    ece: float,
    best_threshold: float,
) -> dict[str, float]:
    """Every summary metric (``scoring.summary_metrics`` order) of the given slices and
    patients, with the calibration error and validation-best threshold given."""
    plain = per_image.drop(columns=[c for c in _MODEL_KEYS if c in per_image])
    row = {
        "dice_per_image": metrics.mean_per_image(plain, "dice"),
        "dice_tumour_slices": metrics.mean_per_image(plain, "dice", tumour_only=True),
        "iou": metrics.mean_per_image(plain, "iou"),
        "pixel_accuracy": metrics.mean_per_image(plain, "pixel_accuracy"),
        "dice_per_patient": float(per_patient["dice"].mean()),
        "iou_per_patient": float(per_patient["iou"].mean()),
        "dice_pooled": float(metrics.pooled(plain)["dice"].iloc[0]),
        units["hd95"]: float(per_patient[units["hd95"]].mean()),
        units["nsd"]: float(per_patient[units["nsd"]].mean()),
        "fp_rate_empty": metrics.false_positive_rate(plain),
        "ece": float(ece),
        "best_threshold": float(best_threshold),
        "dice_per_patient_at_best": float(per_patient["dice_at_best"].mean()),
    }
    return {name: row[name] for name in summary_metrics(units)}


def out_of_fold_summary(tables: Mapping[str, pd.DataFrame], units: Mapping) -> pd.DataFrame:
    """Per ([second factor's level,] loss, seed), every summary metric over all test patients
    of all folds together.

    Each patient is scored by its own fold's model; ``ece`` and ``best_threshold`` are the
    mean over the folds' models. Without cross-validation this equals ``per_model``'s values.
    """
    rows = []
    per_patient, per_model = tables["per_patient"], tables["per_model"]
    keys = [*factor_columns(per_model.columns), "loss", "seed"]
    patients_by, models_by = per_patient.groupby(keys, sort=False), per_model.groupby(keys)
    for key, frame in tables["per_image"].groupby(keys, sort=False):
        models = models_by.get_group(key)
        row = summary_row(
            frame,
            patients_by.get_group(key),
            units,
            models["ece"].mean(),
            models["best_threshold"].mean(),
        )
        rows.append(dict(zip(keys, key, strict=True)) | row)
    return pd.DataFrame(rows)


def loss_summary(tables: Mapping[str, pd.DataFrame], units: Mapping) -> dict[str, dict]:
    """``summary.json``: per loss, the mean over seeds of the out-of-fold summary metrics,
    with ``n_seeds``, ``n_folds`` and ``nsd_tolerance``; with a second factor, per level
    first (``{"sampling=uniform": {"bce": {...}}}``, ``dvc metrics show`` flattens it)."""
    oof = out_of_fold_summary(tables, units)
    lead = factor_columns(tables["per_model"].columns)
    keys = [*lead, "loss"]
    summary = oof.groupby(keys, sort=False)[list(summary_metrics(units))].mean()
    summary["n_seeds"] = oof.groupby(keys, sort=False)["seed"].nunique()
    summary["n_folds"] = tables["per_model"].groupby(keys, sort=False)["fold"].nunique()
    summary["nsd_tolerance"] = units["tolerance"]
    if not lead:
        return summary.to_dict(orient="index")
    nested: dict[str, dict] = {}
    for key, row in summary.iterrows():
        level = ", ".join(f"{k}={v}" for k, v in zip(lead, key[:-1], strict=True))
        nested.setdefault(level, {})[key[-1]] = row.to_dict()
    return nested
