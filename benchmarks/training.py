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
  number of steps per repeat, one such epoch as warm-up, as many repeats as the loop has
  timed epochs (5 in ``make bench``) just before the loop and as many just after it, the
  median of all. Timing both sides cancels a machine that drifts while the loop runs (on
  this project's VM a fixed step ran 13 % slower half a minute later; timed only after the
  loop, the ratio came out 1.11). ``drift`` is the after/before ratio of medians.

``loop_efficiency = loop / model_only`` (goal >= 0.95). The loop does strictly more work than
the model-only step, so a ratio above ``SUSPECT_ABOVE`` (1.03) means the baseline was measured
wrong (or the machine was busy): the result then says ``baseline_suspect: true``.
``bf16_speedup``: model-only images/s with ``train.precision=bf16`` over fp32.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from common import Bench, optimizer_step

from segloss.models import preprocess
from segloss.sweep.tracked import train
from segloss.training import seed_everything
from segloss.training.epoch import train_steps


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


class ModelOnly:
    """Optimizer steps on one random batch of model input: the limit for the loop.

    Built with the loop's thread count and precision; ``steps`` are the loop's per epoch of
    ``n_train`` images (:func:`segloss.training.epoch.train_steps`). Warmed up with one
    repeat of ``steps`` (the loop's untimed first epoch); :meth:`repeat` times repeats.
    """

    def __init__(self, bench: Bench, size: int, n_train: int, precision: str = "fp32") -> None:
        cfg = bench.config([f"train.precision={precision}"])
        self.size, self.precision = size, precision
        self.batch = cfg["train"]["batch_size"]
        self.steps = train_steps(n_train, self.batch)
        seed_everything(0)  # the loop's global torch settings (deterministic algorithms)
        torch.set_num_threads(bench.threads)
        self._step = optimizer_step(cfg)
        generator = torch.Generator().manual_seed(0)
        self._x = preprocess(
            torch.randint(0, 256, (self.batch, size, size, 3), generator=generator).byte()
        )
        self._y = (torch.rand(self.batch, 1, size, size, generator=generator) < 0.02).float()
        self.repeat(1)

    def repeat(self, repeats: int) -> list[float]:
        """Seconds of each of ``repeats`` repeats of ``steps`` optimizer steps."""
        seconds = []
        for _ in range(repeats):
            start = time.perf_counter()
            for _ in range(self.steps):
                self._step(self._x, self._y)
            seconds.append(time.perf_counter() - start)
        return seconds

    def result(self, seconds: list[float]) -> dict[str, Any]:
        rate = self.batch * self.steps / statistics.median(seconds)
        return {
            "image_size": self.size,
            "batch_size": self.batch,
            "precision": self.precision,
            "images_per_s": rate,
            "seconds": seconds,
            "steps": self.steps,
        }


def run(bench: Bench, loop_result: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Model-only at the loop's image size and steps, timed before and after the loop (the
    limit is the median of both halves, so a machine that speeds up or slows down while
    the loop runs does not bias the ratio); bf16 against fp32."""
    sizes = bench.sizes
    size = sizes.image_sizes[0]
    repeats = max(1, sizes.loop_epochs - 1)  # as many as the loop's timed epochs
    limit = ModelOnly(bench, size, sizes.train_slices[size])
    before = limit.repeat(repeats)
    looped = loop_result()
    after = limit.repeat(repeats)
    fp32 = limit.result(before + after)
    bf16 = ModelOnly(bench, size, sizes.train_slices[size], precision="bf16")
    bf16_result = bf16.result(bf16.repeat(2 * repeats))
    efficiency = looped["images_per_s"] / fp32["images_per_s"]
    return {
        "loop": looped,
        "model_only": fp32 | {"drift": statistics.median(after) / statistics.median(before)},
        "model_only_bf16": bf16_result,
        "loop_efficiency": efficiency,
        "baseline_suspect": efficiency > SUSPECT_ABOVE,
        "bf16_speedup": bf16_result["images_per_s"] / fp32["images_per_s"],
    }
