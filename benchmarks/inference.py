"""Evaluation throughput: inference + every per-image metric against inference alone.

``inference``: :func:`segloss.evaluation.inference.predict_probabilities` over a test split at the
eval config's batch size; ``evaluation``: the same plus thresholding and
:func:`segloss.evaluation.tables.score` (``segloss.metrics.per_image``: overlap, HD95, NSD, ...).
``eval_vs_inference = evaluation / inference`` (1 = metrics cost nothing).
The model is a trained checkpoint (``--checkpoint``, else the default sweep's from ``make run``,
else the loop benchmark's), so the masks scored look like predictions rather than noise.
A second table times the forward pass alone per batch size with and without channels_last
(model weights and input alike).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import REPO, Bench, median_rate

from segloss import scoring
from segloss.data.prepared import load_meta, load_split
from segloss.evaluation.inference import predict_probabilities
from segloss.evaluation.tables import score
from segloss.models import load_checkpoint, preprocess


def _forward_rate(
    bench: Bench, model: torch.nn.Module, images: np.ndarray, batch_size: int, layout
) -> dict[str, Any]:
    """Images/s of ``model`` on ``images`` split into batches already turned into input."""
    model.to(memory_format=layout)
    batches = [
        preprocess(torch.from_numpy(images[i : i + batch_size])).contiguous(memory_format=layout)
        for i in range(0, len(images), batch_size)
    ]

    @torch.inference_mode()
    def run_steps(n: int) -> None:
        for _ in range(n):
            for x in batches:
                model(x)

    return median_rate(run_steps, len(images), 1, 1, bench.sizes.repeats)


def trained_model(bench: Bench) -> Path | None:
    """``models/<default loss>/seed0/model.pt`` of the repository, if ``make run`` made it."""
    cfg = bench.config()
    path = REPO / cfg.paths.models / cfg.loss.name / "seed0" / "model.pt"
    return path if path.is_file() else None


def run(bench: Bench, checkpoint: Path) -> dict[str, Any]:
    sizes = bench.sizes
    settings = bench.config().eval
    model, state = load_checkpoint(checkpoint)
    size = int(state["data"]["image_size"])
    prepared = bench.prepared(size, sizes.eval_slices, sizes.eval_slices, sizes.inference_images)
    split = load_split(prepared, "test", mmap=False)
    units = scoring.units(load_meta(prepared), settings.nsd_tolerance)
    device = torch.device("cpu")

    def infer() -> np.ndarray:
        return predict_probabilities(model, split.images, settings.batch_size, device)

    def inference(n: int) -> None:
        for _ in range(n):
            infer()

    def evaluation(n: int) -> None:
        for _ in range(n):
            score(infer() >= settings.threshold, split, units)

    n, repeats = len(split.images), sizes.repeats
    only = median_rate(inference, n, 1, 1, repeats)
    full = median_rate(evaluation, n, 1, 0, repeats)
    predicted = infer() >= settings.threshold
    layouts = [
        {
            "channels_last": layout is torch.channels_last,
            "batch_size": batch_size,
            **_forward_rate(bench, model, split.images, batch_size, layout),
        }
        for layout in (torch.channels_last, torch.contiguous_format)
        for batch_size in sizes.inference_batch_sizes
    ]
    return {
        "checkpoint": str(checkpoint),
        "image_size": size,
        "images": n,
        "batch_size": settings.batch_size,
        "pred_foreground": float(predicted.mean()),
        "target_foreground": float(split.masks.mean()),
        "inference": only,
        "evaluation": full,
        "eval_vs_inference": full["images_per_s"] / only["images_per_s"],
        "forward_by_layout": layouts,
    }
