"""Training throughput: segloss's own loop against the model-only limit, measured alike.

* ``loop``: :func:`segloss.sweep.tracked.train` itself (config from conf/, augmentation on,
  the MLflow run logged to a temporary SQLite store; only ``log_model`` is off) on a prepared
  folder, for a few epochs. Throughput is the training images of one epoch over the median
  of the epoch times the loop writes to ``history.csv`` (epoch 1, the warm-up, left out);
  an epoch's time includes its validation pass, so the val split is kept to a few slices.
  What the run spends outside its epochs (data load, model build, MLflow run, checkpoint)
  is reported as ``run_overhead_s``.
* ``model_only``: the same model, loss, batch size, threads, precision and AdamW step on one
  random batch already in memory as model input, timed the way the loop is: one epoch's
  number of steps per repeat, one such epoch as warm-up, the median of as many repeats as the
  loop has timed epochs (>= 3 in ``make bench``).

``loop_efficiency = loop / model_only`` (goal >= 0.95). The loop does strictly more work than
the model-only step, so a ratio above ``SUSPECT_ABOVE`` (1.03) means the baseline was measured
wrong (or the machine was busy): the result then says ``baseline_suspect: true``.
``bf16_speedup``: model-only images/s with ``train.precision=bf16`` over fp32.
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
from segloss.sweep.tracked import train
from segloss.training import seed_everything


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


SUSPECT_ABOVE = 1.03


def model_only(
    bench: Bench, size: int, steps: int, repeats: int, precision: str = "fp32"
) -> dict[str, Any]:
    """Optimizer steps on one random batch of model input: the limit for the loop.

    ``steps`` per repeat and one warm-up of ``steps`` (the loop's epoch and its first,
    untimed epoch), the median of ``repeats``; the loop's thread count and precision.
    """
    cfg = bench.config([f"train.precision={precision}"])
    batch = cfg["train"]["batch_size"]
    seed_everything(0)  # the loop's global torch settings (deterministic algorithms)
    torch.set_num_threads(bench.threads)
    step = optimizer_step(cfg)
    generator = torch.Generator().manual_seed(0)
    x = preprocess(torch.randint(0, 256, (batch, size, size, 3), generator=generator).byte())
    y = (torch.rand(batch, 1, size, size, generator=generator) < 0.02).float()

    def run_steps(n: int) -> None:
        for _ in range(n):
            step(x, y)

    result = median_rate(run_steps, batch, steps, steps, repeats)
    return {"image_size": size, "batch_size": batch, "precision": precision, **result}


def run(bench: Bench, loop_result: dict[str, Any]) -> dict[str, Any]:
    """Model-only at the loop's image size, steps and repeats; bf16 against fp32."""
    batch = loop_result["batch_size"]
    steps = loop_result["train_slices"] // batch
    repeats = max(1, len(loop_result["epoch_seconds"]) - 1)
    limit = model_only(bench, loop_result["image_size"], steps, repeats)
    bf16 = model_only(bench, loop_result["image_size"], steps, repeats, precision="bf16")
    efficiency = loop_result["images_per_s"] / limit["images_per_s"]
    return {
        "loop": loop_result,
        "model_only": limit,
        "model_only_bf16": bf16,
        "loop_efficiency": efficiency,
        "baseline_suspect": efficiency > SUSPECT_ABOVE,
        "bf16_speedup": bf16["images_per_s"] / limit["images_per_s"],
    }
