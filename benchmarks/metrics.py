"""Time segloss.metrics against MONAI on the same random tumour-like masks, and check agreement.

    python benchmarks/metrics.py [--n 1000] [--size 128] [--seed 0]

Masks are irregular blobs covering ~2 % of the image (the LGG tumour fraction); each
prediction is its target's blob shifted, resized and re-roughened, so overlap is partial
and HD95/NSD are non-trivial. Ratios ``metrics_vs_monai`` are MONAI time / segloss time, so
higher is better and above 1 means segloss is faster (goal >= 1, with equal values).
``run()`` returns everything as a dict for ``benchmarks/run_all.py``.
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import torch
from monai.metrics import DiceMetric, HausdorffDistanceMetric, MeanIoU, SurfaceDiceMetric
from scipy import ndimage

from segloss.metrics import confusion_counts, dice_from_counts, iou_from_counts, per_image

NSD_TOLERANCE = 2.0
# Agreement demanded of segloss and MONAI (float32 inside MONAI bounds HD95/NSD to ~1e-6).
AGREEMENT = {"dice": 1e-6, "iou": 1e-6, "dice_per_image": 1e-6, "hd95": 1e-4, "nsd": 1e-4}


def blobs(
    rng: np.random.Generator, centres: np.ndarray, radii: np.ndarray, size: int
) -> np.ndarray:
    """Ellipses with rough, smoothed-noise borders: one boolean (size, size) mask per row."""
    n = len(centres)
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    dy = (yy[None] - centres[:, 0, None, None]) / radii[:, 0, None, None]
    dx = (xx[None] - centres[:, 1, None, None]) / radii[:, 1, None, None]
    noise = ndimage.gaussian_filter(rng.standard_normal((n, size, size)), sigma=(0, 3, 3))
    noise /= noise.std(axis=(1, 2), keepdims=True)
    return dy**2 + dx**2 + 0.25 * noise < 1.0


def mask_pairs(n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` (pred, target) pairs; targets cover ~2 % of a ``size`` x ``size`` image."""
    rng = np.random.default_rng(seed)
    radius = size * np.sqrt(0.02 / np.pi)  # a disc of this radius covers 2 %
    centres = rng.uniform(0.25 * size, 0.75 * size, (n, 2))
    radii = radius * rng.uniform(0.7, 1.4, (n, 2))
    target = blobs(rng, centres, radii, size)
    shift = rng.normal(0, radius / 3, (n, 2))
    pred = blobs(rng, centres + shift, radii * rng.uniform(0.8, 1.2, (n, 1)), size)
    return pred, target


def best_time(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """Fastest wall time of ``repeats`` calls, and the last call's result."""
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def segloss_overlap(pred: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    c = confusion_counts(pred, target)
    return dice_from_counts(c["tp"], c["fp"], c["fn"]), iou_from_counts(c["tp"], c["fp"], c["fn"])


def monai_overlap(p: torch.Tensor, t: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    kw = {"include_background": True, "reduction": "none", "ignore_empty": False}
    return DiceMetric(**kw)(p, t)[:, 0].numpy(), MeanIoU(**kw)(p, t)[:, 0].numpy()


def monai_hd95(p: torch.Tensor, t: torch.Tensor) -> np.ndarray:
    metric = HausdorffDistanceMetric(include_background=True, percentile=95, reduction="none")
    return metric(p, t)[:, 0].numpy()


def monai_nsd(p: torch.Tensor, t: torch.Tensor) -> np.ndarray:
    metric = SurfaceDiceMetric([NSD_TOLERANCE], include_background=True, reduction="none")
    return metric(p, t)[:, 0].numpy()


def run(n: int = 1000, size: int = 128, seed: int = 0, repeats: int = 3) -> dict[str, Any]:
    """Time both libraries on the same ``n`` pairs; return timings, ratios and max differences.

    segloss computes HD95 and NSD together in ``per_image`` (with every other column), so its
    full ``per_image`` time is set against MONAI's HD95 alone and NSD alone: a ratio above 1
    means faster even with that handicap.
    """
    pred, target = mask_pairs(n, size, seed)
    p = torch.from_numpy(pred)[:, None].float()
    t = torch.from_numpy(target)[:, None].float()
    seconds, values = {}, {}
    seconds["segloss_overlap"], values["overlap"] = best_time(
        lambda: segloss_overlap(pred, target), repeats
    )
    seconds["segloss_per_image"], frame = best_time(
        lambda: per_image(pred, target, nsd_tolerance=NSD_TOLERANCE), repeats
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MONAI warns on empty masks
        seconds["monai_overlap"], values["monai_overlap"] = best_time(
            lambda: monai_overlap(p, t), repeats
        )
        seconds["monai_hd95"], hd95 = best_time(lambda: monai_hd95(p, t), repeats)
        seconds["monai_nsd"], nsd = best_time(lambda: monai_nsd(p, t), repeats)
    both = pred.any(axis=(1, 2)) & target.any(axis=(1, 2))
    (dice, iou), (m_dice, m_iou) = values["overlap"], values["monai_overlap"]
    differences = {
        "dice": float(np.max(np.abs(dice - m_dice))),
        "iou": float(np.max(np.abs(iou - m_iou))),
        "dice_per_image": float(np.max(np.abs(frame["dice"] - m_dice))),
        "hd95": float(np.max(np.abs(frame["hd95"].to_numpy() - hd95)[both], initial=0.0)),
        "nsd": float(np.max(np.abs(frame["nsd"].to_numpy() - nsd)[both], initial=0.0)),
    }
    return {
        "n": n,
        "size": size,
        "seed": seed,
        "target_foreground": float(target.mean()),
        "pred_foreground": float(pred.mean()),
        "seconds": seconds,
        "metrics_vs_monai": {
            "overlap": seconds["monai_overlap"] / seconds["segloss_overlap"],
            "hd95": seconds["monai_hd95"] / seconds["segloss_per_image"],
            "nsd": seconds["monai_nsd"] / seconds["segloss_per_image"],
        },
        "max_abs_difference": differences,
        "disagree": [k for k, v in differences.items() if v > AGREEMENT[k]],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    result = run(args.n, args.size, args.seed, args.repeats)
    s, ratio = result["seconds"], result["metrics_vs_monai"]
    table = pd.DataFrame(
        [
            ("overlap (Dice, IoU)", s["segloss_overlap"], s["monai_overlap"], ratio["overlap"]),
            ("HD95", s["segloss_per_image"], s["monai_hd95"], ratio["hd95"]),
            ("NSD", s["segloss_per_image"], s["monai_nsd"], ratio["nsd"]),
        ],
        columns=["metric", "segloss s", "MONAI s", "MONAI / segloss"],
    )
    print(
        f"{result['n']} pairs of {result['size']}x{result['size']} masks, target foreground "
        f"{result['target_foreground']:.2%}, prediction {result['pred_foreground']:.2%}; "
        "segloss HD95/NSD rows time the whole per_image call"
    )
    print(table.to_markdown(index=False, floatfmt=".4f"))
    print(
        "max |segloss - MONAI|:", {k: f"{v:.2e}" for k, v in result["max_abs_difference"].items()}
    )
    if result["disagree"]:
        raise SystemExit(f"segloss and MONAI disagree on {', '.join(result['disagree'])}")


if __name__ == "__main__":
    main()
