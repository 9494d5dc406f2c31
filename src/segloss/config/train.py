"""The ``train`` group: the training loop (:mod:`segloss.training`); values and why in
conf/train/default.yaml."""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import MISSING

from segloss.config.checks import int_at_least, is_number, positive, rule

SCHEDULERS = ("onecycle", "cosine", "constant")  # stepped per batch
SAMPLINGS = ("uniform", "foreground")  # segloss.training.epoch.epoch_batches
PRECISIONS = ("fp32", "bf16")


def _share(prefix: str, value: object, high_open: bool = False) -> None:
    ok = is_number(value) and value >= 0 and (value < 1 if high_open else value <= 1)
    rule(prefix, value, ok, f"a number in [0, 1{')' if high_open else ']'}")


@dataclass
class Augment:
    """Light augmentations applied per sample on whole batches."""

    enabled: bool = MISSING
    hflip: float = MISSING
    vflip: float = MISSING
    rotate: float = MISSING
    scale: float = MISSING
    brightness: float = MISSING
    contrast: float = MISSING

    def __post_init__(self) -> None:
        for key in ("hflip", "vflip"):
            _share(f"train.augment.{key}", getattr(self, key))
        for key in ("scale", "contrast"):
            _share(f"train.augment.{key}", getattr(self, key), high_open=True)
        for key in ("rotate", "brightness"):
            value = getattr(self, key)
            rule(f"train.augment.{key}", value, is_number(value) and value >= 0, "a number >= 0")


def _optional_count(value: object) -> bool:
    return value is None or int_at_least(value, 1)


@dataclass
class TrainConfig:
    """One model per (loss, seed[, fold]); the saved model is its best epoch by val Dice."""

    epochs: int = MISSING
    batch_size: int = MISSING
    val_batch_size: int = MISSING  # validation's inference batches
    lr: float = MISSING
    weight_decay: float = MISSING
    scheduler: str = MISSING  # stepped per batch
    patience: int | None = MISSING  # early stopping (null: never)
    num_threads: int | None = MISSING  # null: cores // parallel jobs
    device: str = MISSING  # auto: CUDA where present, else CPU
    precision: str = MISSING  # autocast of the training forward pass
    sampling: str = MISSING  # which training slices the steps see
    uniform_share: float = MISSING  # foreground sampling: the uniform part of the mass
    samples_per_epoch: int | None = MISSING  # null: every training slice once
    val_every: int = MISSING  # validate every k epochs and after the last
    augment: Augment = MISSING
    init_output_bias: bool = MISSING
    reuse: bool = MISSING  # keep an up-to-date model.pt (same fingerprint)

    def __post_init__(self) -> None:
        checks = {
            "epochs": (int_at_least(self.epochs, 1), "an integer >= 1"),
            "batch_size": (int_at_least(self.batch_size, 1), "an integer >= 1"),
            "val_batch_size": (int_at_least(self.val_batch_size, 1), "an integer >= 1"),
            "lr": (positive(self.lr), "a number > 0"),
            "weight_decay": (
                is_number(self.weight_decay) and self.weight_decay >= 0,
                "a number >= 0",
            ),
            "patience": (_optional_count(self.patience), "an integer >= 1 or null"),
            "num_threads": (_optional_count(self.num_threads), "an integer >= 1 or null"),
            "scheduler": (self.scheduler in SCHEDULERS, f"one of {', '.join(SCHEDULERS)}"),
            "precision": (self.precision in PRECISIONS, f"one of {', '.join(PRECISIONS)}"),
            "sampling": (self.sampling in SAMPLINGS, f"one of {', '.join(SAMPLINGS)}"),
            "samples_per_epoch": (
                _optional_count(self.samples_per_epoch),
                "an integer >= 1 or null",
            ),
            "val_every": (int_at_least(self.val_every, 1), "an integer >= 1"),
        }
        _share("train.uniform_share", self.uniform_share)
        for key, (ok, expected) in checks.items():
            rule(f"train.{key}", getattr(self, key), ok, expected)
