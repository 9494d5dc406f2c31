"""One epoch: the splits in memory, a pass over the shuffled training set, validation."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from segloss.config import TrainConfig
from segloss.data.prepared import load_split
from segloss.metrics import confusion_counts, per_patient
from segloss.models import preprocess
from segloss.training.augment import augment_batch
from segloss.training.divergence import NonFiniteLoss
from segloss.training.settings import autocast

SYNC_EVERY = 8  # training steps between reads of the loss (progress bar, NaN check)


def train_steps(n: int, batch_size: int) -> int:
    """Batches per epoch: the last incomplete batch is dropped unless it is the only one
    (BatchNorm needs more than one sample, and full batches keep the steps equal)."""
    return max(1, n // batch_size)


def epoch_samples(n_train: int, t: TrainConfig) -> int:
    """Training samples drawn per epoch: ``train.samples_per_epoch``, or every slice once."""
    return t.samples_per_epoch or n_train


def epoch_batches(
    masks: torch.Tensor, t: TrainConfig, generator: torch.Generator
) -> list[torch.Tensor]:
    """The batches of training-slice indices of one epoch.

    ``uniform``: every slice equally often (shuffled passes over the set, as the notebooks
    train). ``foreground``: slices drawn with replacement, with probability proportional to
    their tumour area for ``1 - uniform_share`` of the mass and uniform for the rest (Buda et
    al.'s sampler, 10 % uniform): tumour slices dominate the steps, tumour-free ones still
    teach the background. Falls back to uniform where no training slice has tumour.
    """
    n, batch = len(masks), t.batch_size
    samples = epoch_samples(n, t)
    size = min(train_steps(samples, batch) * batch, samples)  # whole batches, at least one
    area = masks.sum(dim=(1, 2), dtype=torch.float64).cpu()
    if t.sampling == "uniform" or area.sum() == 0:
        passes = [torch.randperm(n, generator=generator) for _ in range(-(-size // n))]
        order = torch.cat(passes)[:size]
    else:
        share = float(t.uniform_share)
        weights = share / n + (1 - share) * area / area.sum()
        order = torch.multinomial(weights, size, replacement=True, generator=generator)
    return list(order.split(batch))


@dataclass(frozen=True)
class InMemory:
    """Train and validation splits as uint8 tensors on the device (images NHWC, masks NHW)."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    val_patients: np.ndarray

    @classmethod
    def load(cls, prepared: str, device: torch.device, fold: int | None = None) -> InMemory:
        train, val = (
            load_split(prepared, split, mmap=False, fold=fold) for split in ("train", "val")
        )

        def put(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(a).to(device)

        return cls(
            put(train.images), put(train.masks), put(val.images), put(val.masks), val.patients
        )


def _targets(masks_uint8: torch.Tensor) -> torch.Tensor:
    return masks_uint8.unsqueeze(1).float()


def train_epoch(
    model: nn.Module,
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    data: InMemory,
    t: TrainConfig,
    generator: torch.Generator,
    bar: tqdm,
    timer: dict[str, float] | None = None,
) -> float:
    """One epoch of training steps (:func:`epoch_batches`); the mean batch loss.

    ``timer["step_seconds"]`` (if given) grows by the time spent in model steps (forward,
    loss, backward, optimizer and scheduler step): the rest of an epoch is batching,
    augmentation and bookkeeping. (On a GPU, kernels still queued are counted where the
    loop next waits for them.)
    """
    model.train()
    batches = epoch_batches(data.y_train, t, generator)
    total = torch.zeros((), device=data.x_train.device)
    for i, idx in enumerate(batches, 1):
        x, y = preprocess(data.x_train[idx]), _targets(data.y_train[idx])
        if t.augment.enabled:
            x, y = augment_batch(x, y, t.augment, generator)
        tic = time.perf_counter()
        with autocast(x.device, t.precision):
            logits = model(x)
        loss = loss_fn(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        total += loss.detach()
        if timer is not None:
            timer["step_seconds"] += time.perf_counter() - tic
        bar.update()
        # Reading the loss waits for the device: do it every few steps, not every step. A NaN
        # or inf stays in the running sum, so it is caught here within SYNC_EVERY steps.
        if i % SYNC_EVERY == 0 or i == len(batches):
            mean = total.item() / i
            if not math.isfinite(mean):
                raise NonFiniteLoss(
                    f"training loss became {mean}; lower train.lr or check the loss options"
                )
            bar.set_postfix(loss=f"{mean:.4f}", refresh=False)
    return mean


@torch.inference_mode()
def evaluate_split(
    model: nn.Module,
    loss_fn: nn.Module,
    images: torch.Tensor,
    masks: torch.Tensor,
    patients: np.ndarray,
    batch_size: int,
) -> dict[str, float]:
    """Validation loss and per-patient (pooled) Dice and IoU, averaged over patients."""
    model.eval()
    total, counts = 0.0, []
    for idx in torch.arange(len(images)).split(batch_size):
        logits = model(preprocess(images[idx]))
        total += float(loss_fn(logits, _targets(masks[idx]))) * len(idx)
        counts.append(confusion_counts(logits[:, 0] > 0, masks[idx] > 0))
    frame = pd.DataFrame(
        {"patient": patients, **{k: np.concatenate([c[k] for c in counts]) for k in counts[0]}}
    )
    volumes = per_patient(frame)
    return {
        "val_loss": total / len(images),
        "val_dice": float(volumes["dice"].mean()),
        "val_iou": float(volumes["iou"].mean()),
    }
