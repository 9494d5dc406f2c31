"""Divergence: a NaN or infinite loss, or non-finite weights, ends a job with one message."""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import nn

from segloss.errors import SeglossError


class NonFiniteLoss(SeglossError):
    """Training diverged: the training or validation loss, or a weight, became NaN or infinite.

    The job's run ends FAILED with this message as its ``reason`` tag, and no ``model.pt`` is
    left for that (loss, seed): an older one is removed, so evaluation never scores it.
    """


def non_finite_weights(model: nn.Module) -> list[str]:
    """Names of parameters and buffers holding NaN or inf (BatchNorm statistics included)."""
    return [
        name
        for name, value in model.state_dict().items()
        if value.is_floating_point() and not bool(torch.isfinite(value).all())
    ]


def check_diverged(model: nn.Module, val: Mapping[str, float]) -> None:
    """Raise :class:`NonFiniteLoss` if validation or the weights show divergence."""
    if not math.isfinite(val["val_loss"]):
        raise NonFiniteLoss(
            f"validation loss became {val['val_loss']}; lower train.lr or check the loss options"
        )
    if bad := non_finite_weights(model):
        raise NonFiniteLoss(
            f"weights became non-finite ({len(bad)} tensors, e.g. {bad[0]}); lower train.lr"
        )
