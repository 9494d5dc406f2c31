"""Metrics: agreement with MONAI on generated masks, hand-computed cases, conventions, sums."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from monai.metrics import DiceMetric, HausdorffDistanceMetric, MeanIoU, SurfaceDiceMetric

from segloss.metrics import (
    COLUMNS,
    confusion_counts,
    dice_from_counts,
    false_positive_rate,
    iou_from_counts,
    mean_per_image,
    per_image,
    per_patient,
    pooled,
)

TOL = 2.0  # NSD tolerance where a test does not vary it (in the unit of the spacing)


@st.composite
def mask(draw, shape: tuple[int, int]) -> np.ndarray:
    """Random, empty, full, single-pixel or border-touching rectangle masks."""
    h, w = shape
    kind = draw(st.sampled_from(["random", "empty", "full", "pixel", "rect"]))
    m = np.zeros(shape, bool)
    if kind == "random":
        bits = draw(st.lists(st.booleans(), min_size=h * w, max_size=h * w))
        m = np.array(bits, bool).reshape(shape)
    elif kind == "full":
        m[:] = True
    elif kind == "pixel":
        m[draw(st.integers(0, h - 1)), draw(st.integers(0, w - 1))] = True
    elif kind == "rect":  # anchored at a corner, so it touches two borders
        m[: draw(st.integers(1, h)), : draw(st.integers(1, w))] = True
        m = m[:: draw(st.sampled_from([1, -1])), :: draw(st.sampled_from([1, -1]))]
    return m


@st.composite
def mask_pairs(draw) -> tuple[np.ndarray, np.ndarray]:
    shape = (draw(st.integers(1, 12)), draw(st.integers(1, 12)))
    n = draw(st.integers(1, 3))
    pred = np.stack([draw(mask(shape)) for _ in range(n)])
    target = np.stack([draw(mask(shape)) for _ in range(n)])
    return pred, target


def monai(pred: np.ndarray, target: np.ndarray, spacing, tol: float) -> dict[str, np.ndarray]:
    """MONAI's per-image values: one-hot-free single channel, so include_background=True."""
    p = torch.from_numpy(pred)[:, None].float()
    t = torch.from_numpy(target)[:, None].float()
    kw = {"include_background": True, "reduction": "none"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MONAI warns on every empty mask
        return {
            "dice": DiceMetric(ignore_empty=False, **kw)(p, t),
            "iou": MeanIoU(ignore_empty=False, **kw)(p, t),
            "hd95": HausdorffDistanceMetric(percentile=95, **kw)(p, t, spacing=spacing),
            "nsd": SurfaceDiceMetric([tol], **kw)(p, t, spacing=spacing),
        }


@settings(max_examples=60, deadline=None)
@given(
    pair=mask_pairs(),
    spacing=st.sampled_from([(1.0, 1.0), (0.5, 2.0)]),
    tol=st.sampled_from([0.0, 1.0, 2.0]),
)
def test_agrees_with_monai(pair, spacing, tol):
    pred, target = pair
    frame = per_image(pred, target, spacing=spacing, nsd_tolerance=tol)
    ref = {k: v[:, 0].numpy().astype(float) for k, v in monai(pred, target, spacing, tol).items()}
    np.testing.assert_allclose(frame["dice"], ref["dice"], atol=1e-6)
    np.testing.assert_allclose(frame["iou"], ref["iou"], atol=1e-6)
    both = pred.any(axis=(1, 2)) & target.any(axis=(1, 2))
    np.testing.assert_allclose(frame["hd95"][both], ref["hd95"][both], atol=1e-4)
    np.testing.assert_allclose(frame["nsd"][both], ref["nsd"][both], atol=1e-4)
    iou = frame["iou"].to_numpy()
    np.testing.assert_allclose(frame["dice"], 2 * iou / (1 + iou), atol=1e-12)
    assert (frame["iou"] <= frame["dice"]).all()


def test_seed_article_example_empty_prediction_on_two_percent_tumour():
    target = np.zeros((1, 100, 100), bool)
    target[0, 40:60, 40:50] = True  # 200 of 10,000 pixels
    row = per_image(np.zeros_like(target), target, nsd_tolerance=TOL).iloc[0]
    assert list(row.index) == list(COLUMNS)
    assert row["pixel_accuracy"] == pytest.approx(0.98)
    assert (row["dice"], row["iou"], row["nsd"], row["recall"]) == (0, 0, 0, 0)
    assert row["hd95"] == pytest.approx(math.hypot(100, 100))
    assert math.isnan(row["precision"]) and row["specificity"] == 1
    assert (row["gt_pixels"], row["pred_pixels"], row["area_error"]) == (200, 0, -200)


def four_cases() -> tuple[np.ndarray, np.ndarray]:
    """Both empty, prediction only, target only, overlapping 2x2 squares (tp 2, fp 2, fn 2)."""
    pred = np.zeros((4, 6, 8), bool)
    target = np.zeros_like(pred)
    pred[1, 0, 0] = True
    target[2, 5, 7] = True
    pred[3, 1:3, 1:3] = True
    target[3, 1:3, 2:4] = True
    return pred, target


def test_reloaded_conventions():
    frame = per_image(*four_cases(), nsd_tolerance=TOL, spacing=(2.0, 1.0))
    diagonal = math.hypot(6 * 2.0, 8 * 1.0)
    assert frame["dice"].tolist()[:3] == [1, 0, 0]
    assert frame["iou"].tolist()[:3] == [1, 0, 0]
    assert frame["nsd"].tolist()[:3] == [1, 0, 0]
    assert frame["hd95"].tolist()[:3] == [0, diagonal, diagonal]
    assert frame.loc[3, "dice"] == pytest.approx(0.5) and frame.loc[3, "iou"] == pytest.approx(
        1 / 3
    )
    assert frame["precision"].isna().tolist() == [True, False, True, False]
    assert frame["recall"].isna().tolist() == [True, True, False, False]
    assert frame["area_error"].tolist() == [0, 1, -1, 0]


def test_nan_convention_blanks_every_metric_of_empty_targets():
    reloaded = per_image(*four_cases(), nsd_tolerance=TOL)
    nan = per_image(*four_cases(), nsd_tolerance=TOL, empty="nan")
    metrics = [c for c in COLUMNS if c not in ("gt_pixels", "pred_pixels", "tp", "fp", "fn", "tn")]
    metrics.remove("area_error")
    assert nan.loc[[0, 1], metrics].isna().all().all()
    pd.testing.assert_frame_equal(nan.loc[[2, 3]], reloaded.loc[[2, 3]])
    pd.testing.assert_frame_equal(nan.drop(columns=metrics), reloaded.drop(columns=metrics))


def test_torch_and_uint8_inputs_give_the_same_frame():
    pred, target = four_cases()
    expected = per_image(pred, target, nsd_tolerance=TOL)
    pd.testing.assert_frame_equal(
        per_image(torch.from_numpy(pred), torch.from_numpy(target), nsd_tolerance=TOL), expected
    )
    pd.testing.assert_frame_equal(
        per_image(pred.astype(np.uint8), target.astype(np.float32), nsd_tolerance=TOL),
        expected,
    )
    counts = confusion_counts(torch.from_numpy(pred), target)
    for k, v in counts.items():
        np.testing.assert_array_equal(v, expected[k])


@pytest.mark.parametrize(
    ("pred", "target", "kwargs", "message"),
    [
        (np.zeros((1, 4, 4)), np.zeros((1, 4, 5)), {}, "shapes differ"),
        (np.full((1, 4, 4), 2), np.zeros((1, 4, 4)), {}, "binary"),
        (np.full((1, 4, 4), 0.5), np.zeros((1, 4, 4)), {}, "binary"),
        (np.full((1, 4, 4), np.nan), np.zeros((1, 4, 4)), {}, "NaN"),
        (np.zeros((4, 4)), np.zeros((4, 4)), {}, r"\(N,H,W\)"),
        (np.zeros((1, 4, 4)), np.zeros((1, 4, 4)), {"empty": "ignore"}, "empty"),
        (np.zeros((1, 4, 4)), np.zeros((1, 4, 4)), {"spacing": (1.0, 0.0)}, "spacing"),
        (np.zeros((1, 4, 4)), np.zeros((1, 4, 4)), {"nsd_tolerance": -1.0}, "nsd_tolerance"),
    ],
)
def test_bad_input_is_a_value_error(pred, target, kwargs, message):
    with pytest.raises(ValueError, match=message):
        per_image(pred, target, **{"nsd_tolerance": TOL, **kwargs})


def test_count_formulas_and_conventions():
    np.testing.assert_allclose(dice_from_counts([0, 2, 0], [0, 2, 3], [0, 2, 0]), [1, 0.5, 0])
    np.testing.assert_allclose(iou_from_counts([0, 2], [0, 2], [0, 2]), [1, 1 / 3])
    assert np.isnan(dice_from_counts(0, 3, 0, empty="nan"))
    with pytest.raises(ValueError, match="empty"):
        iou_from_counts(1, 1, 1, empty="zero")


def labelled_frame() -> pd.DataFrame:
    """Two models; patient A has two tumour slices, patient B one tumour-free slice."""
    pred, target = four_cases()
    frame = per_image(pred[[3, 3, 0]], target[[3, 3, 0]], nsd_tolerance=TOL)
    frame.insert(0, "patient", ["A", "A", "B"])
    other = frame.copy()
    other.loc[2, ["fp", "tn"]] = [5, other.loc[2, "tn"] - 5]  # B now has false positives
    return pd.concat(
        [frame.assign(loss="bce", seed=0), other.assign(loss="dice", seed=0)], ignore_index=True
    )


def test_per_patient_pools_counts_and_keeps_models_apart():
    frame = labelled_frame()
    table = per_patient(frame)
    assert table[["loss", "seed", "patient"]].values.tolist() == [
        ["bce", 0, "A"],
        ["bce", 0, "B"],
        ["dice", 0, "A"],
        ["dice", 0, "B"],
    ]
    assert table["tp"].tolist() == [4, 0, 4, 0]
    assert table["dice"].tolist() == [0.5, 1.0, 0.5, 0.0]
    assert per_patient(frame, empty="nan")["dice"].isna().tolist() == [False, True, False, True]
    counts_only = frame.loc[frame["loss"] == "bce", ["patient", "tp", "fp", "fn", "tn"]]
    assert per_patient(counts_only)["dice"].tolist() == [0.5, 1.0]


def test_pooled_mean_per_image_and_false_positive_rate():
    frame = labelled_frame()
    assert pooled(frame)["dice"].tolist() == pytest.approx([0.5, 8 / 21])
    bce = frame[frame["loss"] == "bce"].drop(columns=["loss", "seed"])
    assert pooled(bce)["iou"].tolist() == pytest.approx([1 / 3])
    assert mean_per_image(bce, "dice") == pytest.approx(2 / 3)
    assert mean_per_image(bce, "dice", tumour_only=True) == pytest.approx(0.5)
    assert false_positive_rate(bce) == 0.0
    assert false_positive_rate(frame).tolist() == [0.0, 1.0]
    assert math.isnan(false_positive_rate(bce[bce["patient"] == "A"]))
