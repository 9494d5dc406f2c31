"""train.precision (bf16 autocast), the tracking settings' checks, and the schema's checks of
the same settings (segloss.config)."""

from __future__ import annotations

import math
import subprocess

import pandas as pd
import pytest
import torch
from helpers import settings, stage_command

from segloss.config import plain
from segloss.errors import ConfigError
from segloss.training import autocast, train


def test_precision_default_is_fp32_and_bf16_autocasts_the_forward_pass(repo_root):
    assert settings().train.precision == "fp32"
    layer = torch.nn.Conv2d(3, 4, 3)
    x = torch.rand(2, 3, 8, 8)
    with autocast(torch.device("cpu"), "fp32"):
        assert layer(x).dtype == torch.float32
    with autocast(torch.device("cpu"), "bf16"):
        assert layer(x).dtype == torch.bfloat16


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.precision=fp16", "train.precision must be one of fp32, bf16, got 'fp16'"),
        (
            "tracking.system_metrics_interval=0",
            "tracking.system_metrics_interval must be a number of seconds > 0 or null, got 0",
        ),
    ],
)
def test_bad_settings_are_one_clear_error(repo_root, override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        settings(override)


def test_bad_precision_on_the_command_line_exits_2_before_any_run(
    repo_root, tiny_prepared, tmp_path
):
    cmd = [
        *stage_command("train"),
        "train.precision=fp16",
        f"paths.prepared={tiny_prepared}",
        f"paths.models={tmp_path / 'models'}",
        f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
        f"hydra.run.dir={tmp_path / 'run'}",
        "print_config=false",
    ]
    proc = subprocess.run(cmd, cwd=repo_root, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert lines == ["error: train.precision must be one of fp32, bf16, got 'fp16'"]
    assert not (tmp_path / "models").exists() and not (tmp_path / "mlflow.db").exists()


@pytest.mark.slow
def test_bf16_trains_a_usable_model(repo_root, tiny_prepared, tmp_path):
    summaries = {}
    for precision in ("fp32", "bf16"):
        cfg = settings(
            f"paths.prepared={tiny_prepared}",
            f"paths.models={tmp_path / precision}",
            "tracking=none",
            "train.epochs=2",
            "train.num_threads=1",
            f"train.precision={precision}",
        )
        summaries[precision] = train(cfg)
    histories = {
        k: pd.read_csv(tmp_path / k / "bce_dice" / "seed0" / "history.csv") for k in summaries
    }
    assert all(math.isfinite(v) for v in histories["bf16"]["train_loss"])
    # bf16 really changed the arithmetic (same seed, same data): the losses differ a little
    diff = (histories["bf16"]["train_loss"] - histories["fp32"]["train_loss"]).abs()
    assert 0 < diff.max() < 0.1


def test_debug_experiment_is_small_and_writes_only_under_outputs_debug(repo_root, monkeypatch):
    monkeypatch.setenv("TMPDIR", "/some/tmp")
    cfg = settings("experiment=debug")
    assert cfg.data.n_patients == 4 and cfg.train.epochs == 1
    assert cfg.data.image_size == 32
    assert cfg.tracking.uri == "sqlite:////some/tmp/segloss_debug.db"
    written = [cfg.data.root, *plain(cfg.paths).values()]
    assert all(path.startswith("outputs/debug/") for path in written), written


def test_tracking_none_composes_to_no_store(repo_root):
    tracking = settings("tracking=none").tracking
    assert tracking.uri is None and tracking.log_model is False
