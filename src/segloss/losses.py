"""Segmentation losses: every loss takes logits ``(N,1,H,W)`` and a binary target.

:func:`build_loss` builds the class that ``loss._target_`` names (set by the loss's schema
in :mod:`segloss.config.loss`) with the loss's options; the options have no defaults here
(their values: conf/loss/<name>.yaml).

All losses compute in float32 with autocast off, so a mixed-precision forward pass cannot
round a sum of 16k probabilities or a log-sigmoid. Overlap losses (Dice, Tversky) are
smoothed so that an all-empty target still has a defined loss that penalises false
positives; see README "Losses and metrics" for each loss's empty-target behaviour.
"""

from __future__ import annotations

from dataclasses import asdict

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from torch import nn

from segloss.config.loss import BCEDice, Dice, LossConfig, Lovasz, Tversky
from segloss.errors import ConfigError

REDUCTIONS = ("image", "batch")


class LogitLoss(nn.Module):
    """Base class: checks shapes and runs ``compute`` in float32 with autocast disabled."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if logits.shape != target.shape or logits.ndim != 4 or logits.shape[1] != 1:
            raise ValueError(
                "loss expects logits and target of the same shape (N,1,H,W), got "
                f"{tuple(logits.shape)} and {tuple(target.shape)}"
            )
        with torch.autocast(device_type=logits.device.type, enabled=False):
            return self.compute(logits.float(), target.float())

    def compute(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class BCELoss(LogitLoss):
    """Binary cross-entropy with logits; ``pos_weight`` multiplies the loss of tumour pixels."""

    def __init__(self, pos_weight: float | None) -> None:
        super().__init__()
        if pos_weight is not None and not pos_weight > 0:
            raise ConfigError(f"loss.pos_weight must be > 0 or null, got {pos_weight}")
        # Shape (1,1,1) lines up with (C,H,W) of an (N,1,H,W) target; a (C,) vector would
        # broadcast along W, which only works by accident for C == 1.
        weight = None if pos_weight is None else torch.full((1, 1, 1), float(pos_weight))
        self.register_buffer("pos_weight", weight)

    def compute(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits, target, pos_weight=self.pos_weight)


def _check_overlap_options(reduction: str, smooth: float) -> None:
    if reduction not in REDUCTIONS:
        raise ConfigError(f"loss.reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if not smooth > 0:
        # With smooth == 0 an empty target gives 0/sum(p): a constant loss of 1 whose
        # gradient is zero, so false positives on tumour-free slices would go unpunished.
        raise ConfigError(f"loss.smooth must be > 0, got {smooth}")


def soft_counts(
    logits: torch.Tensor, target: torch.Tensor, reduction: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Soft true positives, false positives and false negatives from sigmoid probabilities.

    ``reduction="image"`` gives one value per image (shape ``(N,)``); ``"batch"`` pools the
    whole batch into scalars (nnU-Net's batch Dice).
    """
    prob = torch.sigmoid(logits)
    dims = (1, 2, 3) if reduction == "image" else (0, 1, 2, 3)
    tp = (prob * target).sum(dims)
    fp = (prob * (1 - target)).sum(dims)
    fn = ((1 - prob) * target).sum(dims)
    return tp, fp, fn


class DiceLoss(LogitLoss):
    """Soft Dice loss ``1 - (2*sum(p*g) + s) / (sum(p) + sum(g) + s)``.

    Unlike smp's ``DiceLoss`` an empty target is not masked out: its loss is
    ``1 - s / (sum(p) + s)``, zero only when nothing is predicted.
    """

    def __init__(self, reduction: str, smooth: float) -> None:
        super().__init__()
        _check_overlap_options(reduction, smooth)
        self.reduction = reduction
        self.smooth = float(smooth)

    def compute(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        tp, fp, fn = soft_counts(logits, target, self.reduction)
        dice = (2 * tp + self.smooth) / (2 * tp + fp + fn + self.smooth)
        return (1 - dice).mean()


class TverskyLoss(LogitLoss):
    """Tversky loss ``1 - (TP + s) / (TP + alpha*FP + beta*FN + s)`` on soft counts.

    ``alpha`` weighs false positives, ``beta`` false negatives (Salehi et al. 2017). Written
    here rather than taken from smp because smp's ``TverskyLoss`` inherits ``DiceLoss``'s
    zero loss on empty targets.
    """

    def __init__(self, alpha: float, beta: float, reduction: str, smooth: float) -> None:
        super().__init__()
        _check_overlap_options(reduction, smooth)
        if alpha < 0 or beta < 0 or alpha + beta == 0:
            raise ConfigError(f"loss.alpha and loss.beta must be >= 0, not both 0: {alpha}, {beta}")
        self.alpha, self.beta = float(alpha), float(beta)
        self.reduction = reduction
        self.smooth = float(smooth)

    def compute(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        tp, fp, fn = soft_counts(logits, target, self.reduction)
        score = (tp + self.smooth) / (tp + self.alpha * fp + self.beta * fn + self.smooth)
        return (1 - score).mean()


class BCEDiceLoss(LogitLoss):
    """``w_bce * BCE + w_dice * Dice`` (1:1 in conf/loss/bce_dice.yaml, as in nnU-Net and the
    source article)."""

    def __init__(
        self,
        w_bce: float,
        w_dice: float,
        reduction: str,
        smooth: float,
        pos_weight: float | None,
    ) -> None:
        super().__init__()
        if w_bce < 0 or w_dice < 0:
            raise ConfigError(f"loss.w_bce and loss.w_dice must be >= 0, got {w_bce}, {w_dice}")
        self.w_bce, self.w_dice = float(w_bce), float(w_dice)
        self.bce = BCELoss(pos_weight)
        self.dice = DiceLoss(reduction, smooth)

    def compute(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.w_bce * self.bce.compute(logits, target) + self.w_dice * self.dice.compute(
            logits, target
        )


class FocalLoss(LogitLoss):
    """Binary focal loss (Lin et al. 2017), mean over pixels; smp's implementation.

    A per-pixel loss, so empty targets need no special case: every false positive counts.
    """

    def __init__(self, alpha: float | None, gamma: float) -> None:
        super().__init__()
        if alpha is not None and not 0 <= alpha <= 1:
            raise ConfigError(f"loss.alpha must be in [0, 1] or null, got {alpha}")
        if gamma < 0:
            raise ConfigError(f"loss.gamma must be >= 0, got {gamma}")
        self.inner = smp.losses.FocalLoss("binary", alpha=alpha, gamma=gamma)

    def compute(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.inner(logits, target)


class LovaszLoss(LogitLoss):
    """Lovasz hinge loss (Berman et al. 2018), a convex surrogate of IoU; smp's implementation.

    On an empty target it reduces to ``relu(1 + max logit)``: the most confident false
    positive is penalised until every logit is below -1.
    """

    def __init__(self, per_image: bool) -> None:
        super().__init__()
        self.inner = smp.losses.LovaszLoss("binary", per_image=bool(per_image))

    def compute(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.inner(logits, target)


def loss_variant(settings: LossConfig) -> str:
    """How a loss averages over the batch, the word tables and runs show beside its name.

    ``batch``: soft counts pooled over the whole batch (the article's Dice); ``image``: the
    mean of each image's own value; ``pixel``: a mean over every pixel (BCE, focal), which has
    no per-image or pooled form. Lovasz: ``image`` when ``per_image``, else ``batch``.
    """
    if isinstance(settings, Dice | BCEDice | Tversky):
        return settings.reduction
    if isinstance(settings, Lovasz):
        return "image" if settings.per_image else "batch"
    return "pixel"


def known_losses() -> dict[str, type[LogitLoss]]:
    """The classes a ``_target_`` may name: ``segloss.losses.<class>`` -> class."""
    return {f"{__name__}.{cls.__name__}": cls for cls in LogitLoss.__subclasses__()}


def build_loss(settings: LossConfig) -> nn.Module:
    """The loss ``settings._target_`` names, built with the other settings (less ``name``,
    which labels the models' folder and the report's rows) as its options (the schema,
    :mod:`segloss.config.loss`, holds exactly the class's options)."""
    options = {k: v for k, v in asdict(settings).items() if k not in ("name", "_target_")}
    name, target, known = settings.name, settings._target_, known_losses()
    if target not in known:
        raise ConfigError(
            f"loss {name!r}: _target_ {target!r} is not a known loss; known: "
            f"{', '.join(known)} (conf/loss/<name>.yaml picks one)"
        )
    # The class itself, not hydra.utils.instantiate: that wraps a loss's own ConfigError
    # (smooth <= 0, ...) in an InstantiationException, which would lose the one-line error.
    return known[target](**options)
