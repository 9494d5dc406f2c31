"""Training settings: the forward pass's precision, and the pre-flight checks that need no
training (the settings' ranges are checked by the schema, :func:`segloss.config.validate`)."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

import torch

from segloss.config import validate
from segloss.data.prepared import fold_splits, load_meta
from segloss.fingerprint import fold_of

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}  # train.precision -> autocast dtype


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The model's forward pass in ``train.precision``: fp32 (nothing), or bf16 autocast on
    the device. Losses always compute in float32 (they turn autocast off themselves)."""
    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def preflight(cfg: Mapping[str, Any]) -> dict:
    """Every check that needs no training: settings and prepared data (the tracking store is
    checked by the caller that tracks the run).

    Returns the prepared data's ``meta.json``. Run once per sweep before any job starts, and
    again by each job.
    """
    validate(cfg)  # the schema's range checks (segloss.config), before any work
    meta = load_meta(cfg["paths"]["prepared"])
    if fold_of(cfg) is not None:  # a fold the prepared data lacks: one line, before any work
        fold_splits(meta, fold_of(cfg))
    return meta
