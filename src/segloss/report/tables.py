"""The report's numbers: read the evaluate stage's tables and summarise them (no plotting)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from segloss.data.prepared import load_manifest
from segloss.errors import SeglossError

# Metrics of the per-model table, as (column of per_model.csv, label, higher is better).
METRICS = (
    ("dice_per_image", "Dice per slice (empty/empty = 1)", True),
    ("dice_tumour_slices", "Dice, tumour slices only", True),
    ("dice_per_patient", "Dice per patient (volume)", True),
    ("dice_pooled", "Dice pooled over the test set", True),
    ("iou", "IoU per slice", True),
    ("iou_per_patient", "IoU per patient", True),
    ("pixel_accuracy", "Pixel accuracy", True),
    ("hd95", "HD95", False),  # hd95_mm / hd95_px: per patient volume (metric_table)
    ("nsd", "NSD", True),  # nsd_<tol>mm / nsd_<tol>px
    ("fp_rate_empty", "Tumour-free slices with false positives", False),
    ("ece", "Expected calibration error", False),
)
# The last epochs in which a model's best validation Dice counts as "still rising".
RISING_WINDOW = 2
TERCILES = ("small", "medium", "large")


@dataclass(frozen=True)
class Tables:
    """The evaluate stage's tables (``reports/metrics/*.csv``, docs/architecture.md)."""

    per_image: pd.DataFrame
    per_patient: pd.DataFrame
    per_model: pd.DataFrame
    thresholds: pd.DataFrame
    calibration: pd.DataFrame
    learning_curves: pd.DataFrame

    @classmethod
    def read(cls, metrics_dir: str | os.PathLike) -> Tables:
        paths = {name: Path(metrics_dir) / f"{name}.csv" for name in cls.__dataclass_fields__}
        for path in paths.values():
            if not path.is_file():
                raise SeglossError(
                    f"{path} not found: run the evaluate stage (`dvc repro evaluate`)"
                )
        return cls(
            **{name: pd.read_csv(path, dtype={"patient": str}) for name, path in paths.items()}
        )

    @property
    def losses(self) -> list[str]:
        return list(dict.fromkeys(self.per_model["loss"]))

    def labelled(self) -> Tables:
        """These tables with each loss named as the report shows it, e.g. ``dice (batch)``."""
        labels = {loss: loss_label(loss, v) for loss, v in loss_variants(self.per_model).items()}
        return Tables(
            **{
                name: frame.replace({"loss": labels}) if "loss" in frame else frame
                for name, frame in vars(self).items()
            }
        )


def loss_variants(per_model: pd.DataFrame) -> dict[str, str | None]:
    """Each loss's variant from ``per_model.csv``'s ``loss_variant`` (``batch``, ``image``,
    ``pixel``; None for tables written before the column existed)."""
    if "loss_variant" not in per_model:
        return dict.fromkeys(per_model["loss"])
    first = per_model.drop_duplicates("loss").set_index("loss")["loss_variant"]
    return {loss: None if pd.isna(v) else str(v) for loss, v in first.items()}


def loss_label(loss: str, variant: str | None) -> str:
    """A loss with its variant, as tables, legends and sentences show it: ``dice (batch)``."""
    return loss if variant is None else f"{loss} ({variant})"


def mean_ci(values: pd.Series | np.ndarray) -> tuple[float, float]:
    """95 % t-interval of a mean over seeds; (nan, nan) with fewer than two values.

    Also used as seaborn's ``errorbar`` so figures and tables show the same interval.
    """
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if len(x) < 2:
        return (np.nan, np.nan)
    if np.ptp(x) == 0:
        return (float(x[0]), float(x[0]))
    lo, hi = scipy_stats.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=scipy_stats.sem(x))
    return (float(lo), float(hi))


def _fmt(value: float, digits: int = 3) -> str:
    return "–" if not np.isfinite(value) else f"{value:.{digits}f}"


def metric_table(per_model: pd.DataFrame) -> pd.DataFrame:
    """Every metric per loss as ``mean ± std [95 % CI]`` over seeds; rows metrics, cols losses."""
    rows = {}
    for column, label, higher in METRICS:
        if column in ("hd95", "nsd") and column not in per_model:
            # named with its unit (evaluation): hd95_mm, nsd_2px, ... per patient volume
            named = [c for c in per_model if re.fullmatch(rf"{column}_([\d.]*)(mm|px)", c)]
            if not named:
                continue
            tol, unit = re.fullmatch(rf"{column}_([\d.]*)(mm|px)", named[0]).groups()
            column = named[0]
            label = f"HD95 ({unit}, per patient)" if not tol else f"NSD ({tol} {unit}, per patient)"
        cells = {}
        for loss, values in per_model.groupby("loss", sort=False)[column]:
            lo, hi = mean_ci(values)
            std = values.std() if len(values) > 1 else np.nan
            cells[loss] = f"{_fmt(values.mean())} ± {_fmt(std)} [{_fmt(lo)}, {_fmt(hi)}]"
        rows[f"{label} ({'↑' if higher else '↓'})"] = cells
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("metric").reset_index()


def size_terciles(per_image: pd.DataFrame) -> pd.DataFrame:
    """Mean Dice per model and tumour-size tercile (ground-truth area over the tumour slices).

    The terciles are cut once on the test slices, so every loss is scored on the same groups.
    """
    tumour = per_image[per_image["gt_pixels"] > 0]
    areas = tumour.drop_duplicates(["patient", "slice"]).set_index(["patient", "slice"])
    n_groups = min(len(TERCILES), len(areas))
    if n_groups == 0:
        return pd.DataFrame(columns=["loss", "seed", "tercile", "dice", "area"])
    ranks = areas["gt_pixels"].rank(method="first")  # ties split evenly, edges stay unique
    groups = pd.qcut(ranks, n_groups, labels=list(TERCILES[:n_groups]))
    keyed = tumour.join(groups.rename("tercile"), on=["patient", "slice"])
    return (
        keyed.groupby(["loss", "seed", "tercile"], sort=False, observed=True)
        .agg(dice=("dice", "mean"), area=("gt_pixels", "median"))
        .reset_index()
    )


def training_regime(learning_curves: pd.DataFrame) -> dict:
    """Epochs per model and how many models were still improving at the end of training.

    A model counts as still rising when its best validation Dice came in its last
    ``RISING_WINDOW`` validated epochs (``train.val_every`` leaves the others NaN): then the
    comparison is of early training, not converged models.
    """
    rows = []
    if learning_curves.empty or "val_dice" not in learning_curves:
        learning_curves = pd.DataFrame(columns=["loss", "seed", "epoch", "val_dice"])
    keys = ["loss", "seed", *(["fold"] if "fold" in learning_curves else [])]  # one model each
    for _, curve in learning_curves.groupby(keys, sort=False):
        validated = curve.sort_values("epoch")["val_dice"].dropna().to_numpy()
        if len(validated):
            best = int(np.argmax(validated))
            rows.append((len(curve), best >= len(validated) - RISING_WINDOW))
    if not rows:
        return {"epochs_min": None, "epochs_max": None, "n_rising": None, "n_models": 0}
    epochs, rising = zip(*rows, strict=True)
    return {
        "epochs_min": int(min(epochs)),
        "epochs_max": int(max(epochs)),
        "n_rising": int(sum(rising)),
        "n_models": len(rows),
    }


def threshold_table(per_model: pd.DataFrame) -> pd.DataFrame:
    """Per loss (mean over seeds): per-patient Dice at the fixed threshold and at the val-best."""
    table = per_model.groupby("loss", sort=False).agg(
        dice_at_fixed=("dice_per_patient", "mean"),
        best_threshold=("best_threshold", "mean"),
        dice_at_best=("dice_per_patient_at_best", "mean"),
        ece=("ece", "mean"),
    )
    return table.reset_index()


def overlay_slices(
    prepared_dir: str | os.PathLike, count: int, patients: np.ndarray | None = None
) -> list[int]:
    """Rows of the test split to show: the smallest tumour, a tumour-free slice, then the
    largest and evenly spaced tumour sizes in between, up to ``count`` (at least two).

    ``patients``: only these (rows then count within them, in the arrays' order)."""
    # the test split, or with cross-validation the pool (every patient is tested once)
    test = load_manifest(prepared_dir).query("split in ('test', 'all')").sort_values("index")
    if patients is not None:
        test = test[test["patient"].isin(patients)]
        test = test.assign(index=np.arange(len(test)))
    tumour = test[test["tumour_pixels"] > 0].sort_values(["tumour_pixels", "index"])
    empty = test[test["tumour_pixels"] == 0]
    chosen: list[int] = []
    if len(tumour):
        chosen.append(int(tumour["index"].iloc[0]))
    if len(empty):
        chosen.append(int(empty["index"].iloc[len(empty) // 2]))
    spread = np.linspace(len(tumour) - 1, 0, num=max(count, 2)).round().astype(int)
    for position in spread:
        if len(chosen) >= max(count, 2):
            break
        row = int(tumour["index"].iloc[position]) if len(tumour) else None
        if row is not None and row not in chosen:
            chosen.append(row)
    return chosen
