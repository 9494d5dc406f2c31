"""Losses: hand-computed values, empty targets, composition, stability and config handling."""

from __future__ import annotations

import dataclasses
import functools
import math

import pytest
import segmentation_models_pytorch as smp
import torch
from helpers import CONF, compose, settings

from segloss.config import LossConfig, loss_config, plain
from segloss.errors import ConfigError
from segloss.losses import build_loss, known_losses, loss_variant

LOSSES = sorted(p.stem for p in (CONF / "loss").glob("*.yaml"))


@functools.cache
def _composed(name: str) -> LossConfig:
    return settings(f"loss={name}").loss


def config(name: str, **overrides) -> LossConfig:
    """The ``loss`` settings that ``loss=<name>`` composes, with ``overrides``."""
    return dataclasses.replace(_composed(name), **overrides)


def square_target(n: int = 2, size: int = 8) -> torch.Tensor:
    target = torch.zeros(n, 1, size, size)
    target[:, :, 2:4, 2:4] = 1  # 4 of 64 pixels per image
    return target


def test_every_config_file_builds_its_loss_through_its_target():
    targets = set()
    for name in LOSSES:
        cfg = config(name)
        assert cfg.name == name
        loss = build_loss(cfg)
        assert f"{type(loss).__module__}.{type(loss).__name__}" == cfg._target_
        targets.add(cfg._target_)
    assert targets == set(known_losses())  # every loss class has its conf/loss option


def test_unknown_target_lists_the_known_losses():
    with pytest.raises(ConfigError, match=r"known: segloss\.losses\.BCELoss, .*DiceLoss"):
        build_loss(LossConfig(name="dicee", _target_="segloss.losses.DiceeLoss"))


def test_unknown_loss_option_on_the_command_line_fails_at_composition():
    from hydra.errors import ConfigCompositionException, MissingConfigException

    with pytest.raises(MissingConfigException, match="bce_dice"):
        compose("loss=dicee")  # Hydra lists the options
    with pytest.raises(ConfigCompositionException, match="loss.smoth"):
        compose("loss=dice", "loss.smoth=1.0")


def test_unknown_or_missing_option_in_a_stored_config_is_named():
    """A checkpoint's loss settings are read back through the schema of their _target_."""
    stored = plain(config("dice"))
    assert loss_config(stored) == config("dice")
    with pytest.raises(ConfigError, match="unknown setting.* smoth"):
        loss_config(stored | {"smoth": 1.0})
    with pytest.raises(ConfigError, match="smooth not set"):
        loss_config({k: v for k, v in stored.items() if k != "smooth"})


@pytest.mark.parametrize(
    "cfg",
    [
        {"name": "dice", "reduction": "pixel"},
        {"name": "dice", "smooth": 0.0},
        {"name": "bce", "pos_weight": -1.0},
        {"name": "focal", "alpha": 2.0},
    ],
)
def test_bad_options_fail_as_config_errors(cfg):
    with pytest.raises(ConfigError):
        build_loss(config(**cfg))


def test_shape_mismatch_is_a_value_error():
    with pytest.raises(ValueError, match="same shape"):
        build_loss(config("bce"))(torch.zeros(2, 1, 8, 8), torch.zeros(2, 8, 8))


def test_bce_hand_values_and_pos_weight_broadcast():
    logits = torch.zeros(2, 1, 4, 6)
    ones = torch.ones_like(logits)
    assert build_loss(config("bce"))(logits, ones).item() == pytest.approx(math.log(2))
    weighted = build_loss(config("bce", pos_weight=3.0))
    assert weighted(logits, ones).item() == pytest.approx(3 * math.log(2))
    # Per pixel: -(w*g*log p + (1-g)*log(1-p)) on an image that is not square.
    x = torch.randn(3, 1, 5, 7)
    g = (torch.rand(3, 1, 5, 7) > 0.5).float()
    p = torch.sigmoid(x)
    expected = -(3.0 * g * torch.log(p) + (1 - g) * torch.log(1 - p)).mean()
    assert weighted(x, g).item() == pytest.approx(expected.item(), rel=1e-5)


def test_dice_hand_values_per_image_and_batch():
    target = square_target()
    target[1] = 0  # second image is tumour-free
    logits = torch.full_like(target, -30.0)  # predicts nothing
    # image: mean of 1 - 1/(4+1) and 1 - 1/1; batch pools both images: fn = 4, so 1 - 1/(4+1)
    image = build_loss(config("dice_image"))(logits, target).item()
    batch = build_loss(config("dice"))(logits, target).item()
    assert image == pytest.approx(0.4, abs=1e-6)
    assert batch == pytest.approx(1 - 1 / (4 + 1), abs=1e-6)
    perfect = torch.where(target > 0, 30.0, -30.0)
    assert build_loss(config("dice"))(perfect, target).item() == pytest.approx(0.0, abs=1e-6)


# The article's functions (Kaggle LGG notebooks), transcribed literally: probabilities in,
# soft counts summed over the whole flattened batch, smooth 1, BCE on probabilities.
def article_dice_coef(y_true, y_pred, smooth=1):
    y_true_f = y_true.flatten()
    y_pred_f = y_pred.flatten()
    intersection = (y_true_f * y_pred_f).sum()
    return (2.0 * intersection + smooth) / (y_true_f.sum() + y_pred_f.sum() + smooth)


def article_dice_coef_loss(y_true, y_pred):
    return 1 - article_dice_coef(y_true, y_pred)


def article_bce_dice_loss(y_true, y_pred):
    return torch.nn.BCELoss()(y_pred, y_true) + article_dice_coef_loss(y_true, y_pred)


@pytest.mark.parametrize("empty", [(1,), (0, 2), (0, 1, 2, 3)], ids=["one", "two", "all"])
def test_default_dice_and_bce_dice_equal_the_articles_functions(empty):
    generator = torch.Generator().manual_seed(len(empty))
    probs = torch.rand(4, 1, 16, 16, generator=generator, dtype=torch.float64) * 0.98 + 0.01
    target = (torch.rand(4, 1, 16, 16, generator=generator) > 0.7).double()
    target[list(empty)] = 0  # tumour-free slices, and a batch without any tumour
    logits = torch.logit(probs)
    pairs = (("dice", article_dice_coef_loss), ("bce_dice", article_bce_dice_loss))
    for name, article in pairs:
        ours = build_loss(config(name))(logits, target).item()
        assert ours == pytest.approx(article(target, probs).item(), abs=1e-6), name


def test_variants_are_named_and_the_image_form_differs_from_the_articles():
    assert [loss_variant(config(n)) for n in ("dice", "bce_dice", "bce", "lovasz")] == [
        "batch",
        "batch",
        "pixel",
        "image",
    ]
    for name in ("dice_image", "bce_dice_image"):
        cfg = config(name)
        assert (cfg.name, loss_variant(cfg)) == (name, "image")
    probs, target = torch.full((2, 1, 4, 4), 0.3), square_target(2, 4)
    target[1] = 0
    image = build_loss(config("dice_image"))(torch.logit(probs), target).item()
    assert abs(image - article_dice_coef_loss(target, probs).item()) > 0.02


def test_dice_penalises_false_positives_on_empty_targets_unlike_smp():
    empty = torch.zeros(2, 1, 8, 8)
    ours = build_loss(config("dice"))
    confident_fp = torch.full_like(empty, 3.0)
    assert ours(confident_fp, empty).item() > 0.9
    assert ours(torch.full_like(empty, -30.0), empty).item() == pytest.approx(0.0, abs=1e-6)
    logits = torch.zeros_like(empty, requires_grad=True)
    ours(logits, empty).backward()
    assert (logits.grad > 0).all()  # gradient descent lowers every false-positive logit
    # smp's DiceLoss masks empty targets out: zero loss and zero gradient, whatever is predicted.
    assert smp.losses.DiceLoss("binary")(confident_fp, empty).item() == 0.0


def test_bce_dice_is_exactly_the_weighted_sum_of_its_parts():
    x = torch.randn(3, 1, 8, 8)
    g = square_target(3)
    opts = {"reduction": "batch", "smooth": 0.5, "pos_weight": 2.0}
    combined = build_loss(config("bce_dice", w_bce=0.3, w_dice=2.0, **opts))(x, g)
    bce = build_loss(config("bce", pos_weight=2.0))(x, g)
    dice = build_loss(config("dice", reduction="batch", smooth=0.5))(x, g)
    assert combined.item() == pytest.approx((0.3 * bce + 2.0 * dice).item(), rel=1e-6)


def test_tversky_with_equal_weights_is_dice():
    x, g = torch.randn(3, 1, 8, 8), square_target(3)
    tversky = build_loss(config("tversky", alpha=0.5, beta=0.5, smooth=0.5))(x, g)
    dice = build_loss(config("dice_image", smooth=1.0))(x, g)  # Dice's s is twice Tversky's
    assert tversky.item() == pytest.approx(dice.item(), rel=1e-6)


def test_tversky_beta_weighs_false_negatives():
    g = square_target()
    miss = torch.full_like(g, -30.0)  # all false negatives
    recall_heavy = build_loss(config("tversky", alpha=0.3, beta=0.7))(miss, g)
    precision_heavy = build_loss(config("tversky", alpha=0.7, beta=0.3))(miss, g)
    assert recall_heavy.item() == pytest.approx(1 - 1 / (0.7 * 4 + 1), abs=1e-6)
    assert recall_heavy > precision_heavy


def test_focal_without_focusing_is_bce():
    x, g = torch.randn(2, 1, 8, 8), square_target()
    focal = build_loss(config("focal", alpha=None, gamma=0.0))(x, g)
    assert focal.item() == pytest.approx(build_loss(config("bce"))(x, g).item(), rel=1e-6)
    confident_fp = torch.full_like(g, 3.0)
    assert build_loss(config("focal"))(confident_fp, torch.zeros_like(g)).item() > 0


def test_lovasz_on_an_empty_target_penalises_the_worst_false_positive():
    empty = torch.zeros(1, 1, 4, 4)
    logits = torch.full_like(empty, -5.0)
    logits[0, 0, 1, 1] = 0.5
    assert build_loss(config("lovasz"))(logits, empty).item() == pytest.approx(1.5)
    assert build_loss(config("lovasz"))(logits - 2.0, empty).item() == 0.0


@pytest.mark.parametrize("name", LOSSES)
def test_extreme_logits_give_finite_float32_losses_and_gradients(name):
    g = square_target()
    g[1] = 0
    x = (torch.randn(2, 1, 8, 8) * 100).requires_grad_()
    loss = build_loss(config(name))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = loss(x.to(torch.bfloat16), g)
    assert value.dtype == torch.float32
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(x.grad).all()
