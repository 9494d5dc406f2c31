"""segloss.models: model construction, the one preprocessing function, checkpoint round trip."""

from __future__ import annotations

import pytest
import torch
import yaml

from segloss.models import build_model, load_checkpoint, preprocess, resolve_device


@pytest.mark.parametrize("name", ["unet_r18_slim", "unet_mnv3", "unet_r34"])
def test_every_model_config_builds_one_logit_per_pixel(repo_root, name):
    cfg = yaml.safe_load((repo_root / "conf" / "model" / f"{name}.yaml").read_text())
    model = build_model(cfg).eval()
    with torch.no_grad():
        out = model(preprocess(torch.zeros(2, 32, 32, 3, dtype=torch.uint8)))
    assert out.shape == (2, 1, 32, 32)


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


def test_load_checkpoint_restores_weights_in_eval_mode(tmp_path):
    cfg = {"model": {"encoder_name": "resnet18", "decoder_channels": [16, 8, 8, 8, 8]}}
    model = build_model(cfg["model"])
    path = tmp_path / "model.pt"
    torch.save({"state_dict": model.state_dict(), "config": cfg, "best_epoch": 1}, path)
    loaded, checkpoint = load_checkpoint(path)
    assert not loaded.training and checkpoint["best_epoch"] == 1
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)
