"""The ``loss`` group: one schema per loss, each naming its class in ``_target_``.

:func:`segloss.losses.build_loss` instantiates ``_target_`` with the options; the range
checks of the options stay in the loss classes (they hold for a loss built in code too).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from omegaconf import MISSING

from segloss.config.checks import from_mapping


@dataclass
class LossConfig:
    """``name`` names the models' folder and the report's rows; ``_target_`` the class."""

    name: str = MISSING
    _target_: str = MISSING


@dataclass
class BCE(LossConfig):
    """Binary cross-entropy with logits; ``pos_weight`` (> 0) multiplies tumour pixels' loss."""

    _target_: str = "segloss.losses.BCELoss"
    pos_weight: float | None = MISSING


@dataclass
class Dice(LossConfig):
    """Soft Dice ``1 - (2*sum(p*g) + s) / (sum(p) + sum(g) + s)``.

    ``reduction``: image (mean of per-image Dice) | batch (pooled over the batch);
    ``smooth``: s > 0, which also gives empty targets a loss that penalises false positives.
    """

    _target_: str = "segloss.losses.DiceLoss"
    reduction: str = MISSING
    smooth: float = MISSING


@dataclass
class BCEDice(LossConfig):
    """``w_bce * BCE + w_dice * Dice``, with the options of both parts."""

    _target_: str = "segloss.losses.BCEDiceLoss"
    w_bce: float = MISSING
    w_dice: float = MISSING
    reduction: str = MISSING
    smooth: float = MISSING
    pos_weight: float | None = MISSING


@dataclass
class Focal(LossConfig):
    """Binary focal loss (smp): ``alpha`` tumour weight in [0, 1] or null, ``gamma`` >= 0."""

    _target_: str = "segloss.losses.FocalLoss"
    alpha: float | None = MISSING
    gamma: float = MISSING


@dataclass
class Lovasz(LossConfig):
    """Lovasz hinge (smp), a convex surrogate of IoU; ``per_image`` averages per image."""

    _target_: str = "segloss.losses.LovaszLoss"
    per_image: bool = MISSING


@dataclass
class Tversky(LossConfig):
    """``1 - (TP + s) / (TP + alpha*FP + beta*FN + s)``; alpha = beta = 0.5 is Dice."""

    _target_: str = "segloss.losses.TverskyLoss"
    alpha: float = MISSING
    beta: float = MISSING
    reduction: str = MISSING
    smooth: float = MISSING


# conf/loss/<name>.yaml -> its schema, stored as loss/base_<name>
LOSS_SCHEMAS: dict[str, type[LossConfig]] = {
    "bce": BCE,
    "dice": Dice,
    "bce_dice": BCEDice,
    "focal": Focal,
    "lovasz": Lovasz,
    "tversky": Tversky,
}


def loss_config(values: Mapping[str, object] | None) -> LossConfig:
    """The validated ``loss`` settings of the schema whose ``_target_`` ``values`` names."""
    by_target = {cls._target_: cls for cls in LOSS_SCHEMAS.values()}
    chosen = by_target.get((values or {}).get("_target_"), LossConfig)
    return from_mapping(chosen, values, "loss")
