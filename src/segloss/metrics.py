"""Per-image segmentation metrics with explicit empty-mask conventions, and their aggregations.

``per_image`` returns one row per image (counts, overlap metrics, HD95, NSD). Overlap
metrics are vectorised over the batch; HD95 and NSD follow MONAI's definitions (borders =
mask minus its erosion with scipy's default cross-shaped structure, Euclidean distances
in units of ``spacing``) but run a distance transform only on the bounding box of the
two masks. The aggregations pool counts per patient, per (loss, seed) or over everything;
Dice and IoU always come from the same ``dice_from_counts`` / ``iou_from_counts``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pandas as pd
import torch
from scipy import ndimage

COLUMNS = (
    "gt_pixels",
    "pred_pixels",
    "tp",
    "fp",
    "fn",
    "tn",
    "pixel_accuracy",
    "iou",
    "dice",
    "precision",
    "recall",
    "specificity",
    "hd95",
    "nsd",
    "area_error",
)
COUNTS = ("tp", "fp", "fn", "tn")
EMPTY_CONVENTIONS = ("reloaded", "nan")
GROUP_KEYS = ("loss", "seed")  # aggregations keep models apart when these columns exist


def _as_masks(x: npt.ArrayLike, name: str) -> np.ndarray:
    """A boolean ``(N,H,W)`` numpy array; ValueError for NaN or anything not 0/1."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if x.ndim != 3:
        raise ValueError(f"{name} must have shape (N,H,W), got {x.shape}")
    if x.dtype == bool:
        return x
    if not np.issubdtype(x.dtype, np.number):
        raise ValueError(f"{name} must be boolean or numeric 0/1, got dtype {x.dtype}")
    if np.issubdtype(x.dtype, np.floating) and np.isnan(x).any():
        raise ValueError(f"{name} contains NaN")
    binary = x == 1
    if not (binary | (x == 0)).all():
        raise ValueError(f"{name} must be binary (0/1), found values {np.unique(x)[:5]}")
    return binary


def _check_empty(empty: str) -> None:
    if empty not in EMPTY_CONVENTIONS:
        raise ValueError(f"empty must be one of {EMPTY_CONVENTIONS}, got {empty!r}")


def _masks_pair(pred: npt.ArrayLike, target: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    p, t = _as_masks(pred, "pred"), _as_masks(target, "target")
    if p.shape != t.shape:
        raise ValueError(f"pred and target shapes differ: {p.shape} vs {t.shape}")
    return p, t


def confusion_counts(pred: npt.ArrayLike, target: npt.ArrayLike) -> dict[str, np.ndarray]:
    """Per-image ``tp, fp, fn, tn`` (int64 arrays of length N) of boolean ``(N,H,W)`` masks."""
    p, t = _masks_pair(pred, target)
    return _counts(p, t)


def _counts(p: np.ndarray, t: np.ndarray) -> dict[str, np.ndarray]:
    tp = np.count_nonzero(p & t, axis=(1, 2))
    fp = np.count_nonzero(p, axis=(1, 2)) - tp
    fn = np.count_nonzero(t, axis=(1, 2)) - tp
    tn = p.shape[1] * p.shape[2] - tp - fp - fn
    return {k: v.astype(np.int64) for k, v in zip(COUNTS, (tp, fp, fn, tn), strict=True)}


def _ratio(num: npt.ArrayLike, den: npt.ArrayLike, fill: float = np.nan) -> np.ndarray:
    """``num / den`` as float64, ``fill`` where ``den == 0``."""
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    out = np.full(np.broadcast(num, den).shape, fill)
    np.divide(num, den, out=out, where=den != 0)
    return out


def _empty_target_nan(
    values: np.ndarray, tp: npt.ArrayLike, fn: npt.ArrayLike, empty: str
) -> np.ndarray:
    """Under ``empty="nan"`` blank out the values whose target is empty."""
    if empty == "nan":
        values = np.where(np.asarray(tp) + np.asarray(fn) == 0, np.nan, values)
    return values


def dice_from_counts(
    tp: npt.ArrayLike, fp: npt.ArrayLike, fn: npt.ArrayLike, *, empty: str = "reloaded"
) -> np.ndarray:
    """Dice ``2TP / (2TP + FP + FN)``; both masks empty -> 1 (``reloaded``) or NaN (``nan``)."""
    _check_empty(empty)
    tp = np.asarray(tp)
    return _empty_target_nan(_ratio(2 * tp, 2 * tp + np.asarray(fp) + fn, 1.0), tp, fn, empty)


def iou_from_counts(
    tp: npt.ArrayLike, fp: npt.ArrayLike, fn: npt.ArrayLike, *, empty: str = "reloaded"
) -> np.ndarray:
    """IoU ``TP / (TP + FP + FN)``; both masks empty -> 1 (``reloaded``) or NaN (``nan``)."""
    _check_empty(empty)
    tp = np.asarray(tp)
    return _empty_target_nan(_ratio(tp, tp + np.asarray(fp) + fn, 1.0), tp, fn, empty)


def surface_distances(
    p: np.ndarray, t: np.ndarray, spacing: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """Distances pred border -> nearest target border and back, for two non-empty masks.

    The masks are cropped to the bounding box of their union: every border pixel lies inside
    it and pixels outside are background, so erosion (scipy's border_value=0) and the distance
    transforms on the crop are exact and much cheaper than on the whole image.
    """
    rows = np.flatnonzero((p | t).any(axis=1))
    cols = np.flatnonzero((p | t).any(axis=0))
    box = np.s_[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    p, t = p[box], t[box]
    # scipy's default structure is the cross MONAI's get_mask_edges uses (not a full 3x3).
    p_border = p & ~ndimage.binary_erosion(p)
    t_border = t & ~ndimage.binary_erosion(t)
    to_t = ndimage.distance_transform_edt(~t_border, sampling=spacing)
    to_p = ndimage.distance_transform_edt(~p_border, sampling=spacing)
    return to_t[p_border], to_p[t_border]


def _hd95_nsd(
    p: np.ndarray, t: np.ndarray, spacing: tuple[float, float], tolerance: float
) -> tuple[np.ndarray, np.ndarray]:
    """HD95 (max of the two directed 95th percentiles) and NSD per image, empty cases by rule."""
    n, h, w = p.shape
    p_any, t_any = p.any(axis=(1, 2)), t.any(axis=(1, 2))
    diagonal = float(np.hypot(h * spacing[0], w * spacing[1]))
    # Empty cases need no distance transform: both empty -> perfect, one empty -> worst.
    hd95 = np.where(p_any | t_any, diagonal, 0.0)
    nsd = np.where(p_any | t_any, 0.0, 1.0)
    for i in np.flatnonzero(p_any & t_any):
        d_pt, d_tp = surface_distances(p[i], t[i], spacing)
        hd95[i] = max(np.percentile(d_pt, 95), np.percentile(d_tp, 95))
        nsd[i] = (np.count_nonzero(d_pt <= tolerance) + np.count_nonzero(d_tp <= tolerance)) / (
            d_pt.size + d_tp.size
        )
    return hd95, nsd


def per_image(
    pred: npt.ArrayLike,
    target: npt.ArrayLike,
    *,
    nsd_tolerance: float,
    spacing: Sequence[float] = (1.0, 1.0),
    empty: str = "reloaded",
) -> pd.DataFrame:
    """One row per image of boolean ``(N,H,W)`` masks (numpy or torch) with every metric.

    ``nsd_tolerance`` (NSD's, in the unit of ``spacing``) is the caller's: the evaluate stage
    passes ``eval.nsd_tolerance``.
    ``empty="reloaded"``: both empty -> dice, iou, nsd 1 and hd95 0; exactly one empty ->
    dice, iou, nsd 0 and hd95 = the image diagonal. ``empty="nan"``: every ratio and
    distance metric is NaN where the target is empty (counts and area_error stay).
    precision, recall and specificity are NaN where their denominator is 0.
    """
    _check_empty(empty)
    p, t = _masks_pair(pred, target)
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != 2 or min(spacing) <= 0:
        raise ValueError(f"spacing must be two positive numbers, got {spacing}")
    if not nsd_tolerance >= 0:
        raise ValueError(f"nsd_tolerance must be >= 0, got {nsd_tolerance}")
    c = _counts(p, t)
    tp, fp, fn, tn = (c[k] for k in COUNTS)
    hd95, nsd = _hd95_nsd(p, t, spacing, float(nsd_tolerance))
    metrics = {
        "pixel_accuracy": _ratio(tp + tn, tp + fp + fn + tn),
        "iou": iou_from_counts(tp, fp, fn),
        "dice": dice_from_counts(tp, fp, fn),
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
        "hd95": hd95,
        "nsd": nsd,
    }
    metrics = {k: _empty_target_nan(v, tp, fn, empty) for k, v in metrics.items()}
    frame = pd.DataFrame(
        {"gt_pixels": tp + fn, "pred_pixels": tp + fp, **c, **metrics, "area_error": fp - fn}
    )
    return frame[list(COLUMNS)]


def _require(frame: pd.DataFrame, columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"frame lacks column(s) {', '.join(missing)}")


def _group_keys(frame: pd.DataFrame) -> list[str]:
    return [k for k in GROUP_KEYS if k in frame.columns]


def _pool(frame: pd.DataFrame, keys: list[str], empty: str) -> pd.DataFrame:
    """Sum the counts per group of ``keys`` (all rows if none) and add Dice and IoU."""
    _check_empty(empty)
    _require(frame, [*keys, *COUNTS])
    if keys:
        pooled_counts = frame.groupby(keys, sort=True)[list(COUNTS)].sum().reset_index()
    else:
        pooled_counts = frame[list(COUNTS)].sum().to_frame().T.reset_index(drop=True)
    tp, fp, fn = (pooled_counts[k].to_numpy() for k in ("tp", "fp", "fn"))
    pooled_counts["dice"] = dice_from_counts(tp, fp, fn, empty=empty)
    pooled_counts["iou"] = iou_from_counts(tp, fp, fn, empty=empty)
    return pooled_counts


def per_patient(frame: pd.DataFrame, *, empty: str = "reloaded") -> pd.DataFrame:
    """Volume Dice and IoU per patient (and per loss/seed where present) from pooled counts.

    Needs only ``patient, tp, fp, fn, tn`` columns, so counts computed during training work
    too. A patient with no tumour and no prediction scores 1 (``reloaded``) or NaN (``nan``).
    """
    return _pool(frame, [*_group_keys(frame), "patient"], empty)


def pooled(frame: pd.DataFrame, *, empty: str = "reloaded") -> pd.DataFrame:
    """Dice and IoU of the counts pooled over the whole set, one row per (loss, seed) present."""
    return _pool(frame, _group_keys(frame), empty)


def _per_group(frame: pd.DataFrame, values: pd.Series) -> float | pd.Series:
    """Mean of ``values`` (NaN skipped), per (loss, seed) where the frame has those columns."""
    keys = _group_keys(frame)
    if not keys:
        return float(values.mean())
    return values.groupby([frame[k] for k in keys]).mean()


def mean_per_image(
    frame: pd.DataFrame, metric: str, tumour_only: bool = False
) -> float | pd.Series:
    """Mean of a ``per_image`` column over slices (tumour slices only if asked), NaN skipped.

    Returns a float, or a Series indexed by (loss, seed) where the frame has those columns.
    """
    _require(frame, [metric, "tp", "fn"])
    values = frame[metric].astype(float)
    if tumour_only:
        values = values.where(frame["tp"] + frame["fn"] > 0)
    return _per_group(frame, values)


def false_positive_rate(frame: pd.DataFrame) -> float | pd.Series:
    """Share of tumour-free slices with any predicted pixel (NaN where there are none).

    Returns a float, or a Series indexed by (loss, seed) where the frame has those columns.
    """
    _require(frame, COUNTS[:3])
    any_fp = (frame["fp"] > 0).astype(float)
    return _per_group(frame, any_fp.where(frame["tp"] + frame["fn"] == 0))
