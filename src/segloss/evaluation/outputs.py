"""The evaluate stage's files, each written atomically (docs/architecture.md, "Evaluation
outputs"): the predicted masks, the metric tables, ``summary.json`` and the plot tables."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from segloss import stacks
from segloss.calibration import pool_calibration
from segloss.data.prepared import PreparedSplit
from segloss.evaluation.summary import loss_summary
from segloss.evaluation.tables import ID_COLUMNS
from segloss.fingerprint import factor_columns
from segloss.io import atomic_path, write_csv, write_json

# Every per-model table and the columns it starts with.
TABLE_FRONTS = {
    "per_image": ID_COLUMNS,
    "per_patient": ["loss", "seed", "fold"],
    "thresholds": ["loss", "seed", "fold", "split"],
    "calibration": ["loss", "seed", "fold"],
    "learning_curves": ["loss", "seed", "fold"],
}


def save_predictions(pred_dir: Path, name: str, masks: np.ndarray, split: PreparedSplit) -> None:
    """``<pred_dir>/<name>.npz``: the native masks (:func:`segloss.stacks.to_npz`) with
    ``patient`` and ``slice``."""
    np.savez_compressed(
        pred_dir / f"{name}.npz", **stacks.to_npz(masks), patient=split.patients, slice=split.slices
    )


def _front(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """The same frame with ``columns`` moved to the front."""
    return frame[columns + [c for c in frame.columns if c not in columns]]


def join_tables(
    tables: Sequence[Mapping[str, pd.DataFrame]], per_model: Sequence[Mapping]
) -> dict[str, pd.DataFrame]:
    """Every model's tables concatenated, ids in front (a second factor's first), and
    ``per_model`` (a row per model)."""
    lead = factor_columns(per_model[0]) if per_model else []
    joined = {
        name: _front(pd.concat([t[name] for t in tables], ignore_index=True), lead + front)
        for name, front in TABLE_FRONTS.items()
    }
    return joined | {"per_model": pd.DataFrame(list(per_model))}


def write_tables(
    tables: Mapping[str, pd.DataFrame], units: Mapping, metrics_dir: Path, plots_dir: Path
) -> dict[str, Path]:
    """Write ``<metrics_dir>/<table>.csv``, ``summary.json`` and the plot tables; return the
    paths by name (``plots``: the plot folder)."""
    paths = {}
    for name, frame in tables.items():
        paths[name] = metrics_dir / f"{name}.csv"
        write_csv(frame, paths[name])
    paths["summary"] = metrics_dir / "summary.json"
    write_json(loss_summary(tables, units), paths["summary"])
    curves, calibration = (arm_labelled(tables[n]) for n in ("learning_curves", "calibration"))
    paths["plots"] = write_plot_tables(plots_dir, curves, calibration)
    return paths


def arm_labelled(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with a second factor's level in ``loss`` (``bce (sampling=uniform)``), so
    the plots draw one line per arm; unchanged without a factor."""
    lead = factor_columns(frame.columns)
    if not lead:
        return frame
    levels = (
        frame[lead]
        .astype(str)
        .apply(lambda row: ", ".join(f"{k}={v}" for k, v in row.items()), axis=1)
    )
    return frame.drop(columns=lead).assign(loss=frame["loss"] + " (" + levels + ")")


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
