"""Training settings: the checks of ``train`` and ``tracking`` values, the forward pass's
precision, and the pre-flight checks that need no training."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Mapping
from typing import Any

import torch

from segloss.data.prepared import fold_splits, load_meta
from segloss.errors import ConfigError
from segloss.fingerprint import fold_of

SCHEDULERS = ("onecycle", "cosine", "constant")
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}  # train.precision -> autocast dtype


def _int_at_least(low: int) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= low


def _number(check: Callable[[float], bool]) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, int | float) and not isinstance(v, bool) and check(v)


# train.<key>: (valid?, what it must be)
TRAIN_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "epochs": (_int_at_least(1), "an integer >= 1"),
    "batch_size": (_int_at_least(1), "an integer >= 1"),
    "lr": (_number(lambda v: 0 < v < math.inf), "a number > 0"),
    "weight_decay": (_number(lambda v: v >= 0), "a number >= 0"),
    "patience": (lambda v: v is None or _int_at_least(1)(v), "an integer >= 1 or null"),
    "num_threads": (lambda v: v is None or _int_at_least(1)(v), "an integer >= 1 or null"),
    "scheduler": (lambda v: v in SCHEDULERS, f"one of {', '.join(SCHEDULERS)}"),
    "precision": (lambda v: v in PRECISIONS, f"one of {', '.join(PRECISIONS)}"),
}
# tracking.<key>: (valid?, what it must be)
TRACKING_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "system_metrics_interval": (
        lambda v: v is None or _number(lambda x: 0 < x < math.inf)(v),
        "a number of seconds > 0 or null",
    ),
}


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The model's forward pass in ``train.precision``: fp32 (nothing), or bf16 autocast on
    the device. Losses always compute in float32 (they turn autocast off themselves)."""
    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def check_config(cfg: Mapping[str, Any]) -> None:
    """Raise :class:`ConfigError` for out-of-range ``train`` settings, before any work."""
    for key, (valid, expected) in TRAIN_RULES.items():
        value = cfg["train"].get(key, "fp32" if key == "precision" else None)
        if not valid(value):
            raise ConfigError(f"train.{key} must be {expected}, got {value!r}")
    for key, (valid, expected) in TRACKING_RULES.items():
        value = (cfg.get("tracking") or {}).get(key)
        if not valid(value):
            raise ConfigError(f"tracking.{key} must be {expected}, got {value!r}")


def preflight(cfg: Mapping[str, Any]) -> dict:
    """Every check that needs no training: settings and prepared data (the tracking store is
    checked by the caller that tracks the run).

    Returns the prepared data's ``meta.json``. Run once per sweep before any job starts, and
    again by each job.
    """
    check_config(cfg)
    meta = load_meta(cfg["paths"]["prepared"])
    if fold_of(cfg) is not None:  # a fold the prepared data lacks: one line, before any work
        fold_splits(meta, fold_of(cfg))
    return meta
