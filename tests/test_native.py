"""Scoring at the source resolution, distance units, per-patient (volume) HD95 and NSD."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_evaluation import EVAL_CFG, write_checkpoint

from segloss import metrics, scoring
from segloss.data.prepared import PreparedSplit, load_meta, load_native, write_prepared
from segloss.evaluation import evaluate


def test_bilinear_upsampling_then_threshold_by_hand():
    """2x2 -> 4x4, align_corners=False: output pixel centre x maps to (x + 0.5) / 2 - 0.5, so
    rows/cols 0..3 weigh the first input pixel 1, 0.75, 0.25, 0 (clamped at the edges)."""
    prob = np.array([[[1.0, 0.0], [0.0, 0.0]]], np.float32)
    w = np.array([1.0, 0.75, 0.25, 0.0])
    expected = np.outer(w, w)  # [[1, .75, .25, 0], [.75, .5625, .1875, 0], ...]
    np.testing.assert_allclose(scoring.native_probabilities(prob, (4, 4))[0], expected)
    mask = scoring.to_native(prob, (4, 4), 0.5)[0]
    np.testing.assert_array_equal(mask, expected >= 0.5)  # the top-left 2x2 block
    assert scoring.to_native(prob, (4, 4), 0.7)[0].sum() == 3  # 1, .75, .75
    target = np.zeros((1, 4, 4), bool)
    target[0, :2, :3] = True  # the block plus one pixel
    row = metrics.per_image(mask[None], target, nsd_tolerance=2.0).iloc[0]
    assert (row.tp, row.fp, row.fn) == (4, 0, 2)
    assert row.dice == pytest.approx(8 / 10)


def test_an_upsampled_64_prediction_against_a_256_mask():
    """A 16x16 block of probability 1 at rows/cols 16..31 of 64x64. Output row y samples input
    (y + 0.5) / 4 - 0.5, so across an edge the profile is 0.625, 0.875, 1, ... (rows 64, 65, 66
    and, mirrored, 127, 126, 125): rows/cols 64..127 pass 0.5 along one axis; bilinear is the
    product of both, and only the four corners (0.625 * 0.625 = 0.39) fall below 0.5."""
    prob = np.zeros((1, 64, 64), np.float32)
    prob[0, 16:32, 16:32] = 1.0
    up = scoring.native_probabilities(prob, (256, 256))[0]
    assert up[64, 100] == pytest.approx(0.625) and up[65, 100] == pytest.approx(0.875)
    assert up[64, 64] == pytest.approx(0.625**2) and up[64, 65] == pytest.approx(0.625 * 0.875)
    mask = scoring.to_native(prob, (256, 256), 0.5)
    expected = np.zeros((1, 256, 256), bool)
    expected[0, 64:128, 64:128] = True
    expected[0, [64, 64, 127, 127], [64, 127, 64, 127]] = False
    np.testing.assert_array_equal(mask, expected)
    target = np.zeros((1, 256, 256), bool)
    target[0, 64:132, 64:128] = True  # 4 more rows of tumour than predicted
    row = metrics.per_image(mask, target, nsd_tolerance=2.0).iloc[0]
    assert (row.tp, row.fp, row.fn) == (64 * 64 - 4, 0, 4 * 64 + 4)
    assert row.dice == pytest.approx(2 * 4092 / (2 * 4092 + 260))


def test_units_name_every_distance_column():
    mm = scoring.units({"pixel_spacing_mm": 0.5}, 2)
    assert (mm["hd95"], mm["nsd"], mm["spacing"], mm["unit"]) == (
        "hd95_mm",
        "nsd_2mm",
        (0.5, 0.5),
        "mm",
    )
    px = scoring.units({"pixel_spacing_mm": None}, 1.5)
    assert (px["hd95"], px["nsd"], px["spacing"]) == ("hd95_px", "nsd_1.5px", (1.0, 1.0))


def _border(mask: np.ndarray) -> np.ndarray:
    """Mask minus its erosion by the cross, written out (pixels outside the image are 0)."""
    padded = np.pad(mask, 1)
    inner = padded[1:-1, 1:-1] & padded[:-2, 1:-1] & padded[2:, 1:-1]
    inner &= padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~inner


def _direct_volume(pred, target, spacing, tolerance):
    """Brute force: every border point's distance to the other mask's border in its slice, or,
    where the other mask is empty on that slice, in the nearest slice(s) that have it (the
    smaller on a tie), pooled over the slices."""
    borders = {"p": [np.argwhere(_border(m)) * spacing for m in pred]}
    borders["t"] = [np.argwhere(_border(m)) * spacing for m in target]

    d = {"p": [], "t": []}
    for src, dst in (("p", "t"), ("t", "p")):
        present = [j for j, b in enumerate(borders[dst]) if len(b)]
        for i, points in enumerate(borders[src]):
            gap = min(abs(j - i) for j in present)
            partners = [borders[dst][j] for j in present if abs(j - i) == gap]
            for point in points:
                d[src].append(min(np.min(np.hypot(*(b - point).T)) for b in partners))
    d_pt, d_tp = np.array(d["p"]), np.array(d["t"])
    hd95 = max(np.percentile(d_pt, 95), np.percentile(d_tp, 95))
    nsd = ((d_pt <= tolerance).sum() + (d_tp <= tolerance).sum()) / (len(d_pt) + len(d_tp))
    return hd95, nsd


def _stack(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Overlapping shifted discs, a partly found disc, a false-positive-only slice (its nearest
    tumour slice is slice 1), an empty slice."""
    yy, xx = np.mgrid[:24, :24]
    target = np.zeros((4, 24, 24), bool)
    pred = np.zeros((4, 24, 24), bool)
    target[0] = (yy - 10) ** 2 + (xx - 11) ** 2 <= 25
    pred[0] = (yy - 12) ** 2 + (xx - 10) ** 2 <= 30
    target[1] = (yy - 6) ** 2 + (xx - 15) ** 2 <= 9
    pred[1] = target[1] & (rng.random((24, 24)) < 0.8)
    pred[2, 3:5, 3:6] = True  # a false positive on a tumour-free slice
    return pred, target


@pytest.mark.parametrize("spacing", [(1.0, 1.0), (0.7, 0.7)])
def test_volume_hd95_and_nsd_equal_a_direct_computation_on_stacked_slices(spacing):
    pred, target = _stack(np.random.default_rng(0))
    hd95, nsd = scoring.volume_surface(pred, target, spacing, 2.0)
    expected = _direct_volume(pred, target, np.array(spacing), 2.0)
    assert hd95 == pytest.approx(expected[0]) and nsd == pytest.approx(expected[1])
    # not the mean of per-slice values (which also counts the empty slice as a perfect 0)
    slices = metrics.per_image(pred, target, nsd_tolerance=2.0, spacing=spacing)
    assert hd95 != pytest.approx(slices["hd95"].mean())


def test_volume_surface_empty_conventions():
    empty = np.zeros((2, 8, 8), bool)
    some = empty.copy()
    some[1, 2:4, 2:4] = True
    assert scoring.volume_surface(empty, empty, (1, 1), 2) == (0.0, 1.0)
    assert scoring.volume_surface(some, empty, (1, 1), 2) == (pytest.approx(np.hypot(8, 8)), 0.0)
    assert scoring.volume_surface(some, some, (1, 1), 2) == (0.0, 1.0)
    frame = scoring.per_patient_surface(
        np.concatenate([some, empty]),
        np.concatenate([some, some]),
        np.array(list("aabb")),
        (1, 1),
        2,
    )
    assert frame["patient"].tolist() == ["a", "b"]
    assert frame["hd95"].tolist() == [0.0, pytest.approx(np.hypot(8, 8))]


def _native_prepared(out: Path) -> Path:
    """A 16x16 prepared set whose native masks are 32x32 (a 2x upsampling), spacing 0.5 mm."""
    rng = np.random.default_rng(1)
    splits = {}
    for name, patients in (("train", ["A", "B"]), ("val", ["C"]), ("test", ["D", "E"])):
        n = 2 * len(patients)
        native = np.zeros((n, 32, 32), bool)
        for i in range(n):
            y, x = rng.integers(4, 20, size=2)
            native[i, y : y + 9, x : x + 7] = True
        small = native.reshape(n, 16, 2, 16, 2).mean(axis=(2, 4)) > 0.5
        splits[name] = PreparedSplit(
            images=rng.integers(0, 255, (n, 16, 16, 3), dtype=np.uint8),
            masks=small.astype(np.uint8),
            patients=np.repeat(patients, 2),
            slices=np.tile([1, 2], len(patients)),
            native=native,
        )
    meta = {"source": "blobs", "pixel_spacing_mm": 0.5}
    return write_prepared(out, splits, meta)


def test_evaluation_scores_at_native_resolution_with_units(tmp_path):
    prepared = _native_prepared(tmp_path / "prepared")
    meta = load_meta(prepared)
    write_checkpoint(tmp_path / "models", "bce", 0, meta)
    paths = evaluate(
        prepared,
        tmp_path / "models",
        tmp_path / "predictions",
        tmp_path / "metrics",
        tmp_path / "plots",
        dataclasses.replace(EVAL_CFG, nsd_tolerance=1.0),
    )
    native = load_native(prepared, "test")
    saved = np.load(tmp_path / "predictions" / "bce_seed0.npz")
    assert saved["masks"].shape == native.shape == (4, 32, 32)
    per_image = pd.read_csv(paths["per_image"], dtype={"patient": str})
    assert {"hd95_mm", "nsd_1mm"} <= set(per_image.columns) and "hd95" not in per_image
    np.testing.assert_array_equal(per_image["gt_pixels"], native.sum(axis=(1, 2)))
    expected = metrics.per_image(saved["masks"], native, nsd_tolerance=1.0, spacing=(0.5, 0.5))
    np.testing.assert_allclose(per_image["hd95_mm"], expected["hd95"])
    np.testing.assert_array_equal(per_image["tp"], expected["tp"])
    per_patient = pd.read_csv(paths["per_patient"], dtype={"patient": str})
    assert {"fold", "hd95_mm", "nsd_1mm", "dice_train_res"} <= set(per_patient.columns)
    for patient, row in per_patient.set_index("patient").iterrows():
        rows = np.repeat(["D", "E"], 2) == patient
        hd95, nsd = scoring.volume_surface(saved["masks"][rows], native[rows], (0.5, 0.5), 1.0)
        assert row["hd95_mm"] == pytest.approx(hd95) and row["nsd_1mm"] == pytest.approx(nsd)
