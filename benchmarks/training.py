"""Training throughput: segloss's own loop against the model-only limit.

* ``loop``: :func:`segloss.training.train` itself (config from conf/, augmentation on, the
  MLflow run logged to a temporary SQLite store; only ``log_model`` is off) on a prepared
  folder, for a few epochs. Throughput is the training images of one epoch over the median
  of the epoch times the loop writes to ``history.csv`` (epoch 1, the warm-up, left out);
  an epoch's time includes its validation pass, so the val split is kept to a few slices.
  What the run spends outside its epochs (data load, model build, MLflow run, checkpoint)
  is reported as ``run_overhead_s``.
* ``model_only``: the same model, loss, batch size, threads and AdamW step on one random
  batch already in memory as model input.

``loop_efficiency = loop / model_only`` (goal >= 0.95).
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from common import Bench, median_rate, optimizer_step

from segloss.models import preprocess
from segloss.training import seed_everything, train


def loop(bench: Bench, size: int) -> dict[str, Any]:
    """Run ``train()`` on a prepared folder at ``size``; images/s from its epoch times."""
    sizes = bench.sizes
    n_train = sizes.train_slices[size]
    prepared = bench.prepared(size, n_train, sizes.eval_slices, sizes.eval_slices)
    cfg = bench.config(
        [
            f"paths.prepared={prepared}",
            f"paths.models={bench.work / f'models_loop_{size}'}",
            f"train.epochs={sizes.loop_epochs}",
            f"train.num_threads={bench.threads}",
        ]
    )
    batch = cfg["train"]["batch_size"]
    if n_train % batch:
        raise ValueError(f"{n_train} training slices is not a multiple of batch size {batch}")
    start = time.perf_counter()
    summary = train(cfg)
    wall = time.perf_counter() - start
    epochs = pd.read_csv(Path(summary["model_path"]).parent / "history.csv")["seconds"]
    timed = epochs.iloc[1:] if len(epochs) > 1 else epochs
    return {
        "image_size": size,
        "batch_size": batch,
        "train_slices": n_train,
        "val_slices": sizes.eval_slices,
        "epoch_seconds": epochs.tolist(),
        "images_per_s": n_train / statistics.median(timed),
        "run_seconds": wall,
        "run_overhead_s": wall - float(epochs.sum()),
        "model_path": summary["model_path"],
    }


def model_only(bench: Bench, size: int) -> dict[str, Any]:
    """Optimizer steps on one random batch of model input: the limit for the loop."""
    cfg = bench.config()
    batch = cfg["train"]["batch_size"]
    seed_everything(0)  # the loop's global torch settings (deterministic algorithms)
    step = optimizer_step(cfg)
    generator = torch.Generator().manual_seed(0)
    x = preprocess(torch.randint(0, 256, (batch, size, size, 3), generator=generator).byte())
    y = (torch.rand(batch, 1, size, size, generator=generator) < 0.02).float()

    def run_steps(n: int) -> None:
        for _ in range(n):
            step(x, y)

    sizes = bench.sizes
    result = median_rate(run_steps, batch, sizes.steps[size], sizes.warmup_steps, sizes.repeats)
    return {"image_size": size, "batch_size": batch, **result}


def run(bench: Bench, loop_result: dict[str, Any]) -> dict[str, Any]:
    """Model-only at the loop's image size; the loop's result is measured by the caller."""
    limit = model_only(bench, loop_result["image_size"])
    return {
        "loop": loop_result,
        "model_only": limit,
        "loop_efficiency": loop_result["images_per_s"] / limit["images_per_s"],
    }
