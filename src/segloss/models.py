"""Models: build the model a config's ``_target_`` names (an smp U-Net), turn stored pixels
into model input, and the checkpoint format, saved and loaded here side by side.

Ground floor: knows nothing of Hydra. ``preprocess`` is the ONE place that converts stored
uint8 NHWC pixels into float model input; training, evaluation and benchmarks all call it.
``model.pt`` (format in docs/architecture.md) is written by :func:`save_checkpoint` only and
read by :func:`load_checkpoint` (a usable model) or :func:`reusable` (is it up to date?).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd
import segmentation_models_pytorch as smp
import torch
from torch import nn

from segloss.config import ModelConfig, from_mapping
from segloss.errors import ConfigError, DataError, first_line
from segloss.fingerprint import TrainSummary
from segloss.io import atomic_path

log = logging.getLogger(__name__)

IN_CHANNELS = 3
CLASSES = 1
# The MLflow ids a checkpoint always has (None when untracked); ``mlflow_model_id`` only when
# a model was logged.
RUN_KEYS = ("mlflow_run_id", "mlflow_parent_run_id")


def smp_model(
    *,
    arch: str,
    encoder_name: str,
    encoder_weights: str | None,
    encoder_depth: int,
    decoder_channels: Sequence[int],
) -> nn.Module:
    """smp's ``arch`` model (Unet, ...) with 3 input channels and 1 output logit, in
    channels_last memory format; ``encoder_weights`` None is a random init (no download)."""
    if arch.lower() not in smp.MODEL_ARCHITECTURES_MAPPING:
        choices = ", ".join(cls.__name__ for cls in smp.MODEL_ARCHITECTURES_MAPPING.values())
        raise ConfigError(f"model.arch={arch!r} is not an smp architecture; choices: {choices}")
    model = smp.create_model(
        arch,
        encoder_name=encoder_name,
        encoder_weights=encoder_weights,
        in_channels=IN_CHANNELS,
        classes=CLASSES,
        encoder_depth=encoder_depth,
        decoder_channels=tuple(decoder_channels),
    )
    return model.to(memory_format=torch.channels_last)


# The functions a ``model._target_`` may name (a checkpoint's too: nothing else is called).
MODELS = {f"{__name__}.{f.__name__}": f for f in (smp_model,)}


def build_model(settings: ModelConfig) -> nn.Module:
    """The model ``settings._target_`` names (:data:`MODELS`), built with the other settings
    (less ``name``, which labels the option) as its arguments."""
    target = settings._target_
    if target not in MODELS:
        raise ConfigError(
            f"model._target_ {target!r} is not a known model; known: {', '.join(MODELS)}"
        )
    # The function itself, not hydra.utils.instantiate: that wraps a ConfigError (an unknown
    # arch) in an InstantiationException, losing the one-line error, and would call whatever
    # a checkpoint names.
    options = dataclasses.asdict(settings)
    options = {k: v for k, v in options.items() if k not in ("name", "_target_")}
    return MODELS[target](**options)


def preprocess(x_uint8_nhwc: torch.Tensor) -> torch.Tensor:
    """uint8 (N,H,W,3) -> float32 (N,3,H,W) in [0, 1], channels_last memory format.

    The permute of an NHWC tensor already has channels_last strides, so no copy is made
    beyond the dtype conversion.
    """
    if x_uint8_nhwc.dtype != torch.uint8 or x_uint8_nhwc.ndim != 4:
        raise ValueError(
            f"preprocess expects a uint8 (N,H,W,3) tensor, got {x_uint8_nhwc.dtype} "
            f"{tuple(x_uint8_nhwc.shape)}"
        )
    x = x_uint8_nhwc.permute(0, 3, 1, 2).float().div_(255.0)
    return x.contiguous(memory_format=torch.channels_last)


def resolve_device(name: str = "auto") -> torch.device:
    """``auto``: CUDA where available, else CPU; any other name is passed to torch."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def save_checkpoint(
    path: Path,
    state_dict: Mapping[str, torch.Tensor],
    summary: Mapping[str, object],
    runs: Mapping[str, str | None],
) -> None:
    """Write ``model.pt`` atomically: ``state_dict``, then ``summary``'s ``config``, ``data``,
    ``best_epoch``, ``best_val_dice``, ``fingerprint``, ``fingerprint_hash``, with the run ids
    (``runs``: :data:`RUN_KEYS`, and ``mlflow_model_id`` if a model was logged) among them."""
    checkpoint = {
        "state_dict": state_dict,
        **{k: summary[k] for k in ("config", "data", "best_epoch", "best_val_dice")},
        **{k: runs.get(k) for k in RUN_KEYS},
        **{k: summary[k] for k in ("fingerprint", "fingerprint_hash")},
        **{k: v for k, v in runs.items() if k not in RUN_KEYS},
    }
    with atomic_path(path) as tmp:
        torch.save(checkpoint, tmp)


def reusable(out: Path, fp_hash: str) -> TrainSummary | None:
    """The summary of ``out/model.pt`` if it was trained from the same fingerprint, else None.

    An unreadable or older-format checkpoint is not reusable (it is retrained and replaced).
    """
    path, history = out / "model.pt", out / "history.csv"
    if not (path.is_file() and history.is_file()):
        return None
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # truncated or foreign file: retrain it
        log.warning("%s: unreadable (%s); retraining it", path, first_line(exc))
        return None
    if checkpoint.get("fingerprint_hash") != fp_hash:
        return None
    return TrainSummary(
        loss=checkpoint["config"]["loss"]["name"],
        seed=int(checkpoint["config"]["seed"]),
        fold=(checkpoint.get("data") or {}).get("fold"),
        best_epoch=checkpoint["best_epoch"],
        best_val_dice=checkpoint["best_val_dice"],
        epochs_run=len(pd.read_csv(history)),
        model_path=str(path),
        mlflow_run_id=checkpoint.get("mlflow_run_id"),
        reused=True,
    )


def load_checkpoint(
    path: str | os.PathLike, device: str | torch.device = "cpu"
) -> tuple[nn.Module, dict]:
    """Rebuild a model from a ``model.pt`` checkpoint (see docs/architecture.md).

    ``device`` may be ``auto`` (see :func:`resolve_device`).

    Returns the model (eval mode, channels_last, on ``device``) and the whole checkpoint dict.
    A missing, truncated or foreign file raises :class:`DataError` naming it.
    """
    target = resolve_device(str(device))
    try:
        checkpoint = torch.load(path, map_location=target, weights_only=True)
    except FileNotFoundError:
        raise DataError(f"{path}: checkpoint not found") from None
    except Exception as exc:  # torch's PytorchStreamReader errors name no file
        raise _unusable(path, f"not a readable checkpoint ({first_line(exc)})") from None
    if not isinstance(checkpoint, dict) or not {"config", "state_dict"} <= checkpoint.keys():
        raise _unusable(path, "not a segloss checkpoint (no config/state_dict)")
    try:
        # Checkpoints saved before model._target_ existed were all built by the default one.
        settings = from_mapping(ModelConfig, checkpoint["config"]["model"], "model")
        model = build_model(settings)
        model.load_state_dict(checkpoint["state_dict"])
    except (KeyError, TypeError, RuntimeError) as exc:
        raise _unusable(path, f"weights do not fit its config ({first_line(exc)})") from None
    model.to(device=target, memory_format=torch.channels_last)
    return model.eval(), checkpoint


def _unusable(path: str | os.PathLike, what: str) -> DataError:
    return DataError(f"{path}: {what}; retrain it (`dvc repro train`)")
