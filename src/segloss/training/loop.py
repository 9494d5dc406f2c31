"""The epoch loop: seeding, the learning-rate schedule, validation every ``val_every``
epochs (and after the last), best-Dice weights and early stopping. Epochs are reported
through a callback."""

from __future__ import annotations

import logging
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from segloss.config import TrainConfig
from segloss.training.divergence import NonFiniteLoss, check_diverged
from segloss.training.epoch import (
    InMemory,
    epoch_samples,
    evaluate_split,
    train_epoch,
    train_steps,
)

log = logging.getLogger(__name__)

EpochRow = dict[str, float]


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch; prefer deterministic kernels (warn where none exists)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS
    torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(True, warn_only=True)


def make_scheduler(
    optimizer: torch.optim.Optimizer, t: TrainConfig, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """The learning-rate schedule, stepped once per batch."""
    if t.scheduler == "onecycle":
        # OneCycleLR divides by zero when its warm-up ends on step 0 (pct_start * total_steps
        # == 1, e.g. 5 steps): give the warm-up two whole steps at least, where there is room.
        warmup = max(2, round(0.2 * total_steps))
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=t.lr,
            total_steps=total_steps,
            pct_start=warmup / total_steps if total_steps > warmup else 0.2,
        )
    if t.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=total_steps, eta_min=t.lr / 100
        )
    return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0)


def init_output_bias(model: nn.Module, masks: torch.Tensor) -> None:
    """Set the output bias to the logit of the tumour-pixel share (option, off by default)."""
    p = masks.float().mean().clamp(1e-4, 1 - 1e-4)
    head = model.segmentation_head[0]
    nn.init.constant_(head.bias, float(torch.logit(p)))


def run_epoch(
    model: nn.Module,
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    data: InMemory,
    t: TrainConfig,
    generator: torch.Generator,
    desc: str,
    show_bar: bool,
    validate: bool = True,
) -> EpochRow:
    """Train one epoch, validate (unless not ``validate``: its val columns are NaN), check for
    divergence; the epoch's row without its number (``history.csv``'s columns plus
    ``step_seconds``, which only the run records)."""
    tic = time.perf_counter()
    timer = {"step_seconds": 0.0}
    steps = train_steps(epoch_samples(len(data.x_train), t), t.batch_size)
    with tqdm(total=steps, desc=desc, unit="batch", disable=not show_bar) as bar:
        train_loss = train_epoch(
            model, loss_fn, optimizer, scheduler, data, t, generator, bar, timer
        )
        val = dict.fromkeys(("val_loss", "val_dice", "val_iou"), math.nan)
        if validate:
            val = evaluate_split(
                model, loss_fn, data.x_val, data.y_val, data.val_patients, t.val_batch_size
            )
            check_diverged(model, val)
        bar.set_postfix(loss=f"{train_loss:.4f}", val_dice=f"{val['val_dice']:.4f}")
    return {
        "train_loss": train_loss,
        **val,
        "lr": optimizer.param_groups[0]["lr"],
        "seconds": time.perf_counter() - tic,
        # the run only (history.csv keeps its columns): benchmarks/overhead.py reads it
        "step_seconds": timer["step_seconds"],
    }


@dataclass(frozen=True)
class Fitted:
    """What :func:`fit` returns: the history rows and the best validated epoch's weights."""

    history: list[EpochRow]
    best_state: dict[str, torch.Tensor]  # on the CPU
    best_epoch: int
    best_dice: float


def fit(
    model: nn.Module,
    loss_fn: nn.Module,
    data: InMemory,
    t: TrainConfig,
    generator: torch.Generator,
    label: str,
    on_epoch: Callable[[EpochRow], None],
    show_bar: bool = True,
) -> Fitted:
    """The epoch loop with validation every ``val_every`` epochs and after the last, best-Dice
    weights and early stopping (``patience`` counts epochs, validated or not).

    ``on_epoch(row)`` is told after every epoch. Without ``show_bar`` (a sweep's display
    shows progress) each epoch is logged as one line instead of drawing a progress bar.
    """
    steps = train_steps(epoch_samples(len(data.x_train), t), t.batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    scheduler = make_scheduler(optimizer, t, total_steps=t.epochs * steps)
    history: list[EpochRow] = []
    best_dice, best_epoch, best_state = -math.inf, 0, {}
    for epoch in range(1, t.epochs + 1):
        desc = f"{label} epoch {epoch}/{t.epochs}"
        try:
            validate = epoch % t.val_every == 0 or epoch == t.epochs
            row = {"epoch": epoch} | run_epoch(
                model, loss_fn, optimizer, scheduler, data, t, generator, desc, show_bar, validate
            )
        except NonFiniteLoss as exc:
            raise NonFiniteLoss(f"{label}, epoch {epoch}: {exc}") from None
        history.append(row)
        on_epoch(row)
        if not show_bar:
            log.info(
                "%s: loss %.4f, val Dice %.4f, %.1f s",
                desc, row["train_loss"], row["val_dice"], row["seconds"],
            )  # fmt: skip
        if row["val_dice"] > best_dice:
            best_dice, best_epoch = row["val_dice"], epoch
            best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        elif t.patience and epoch - best_epoch >= t.patience:
            log.info("%s: early stop at epoch %d", label, epoch)
            break
    return Fitted(history, best_state, best_epoch, best_dice)
