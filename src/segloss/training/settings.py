"""Training settings: the forward pass's precision, and the pre-flight checks of the prepared
data (the settings' ranges are the schema's, checked when the entry point builds them)."""

from __future__ import annotations

import contextlib

import torch

from segloss.config import Config
from segloss.data.prepared import fold_splits, load_meta
from segloss.fingerprint import Json

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}  # train.precision -> autocast dtype


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The model's forward pass in ``train.precision``: fp32 (nothing), or bf16 autocast on
    the device. Losses always compute in float32 (they turn autocast off themselves)."""
    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def preflight(settings: Config) -> Json:
    """The prepared data's ``meta.json``, checked to hold the job's fold (one error line
    before any work; the tracking store is checked by the caller that tracks the run). Run
    once per sweep before any job starts, and again by each job."""
    meta = load_meta(settings.paths.prepared)
    if settings.cv.fold is not None:
        fold_splits(meta, settings.cv.fold)
    return meta
