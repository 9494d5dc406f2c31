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
  number of steps per repeat, one such epoch as warm-up. One repeat runs right after each
  of the loop's epochs (from the loop's own per-epoch callback), so every timed epoch has a
  model-only repeat next to it in time.

``loop_efficiency`` is the median over the timed epochs of (model-only seconds / loop epoch
seconds) for the same images: pairing each epoch with the repeat beside it cancels a machine
that drifts while the benchmark runs (on this project's VM a fixed step ran 13 % slower half
a minute later, and repeats timed only after the loop gave 1.11). Goal >= 0.95. The loop does
strictly more work than the model-only step, so a ratio above ``SUSPECT_ABOVE`` (1.03) means
the baseline was measured wrong (or the machine was busy): the result then says
``baseline_suspect: true``. ``step_vs_model_only`` checks the baseline from inside: the
loop's own time in model steps (``step_seconds``, its forward/loss/backward/optimizer steps on
real batches) over the model-only repeat next to it; about 1 when the two steps are alike.
``step_share`` is that step time over its own epoch's time: the same figure as
``loop_efficiency`` measured within each epoch, so no drift between two timings enters it.
``bf16_speedup``: model-only images/s with ``train.precision=bf16`` over fp32.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from common import Bench, optimizer_step

from segloss.models import preprocess
from segloss.sweep.tracked import train
from segloss.training import seed_everything
from segloss.training.epoch import train_steps
from segloss.training.job import Progress


def timed_epochs(n: int) -> list[int]:
    """The epochs (1-based) whose times count: all but the first, the warm-up (if n > 1)."""
    return list(range(2, n + 1)) if n > 1 else [1]


def loop(bench: Bench, size: int, after_epoch: Progress | None = None) -> dict[str, Any]:
    """Run ``train()`` on a prepared folder at ``size``; images/s from its epoch times.
    ``after_epoch(epoch, epochs, row)`` is called after each epoch, outside its timing."""
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
    batch = cfg.train.batch_size
    if n_train % batch:
        raise ValueError(f"{n_train} training slices is not a multiple of batch size {batch}")
    outside = [0.0]  # seconds in after_epoch: not the run's

    def timed_after_epoch(epoch: int, epochs: int, row: Mapping[str, float]) -> None:
        tic = time.perf_counter()
        after_epoch(epoch, epochs, row)
        outside[0] += time.perf_counter() - tic

    start = time.perf_counter()
    summary = train(cfg, progress=timed_after_epoch if after_epoch else None)
    wall = time.perf_counter() - start - outside[0]
    epochs = pd.read_csv(Path(summary.model_path).parent / "history.csv")["seconds"]
    timed = [epochs.iloc[e - 1] for e in timed_epochs(len(epochs))]
    return {
        "image_size": size,
        "batch_size": batch,
        "train_slices": n_train,
        "val_slices": sizes.eval_slices,
        "epoch_seconds": epochs.tolist(),
        "images_per_s": n_train / statistics.median(timed),
        "run_seconds": wall,
        "run_overhead_s": wall - float(epochs.sum()),
        "model_path": summary.model_path,
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
        self.batch = cfg.train.batch_size
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


def run(bench: Bench, loop_result: Callable[[Progress], dict[str, Any]]) -> dict[str, Any]:
    """Model-only at the loop's image size and steps, one repeat after each loop epoch (each
    timed epoch paired with the repeat beside it); bf16 against fp32."""
    sizes = bench.sizes
    size = sizes.image_sizes[0]
    limit = ModelOnly(bench, size, sizes.train_slices[size])
    beside: dict[int, tuple[float, float]] = {}  # epoch -> (its step_seconds, model-only s)

    def after_epoch(epoch: int, epochs: int, row: Mapping[str, float]) -> None:
        beside[epoch] = (row["step_seconds"], limit.repeat(1)[0])

    looped = loop_result(after_epoch)
    timed = timed_epochs(len(looped["epoch_seconds"]))
    epoch_s = [looped["epoch_seconds"][e - 1] for e in timed]
    step_s = [beside[e][0] for e in timed]
    model_s = [beside[e][1] for e in timed]
    fp32 = limit.result(model_s)
    bf16 = ModelOnly(bench, size, sizes.train_slices[size], precision="bf16")
    bf16_result = bf16.result(bf16.repeat(len(model_s)))
    ratios = [m / e for m, e in zip(model_s, epoch_s, strict=True)]  # loop / model-only rate
    efficiency = statistics.median(ratios)
    return {
        "loop": looped,
        "model_only": fp32,
        "model_only_bf16": bf16_result,
        "loop_efficiency": efficiency,
        "epoch_ratios": ratios,
        "step_vs_model_only": statistics.median(
            s / m for s, m in zip(step_s, model_s, strict=True)
        ),
        "step_share": statistics.median(s / e for s, e in zip(step_s, epoch_s, strict=True)),
        "baseline_suspect": efficiency > SUSPECT_ABOVE,
        "bf16_speedup": bf16_result["images_per_s"] / fp32["images_per_s"],
    }
