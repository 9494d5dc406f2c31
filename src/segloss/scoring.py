"""Scoring at the source resolution, with units, and per-patient (volume) surface metrics.

* :func:`to_native`: predicted probabilities at the training size are upsampled (bilinear,
  ``align_corners=False``) to the source size, *then* thresholded, so every count compares
  with the original mask.
* :func:`units`: HD95 and NSD are in mm where the pixel spacing is known (the synthetic
  generator records it in ``meta.json["pixel_spacing_mm"]``), else in native pixels; the unit
  is part of every column name (``hd95_mm``/``hd95_px``, ``nsd_2mm``/``nsd_2px``).
* :func:`per_patient_surface`: a patient's HD95 and NSD from the border points of all its
  slices together. Each slice's border is computed in 2-D (kaggle_3m does not give the slice
  spacing, so no 3-D distance exists); the distances of all slices are pooled before the 95th
  percentile and the tolerance count. A border point on a slice where the other mask is empty
  (a false-positive slice, or a missed one) takes its in-plane distance to the other mask's
  border on the nearest slice that has one (by slice order; the smaller distance on a tie):
  with the slice gap unknown this is a lower bound of its 3-D distance. A patient with both
  volumes empty scores HD95 0 and NSD 1; exactly one empty: the image diagonal and 0 (as
  ``metrics.per_image`` does per slice).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from scipy import ndimage

from segloss import stacks
from segloss.metrics import surface_distances

# Summary metrics of one model on the test split (the evaluate stage's ``per_model.csv`` and
# ``summary.json``, named with their unit by :func:`summary_metrics`); the report and the
# MLflow logging read them by these names.
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


def units(meta: Mapping, tolerance: float) -> dict[str, object]:
    """Spacing (per axis), unit and the distance column names for a prepared folder."""
    mm = meta.get("pixel_spacing_mm")
    unit = "mm" if mm else "px"
    spacing = (float(mm), float(mm)) if mm else (1.0, 1.0)
    return {
        "unit": unit,
        "spacing": spacing,
        "tolerance": float(tolerance),
        "hd95": f"hd95_{unit}",
        "nsd": f"nsd_{float(tolerance):g}{unit}",
    }


def summary_metrics(units: Mapping) -> tuple[str, ...]:
    """:data:`SUMMARY_METRICS` with ``hd95``/``nsd`` named with their unit."""
    names = {"hd95": units["hd95"], "nsd": units["nsd"]}
    return tuple(names.get(m, m) for m in SUMMARY_METRICS)


def to_native(
    probabilities: np.ndarray, size: Sequence[int], threshold: float, batch: int = 64
) -> np.ndarray:
    """Masks (N, H0, W0) bool: probabilities (N,h,w) upsampled bilinearly, then ``>= t``."""
    n = len(probabilities)
    h0, w0 = int(size[0]), int(size[1])
    if probabilities.shape[1:] == (h0, w0):
        return probabilities >= threshold
    out = np.empty((n, h0, w0), dtype=bool)
    for start in range(0, n, batch):
        part = torch.from_numpy(np.ascontiguousarray(probabilities[start : start + batch]))
        up = F.interpolate(part[:, None].float(), size=(h0, w0), mode="bilinear")
        out[start : start + len(part)] = (up[:, 0] >= threshold).numpy()
    return out


def native_probabilities(probabilities: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Probabilities upsampled bilinearly to the source size (float32; for threshold curves)."""
    if probabilities.shape[1:] == tuple(size):
        return probabilities
    up = F.interpolate(
        torch.from_numpy(np.ascontiguousarray(probabilities))[:, None],
        size=tuple(size),
        mode="bilinear",
    )
    return up[:, 0].numpy()


def probabilities_like(probabilities: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Probabilities (N,h,w) upsampled to each target's own size: a stack laid out like
    ``targets`` (:mod:`segloss.stacks`; images of one data set may differ in size)."""
    if not stacks.is_ragged(targets):
        return native_probabilities(probabilities, targets.shape[1:])
    out = np.empty(len(targets), dtype=object)
    for rows, block in stacks.blocks(targets):
        out[rows] = list(native_probabilities(probabilities[rows], block.shape[1:]))
    return out


def _border(mask: np.ndarray) -> np.ndarray:
    return mask & ~ndimage.binary_erosion(mask)


def _to_nearest_slice(
    source: np.ndarray, other: np.ndarray, other_any: np.ndarray, i: int, spacing: tuple
) -> np.ndarray:
    """Distances from slice ``i``'s border points of ``source`` to the border of ``other`` on
    the nearest slice(s) where ``other`` is not empty (in-plane; the minimum over a tie)."""
    present = np.flatnonzero(other_any)
    gap = np.abs(present - i)
    points = _border(source[i])
    best = None
    for j in present[gap == gap.min()]:
        d = ndimage.distance_transform_edt(~_border(other[j]), sampling=spacing)[points]
        best = d if best is None else np.minimum(best, d)
    return best


def volume_surface(
    pred: np.ndarray, target: np.ndarray, spacing: Sequence[float], tolerance: float
) -> tuple[float, float]:
    """``(hd95, nsd)`` of one patient's stacked slices (N,H,W), distances pooled over slices."""
    h, w = pred.shape[1:]
    spacing = tuple(float(s) for s in spacing)
    diagonal = float(np.hypot(h * spacing[0], w * spacing[1]))
    p_any, t_any = pred.any(axis=(1, 2)), target.any(axis=(1, 2))
    if not p_any.any() and not t_any.any():
        return 0.0, 1.0
    if not p_any.any() or not t_any.any():
        return diagonal, 0.0
    to_t, to_p = [], []
    for i in np.flatnonzero(p_any | t_any):
        if p_any[i] and t_any[i]:
            d_pt, d_tp = surface_distances(pred[i], target[i], spacing)
        elif p_any[i]:  # target empty here: to the target's border on the nearest slice
            d_pt, d_tp = _to_nearest_slice(pred, target, t_any, i, spacing), np.empty(0)
        else:  # prediction empty here (a missed slice): to the nearest predicted border
            d_pt, d_tp = np.empty(0), _to_nearest_slice(target, pred, p_any, i, spacing)
        to_t.append(d_pt)
        to_p.append(d_tp)
    d_pt, d_tp = np.concatenate(to_t), np.concatenate(to_p)
    hd95 = max(np.percentile(d_pt, 95), np.percentile(d_tp, 95))
    nsd = (np.count_nonzero(d_pt <= tolerance) + np.count_nonzero(d_tp <= tolerance)) / (
        d_pt.size + d_tp.size
    )
    return float(hd95), float(nsd)


def per_patient_surface(
    pred: np.ndarray,
    target: np.ndarray,
    patients: np.ndarray,
    spacing: Sequence[float],
    tolerance: float,
    names: tuple[str, str] = ("hd95", "nsd"),
) -> pd.DataFrame:
    """One row per patient: ``patient`` and the volume HD95 and NSD (column ``names``).

    ``pred`` and ``target`` are stacks (:mod:`segloss.stacks`); a patient's slices share a
    size (the prepare stage checks it)."""
    patients = np.asarray(patients)
    rows = []
    for patient in pd.unique(patients):
        rows_of = patients == patient
        pair = (stacks.regular(m[rows_of], f"patient {patient}") for m in (pred, target))
        rows.append((patient, *volume_surface(*pair, spacing, tolerance)))
    return pd.DataFrame(rows, columns=["patient", *names])
