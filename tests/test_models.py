"""segloss.models: model construction, the one preprocessing function, checkpoint round trip."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from helpers import settings

from segloss.config import ModelConfig, plain
from segloss.errors import ConfigError
from segloss.models import (
    build_model,
    load_checkpoint,
    preprocess,
    resolve_device,
    reusable,
    save_checkpoint,
)


def model_config(repo_root, *overrides: str) -> ModelConfig:
    """The ``model`` settings ``overrides`` compose (their ``_target_`` included)."""
    return settings(*overrides).model


@pytest.mark.parametrize("name", ["unet_r18_slim", "unet_mnv3", "unet_r34"])
def test_every_model_config_builds_one_logit_per_pixel(repo_root, name):
    cfg = model_config(repo_root, f"model={name}")
    assert cfg._target_ == "segloss.models.smp_model"
    model = build_model(cfg).eval()
    with torch.no_grad():
        out = model(preprocess(torch.zeros(2, 32, 32, 3, dtype=torch.uint8)))
    assert out.shape == (2, 1, 32, 32)


def test_an_unknown_arch_or_target_is_one_line_naming_the_setting_and_the_choices(repo_root):
    cfg = model_config(repo_root)
    with pytest.raises(ConfigError) as caught:
        build_model(dataclasses.replace(cfg, arch="Unett"))
    message = str(caught.value)
    assert message.startswith("model.arch='Unett' is not an smp architecture; choices: Unet, ")
    assert "UnetPlusPlus" in message and "\n" not in message
    with pytest.raises(ConfigError, match=r"^model._target_ 'os.remove' is not a known model"):
        build_model(dataclasses.replace(cfg, _target_="os.remove"))


def test_preprocess_scales_to_unit_range_channels_last():
    x = torch.full((1, 2, 2, 3), 255, dtype=torch.uint8)
    x[0, 0, 0] = 0
    y = preprocess(x)
    assert y.dtype == torch.float32 and y.shape == (1, 3, 2, 2)
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert y.min() == 0.0 and y.max() == 1.0
    with pytest.raises(ValueError, match="uint8"):
        preprocess(x.float())


def test_resolve_device():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


def small_config(repo_root) -> dict:
    model = model_config(repo_root, "model.decoder_channels=[16,8,8,8,8]")
    return {"model": plain(model), "loss": {"name": "dice"}, "seed": 2}


def test_saved_checkpoint_loads_with_its_weights_in_eval_mode_and_is_reusable(tmp_path, repo_root):
    cfg = small_config(repo_root)
    model = build_model(ModelConfig(**cfg["model"]))
    summary = {
        "config": cfg,
        "data": {"fold": None},
        "best_epoch": 1,
        "best_val_dice": 0.5,
        "fingerprint": {},
        "fingerprint_hash": "abc",
    }
    save_checkpoint(tmp_path / "model.pt", model.state_dict(), summary, {"mlflow_run_id": "r"})
    loaded, checkpoint = load_checkpoint(tmp_path / "model.pt")
    assert not loaded.training and checkpoint["best_epoch"] == 1
    assert checkpoint["mlflow_run_id"] == "r" and checkpoint["mlflow_parent_run_id"] is None
    assert "mlflow_model_id" not in checkpoint
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)
    (tmp_path / "history.csv").write_text("epoch,val_dice\n1,0.5\n")
    found = reusable(tmp_path, "abc")
    assert found.loss == "dice" and found.seed == 2 and found.mlflow_run_id == "r"
    assert reusable(tmp_path, "other") is None


def test_a_checkpoint_from_before_model_target_loads(tmp_path, repo_root):
    """Checkpoints saved before ``model._target_`` existed store the model config without it:
    they were built by the default target, which loading falls back to."""
    cfg = small_config(repo_root)
    model = build_model(ModelConfig(**cfg["model"]))
    old = {k: v for k, v in cfg["model"].items() if k != "_target_"}
    summary = {"config": cfg | {"model": old}, "data": {}, "best_epoch": 1, "best_val_dice": 0.5}
    summary |= {"fingerprint": {}, "fingerprint_hash": "abc"}
    save_checkpoint(tmp_path / "model.pt", model.state_dict(), summary, {})
    loaded, checkpoint = load_checkpoint(tmp_path / "model.pt")
    assert "_target_" not in checkpoint["config"]["model"]
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)
