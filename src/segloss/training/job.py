"""One training job: one U-Net for one (loss, seed[, fold]), from config to ``model.pt``.

What the run records is the caller's business: :func:`train` tells a :data:`Tracker` when
the job starts, after every epoch and when the model is trained, and writes into the
checkpoint the ids the tracker returns. Without one nothing is recorded.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd
import torch
from torch import nn

from segloss.config import Config, plain
from segloss.data.prepared import fold_splits
from segloss.fingerprint import (
    STAMP,
    Json,
    TrainSummary,
    factor_level,
    fingerprint,
    fingerprint_hash,
    output_dir,
    write_stamp,
)
from segloss.io import write_csv
from segloss.losses import build_loss
from segloss.models import build_model, preprocess, resolve_device, reusable, save_checkpoint
from segloss.training.divergence import NonFiniteLoss
from segloss.training.epoch import InMemory
from segloss.training.loop import EpochRow, fit, init_output_bias, seed_everything
from segloss.training.settings import preflight

log = logging.getLogger(__name__)

HISTORY_COLUMNS = ["epoch", "train_loss", "val_loss", "val_dice", "val_iou", "lr", "seconds"]
DATA_KEYS = ("image_size", "data_hash", "splits", "source")
Progress = Callable[[int, int, Mapping[str, float]], None]  # (epoch, epochs, row)


@dataclass(frozen=True)
class Job:
    """One model to train: its settings, the prepared data's ``meta.json`` and the
    fingerprint that decides reuse."""

    settings: Config
    meta: Json

    @cached_property
    def fingerprint(self) -> Json:
        return fingerprint(self.settings, self.meta)

    @cached_property
    def fingerprint_hash(self) -> str:
        return fingerprint_hash(self.fingerprint)

    @property
    def loss(self) -> str:
        return self.settings.loss.name

    @property
    def seed(self) -> int:
        return self.settings.seed

    @property
    def fold(self) -> int | None:
        return self.settings.cv.fold

    @property
    def out(self) -> Path:
        return output_dir(self.settings)

    @property
    def label(self) -> str:
        """``loss bce, seed 0, fold 1`` (``, sampling uniform`` with a second factor)."""
        level = factor_level(self.settings)
        return (
            f"loss {self.loss}, seed {self.seed}"
            + ("" if self.fold is None else f", fold {self.fold}")
            + ("" if level is None else f", {' '.join(level)}")
        )


@dataclass(frozen=True)
class Trained:
    """What a job produced, for its tracker to record before ``model.pt`` is written."""

    model: nn.Module  # the best validation Dice's weights, on the CPU, in eval mode
    example: np.ndarray  # two preprocessed validation images (the logged model's example)
    history: list[EpochRow]  # history.csv's rows, plus ``step_seconds``
    history_path: Path
    best_epoch: int
    best_val_dice: float
    seconds: float


class Recorder(Protocol):
    """A job's record while it runs (an MLflow run, in ``segloss.sweep.tracked``)."""

    def epoch(self, row: EpochRow) -> None:
        """After every epoch."""

    def trained(self, result: Trained) -> dict[str, str | None]:
        """Once trained, before ``model.pt``: the checkpoint's run ids (``models.RUN_KEYS``)."""


# A job's record from start (after the model is built) to end (after ``model.pt``): the
# context ends with the job's exception, if any (diverged, interrupted).
Tracker = Callable[[Job], contextlib.AbstractContextManager[Recorder]]


class _Untracked:
    def epoch(self, row: EpochRow) -> None:
        pass

    def trained(self, result: Trained) -> dict[str, str | None]:
        return {}


@contextlib.contextmanager
def untracked(job: Job) -> Iterator[Recorder]:
    """The :data:`Tracker` that records nothing."""
    yield _Untracked()


def input_example(images: torch.Tensor) -> np.ndarray:
    """Two preprocessed validation images, float32 NCHW: the logged model's input example
    (two, so the exported graph keeps the batch size dynamic)."""
    batch = images[:2].cpu()
    if len(batch) < 2:
        batch = batch.repeat(2, 1, 1, 1)[:2]
    return preprocess(batch).contiguous().numpy()


def remove_outputs(out: Path) -> None:
    """Delete a (loss, seed)'s ``model.pt``, ``history.csv`` and ``fingerprint.json`` (and the
    folder if empty)."""
    for name in ("model.pt", "history.csv", STAMP):
        (out / name).unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        out.rmdir()


@dataclass(frozen=True)
class _Parts:
    """A job's model, loss, data in memory and random generator, built before its record."""

    model: nn.Module
    loss_fn: nn.Module
    data: InMemory
    generator: torch.Generator


def _build(job: Job) -> _Parts:
    """Threads, device and seeds set; the data loaded; the model and loss built."""
    settings, t = job.settings, job.settings.train
    if t.num_threads:
        torch.set_num_threads(t.num_threads)
    device = resolve_device(t.device)
    seed_everything(job.seed)
    data = InMemory.load(settings.paths.prepared, device, job.fold)
    model = build_model(settings.model).to(device)
    if t.init_output_bias:
        init_output_bias(model, data.y_train)
    loss_fn = build_loss(settings.loss).to(device)
    return _Parts(model, loss_fn, data, torch.Generator().manual_seed(job.seed))


def _fit_and_save(
    job: Job, parts: _Parts, recorder: Recorder, progress: Progress | None, started: float
) -> tuple[Trained, dict[str, str | None]]:
    """Train, write ``history.csv``, let the recorder record, then write ``model.pt``."""
    t, model = job.settings.train, parts.model

    def on_epoch(row: EpochRow) -> None:
        recorder.epoch(row)
        if progress is not None:
            progress(row["epoch"], t.epochs, row)

    fitted = fit(
        model, parts.loss_fn, parts.data, t, parts.generator, job.label, on_epoch,
        show_bar=progress is None,
    )  # fmt: skip
    write_csv(pd.DataFrame(fitted.history, columns=HISTORY_COLUMNS), job.out / "history.csv")
    model.load_state_dict(fitted.best_state)
    trained = Trained(
        model=model.cpu().eval(),
        example=input_example(parts.data.x_val),
        history=fitted.history,
        history_path=job.out / "history.csv",
        best_epoch=fitted.best_epoch,
        best_val_dice=fitted.best_dice,
        seconds=time.perf_counter() - started,
    )
    runs = recorder.trained(trained)
    record = {
        "config": plain(job.settings),
        # with cross-validation, ``splits`` are this fold's train/val/test patients
        "data": {k: job.meta.get(k) for k in DATA_KEYS}
        | {"splits": fold_splits(job.meta, job.fold), "fold": job.fold},
        "best_epoch": fitted.best_epoch,
        "best_val_dice": fitted.best_dice,
        "fingerprint": job.fingerprint,
        "fingerprint_hash": job.fingerprint_hash,
    }
    # model.pt last: it marks the (loss, seed) done, so a job killed anywhere before this
    # rename leaves no model.pt and is retrained, never reused.
    save_checkpoint(job.out / "model.pt", fitted.best_state, record, runs)
    return trained, runs


def train(
    settings: Config,
    *,
    meta: Json | None = None,
    tracker: Tracker = untracked,
    progress: Progress | None = None,
) -> TrainSummary:
    """Train one model for ``settings.loss`` and ``settings.seed``.

    ``meta``: the prepared data's ``meta.json`` where the caller has run :func:`preflight`
    (else it runs here). ``tracker`` records the job (:data:`Tracker`);
    ``progress(epoch, epochs, row)`` (a sweep's display) replaces the progress bar. With
    ``train.reuse`` (default) an existing ``model.pt`` trained from the same fingerprint is
    kept and nothing is trained or recorded (the summary says ``reused``). Raises
    ``MissingPreparedData`` (or a fold the data lacks) before any work, and
    :class:`NonFiniteLoss` naming loss, seed and epoch if training diverges (no ``model.pt``
    is then left for this loss and seed).
    """
    job = Job(settings, preflight(settings) if meta is None else meta)
    out, fp_hash = job.out, job.fingerprint_hash
    if settings.train.reuse and (summary := reusable(out, fp_hash)):
        log.info("%s: %s is up to date (same config, data and code); reused", job.label, out)
        if not (out / STAMP).is_file():  # next time decided without loading the model
            write_stamp(out, fp_hash, summary)
        return summary
    parts = _build(job)
    started = time.perf_counter()
    try:
        with tracker(job) as recorder:
            trained, runs = _fit_and_save(job, parts, recorder, progress, started)
    except NonFiniteLoss:
        # A diverged model is never a result: an older one of this (loss, seed) goes too.
        remove_outputs(out)
        raise
    log.info(
        "%s: best val Dice %.4f at epoch %d, %.1f s -> %s",
        job.label, trained.best_val_dice, trained.best_epoch, trained.seconds, out / "model.pt",
    )  # fmt: skip
    summary = TrainSummary(
        loss=job.loss,
        seed=job.seed,
        fold=job.fold,
        best_epoch=trained.best_epoch,
        best_val_dice=trained.best_val_dice,
        epochs_run=len(trained.history),
        model_path=str(out / "model.pt"),
        mlflow_run_id=runs.get("mlflow_run_id"),
        seconds=trained.seconds,
    )
    # after model.pt: a stamp without its model, or beside another one, is never believed
    write_stamp(out, fp_hash, summary)
    return summary
