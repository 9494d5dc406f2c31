"""segloss.training in-process (Hydra compose API), tracked as the entry point does
(``segloss.sweep.tracked.train``): repeatability, outputs, bad input."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import torch
from helpers import Logged, runs, settings
from hydra.errors import MissingConfigException

from segloss import tracking
from segloss.config import Config
from segloss.config.train import Augment
from segloss.data.prepared import MissingPreparedData
from segloss.errors import ConfigError
from segloss.models import load_checkpoint
from segloss.sweep.tracked import train
from segloss.training import HISTORY_COLUMNS, NonFiniteLoss, augment_batch
from segloss.training.divergence import check_diverged
from segloss.training.epoch import epoch_batches
from segloss.training.loop import make_scheduler

TRAIN = settings().train  # the default training settings, for the loop's parts


@pytest.fixture
def make_cfg(tiny_prepared, tmp_path):
    """The settings for the tiny data, writing into tmp_path; extra overrides allowed."""

    def make(*overrides: str, models: str = "models") -> Config:
        return settings(
            f"paths.prepared={tiny_prepared}",
            f"paths.models={tmp_path / models}",
            f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
            "tracking.log_model=false",
            "train.epochs=2",
            "train.num_threads=1",
            *overrides,
        )

    return make


def test_same_seed_gives_same_history_and_weights(make_cfg, tmp_path):
    first = train(make_cfg("loss=bce_dice", "seed=3", models="a"))
    second = train(make_cfg("loss=bce_dice", "seed=3", models="b"))
    histories = [
        pd.read_csv(tmp_path / m / "bce_dice" / "seed3" / "history.csv") for m in ("a", "b")
    ]
    assert list(histories[0].columns) == HISTORY_COLUMNS
    assert len(histories[0]) == 2
    pd.testing.assert_frame_equal(*(h.drop(columns="seconds") for h in histories))
    (model_a, ckpt_a), (model_b, _) = (load_checkpoint(r.model_path) for r in (first, second))
    for key, value in model_a.state_dict().items():
        assert torch.equal(value, model_b.state_dict()[key]), key
    assert ckpt_a["best_epoch"] == first.best_epoch
    assert ckpt_a["best_val_dice"] == pytest.approx(histories[0]["val_dice"].max())
    assert ckpt_a["config"]["loss"]["name"] == "bce_dice" and ckpt_a["config"]["seed"] == 3
    assert set(ckpt_a["data"]) == {"image_size", "data_hash", "splits", "source", "fold"}
    assert ckpt_a["mlflow_run_id"] == first.mlflow_run_id
    assert ckpt_a["mlflow_parent_run_id"] is None
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert tracking.run_status(uri, first.mlflow_run_id) == "FINISHED"


@pytest.mark.parametrize(
    ("override", "setting"),
    [
        ("train.epochs=0", "train.epochs"),
        ("train.lr=0", "train.lr"),
        ("train.lr=-1e-3", "train.lr"),
        ("train.batch_size=0", "train.batch_size"),
        ("train.scheduler=step", "train.scheduler"),
    ],
)
def test_bad_settings_fail_before_any_work(make_cfg, tmp_path, override, setting):
    with pytest.raises(ConfigError, match=setting):
        train(make_cfg(override))
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "models").exists()


def test_missing_prepared_data_says_to_run_prepare(make_cfg, tmp_path):
    with pytest.raises(MissingPreparedData, match="run the prepare stage"):
        train(make_cfg(f"paths.prepared={tmp_path / 'nowhere'}"))


def test_unreachable_tracking_server_fails_before_training(make_cfg, tmp_path):
    with pytest.raises(tracking.TrackingError, match="unreachable"):
        train(make_cfg("tracking.uri=http://127.0.0.1:9"))
    assert not (tmp_path / "models").exists()


@pytest.mark.parametrize("group", ["loss", "model"])
def test_unknown_loss_or_model_lists_the_choices(make_cfg, group):
    with pytest.raises(MissingConfigException, match="bce_dice|unet_r18_slim"):
        make_cfg(f"{group}=nope")


def test_non_finite_loss_names_loss_seed_epoch_and_fails_the_run(make_cfg, tmp_path):
    with pytest.raises(NonFiniteLoss, match=r"loss bce, seed 1, epoch 1") as excinfo:
        train(make_cfg("loss=bce", "seed=1", "loss.pos_weight=inf"))
    assert "nan" in str(excinfo.value) or "inf" in str(excinfo.value)
    assert [r.status for r in _runs(tmp_path)] == ["FAILED"]
    assert not (tmp_path / "models" / "bce" / "seed1").exists()


def test_augment_keeps_masks_binary_and_images_in_range():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(8, 3, 32, 32)
    y = (torch.rand(8, 1, 32, 32) > 0.7).float()
    aug = Augment(True, hflip=0.5, vflip=0.5, rotate=15, scale=0.1, brightness=0.1, contrast=0.1)
    xa, ya = augment_batch(x, y, aug, g)
    assert xa.shape == x.shape and ya.shape == y.shape
    assert set(ya.unique().tolist()) <= {0.0, 1.0}
    assert xa.min() >= 0 and xa.max() <= 1
    assert xa.is_contiguous(memory_format=torch.channels_last)
    # per-sample: different images of one batch get different transforms
    same = torch.zeros(8, 3, 32, 32) + torch.linspace(0, 1, 32)
    out, _ = augment_batch(
        same, torch.zeros(8, 1, 32, 32), dataclasses.replace(aug, contrast=0.0), g
    )
    assert not all(torch.allclose(out[0], out[i]) for i in range(1, 8))


def test_identity_augmentation_is_exact():
    x = torch.rand(2, 3, 16, 16)
    y = (torch.rand(2, 1, 16, 16) > 0.5).float()
    none = Augment(True, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    xa, ya = augment_batch(x, y, none, torch.Generator().manual_seed(0))
    assert torch.allclose(xa, x, atol=1e-6) and torch.equal(ya, y)


@pytest.mark.parametrize("scheduler", ["onecycle", "cosine", "constant"])
@pytest.mark.parametrize("total_steps", range(1, 13))
def test_every_schedule_runs_any_number_of_steps(scheduler, total_steps):
    """Short runs (1 epoch of a few batches) keep every schedule finite, OneCycle's warm-up
    ending at step 0 included."""
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([param], lr=1e-3)
    schedule = make_scheduler(
        optimizer, dataclasses.replace(TRAIN, scheduler=scheduler), total_steps
    )
    for _ in range(total_steps):
        optimizer.step()
        schedule.step()
    assert all(math.isfinite(group["lr"]) for group in optimizer.param_groups)


def _runs(tmp_path) -> list[Logged]:
    return runs(f"sqlite:///{tmp_path / 'mlflow.db'}")


def test_diverged_model_fails_with_reason_and_removes_the_older_model(make_cfg, tmp_path):
    """lr=1e30: the training loss of the first step is finite, the weights and validation are
    not. The job fails, the run says why, and the good older model.pt of (bce, 0) is gone."""
    out = tmp_path / "models" / "bce" / "seed0"
    train(make_cfg("loss=bce", "train.epochs=1"))
    assert (out / "model.pt").is_file() and (out / "history.csv").is_file()
    with pytest.raises(NonFiniteLoss, match=r"loss bce, seed 0, epoch 1: (validation|weights)"):
        train(make_cfg("loss=bce", "train.epochs=1", "train.lr=1e30"))
    assert not out.exists()
    good, diverged = _runs(tmp_path)
    assert good.status == "FINISHED" and "reason" not in good.tags
    assert diverged.status == "FAILED"
    assert diverged.tags["reason"].startswith("NonFiniteLoss: loss bce, seed 0, epoch 1")


def test_non_finite_weights_are_divergence(make_cfg):
    model = torch.nn.Linear(2, 1)
    check_diverged(model, {"val_loss": 0.5})
    with pytest.raises(NonFiniteLoss, match="validation loss became inf"):
        check_diverged(model, {"val_loss": math.inf})
    with torch.no_grad():
        model.bias.fill_(math.nan)
    with pytest.raises(NonFiniteLoss, match="weights became non-finite .* bias"):
        check_diverged(model, {"val_loss": 0.5})


def test_same_fingerprint_is_reused_and_any_change_retrains(make_cfg, tmp_path):
    out = tmp_path / "models" / "dice" / "seed0"
    first = train(make_cfg("loss=dice", "train.epochs=1"))
    stamp = (out / "model.pt").stat().st_mtime_ns
    # tracking and paths do not change the weights: reused, nothing logged
    again = train(make_cfg("loss=dice", "train.epochs=1", "tracking.log_model=true"))
    assert again.reused and again.mlflow_run_id == first.mlflow_run_id
    assert (out / "model.pt").stat().st_mtime_ns == stamp and len(_runs(tmp_path)) == 1
    # a loss option, or train.reuse=false, retrains
    changed = train(make_cfg("loss=dice", "train.epochs=1", "loss.smooth=2.0"))
    assert not changed.reused and (out / "model.pt").stat().st_mtime_ns != stamp
    forced = train(make_cfg("loss=dice", "train.epochs=1", "loss.smooth=2.0", "train.reuse=false"))
    assert not forced.reused and len(_runs(tmp_path)) == 3
    _, checkpoint = load_checkpoint(out / "model.pt")
    assert checkpoint["fingerprint"]["config"]["loss"]["smooth"] == 2.0
    assert "tracking" not in checkpoint["fingerprint"]["config"]


def test_changed_training_code_or_data_retrains(make_cfg, tmp_path, monkeypatch):
    from segloss.training import settings

    train(make_cfg("loss=bce", "train.epochs=1"))
    monkeypatch.setattr("segloss.fingerprint.code_version", lambda: "edited")
    assert not train(make_cfg("loss=bce", "train.epochs=1")).reused
    assert train(make_cfg("loss=bce", "train.epochs=1")).reused
    real = settings.load_meta
    monkeypatch.setattr(settings, "load_meta", lambda d: {**real(d), "data_hash": "other"})
    assert not train(make_cfg("loss=bce", "train.epochs=1")).reused


def test_code_version_covers_every_module_training_imports():
    from segloss.training import code_modules

    modules = code_modules()
    for name in ("segloss.training", "segloss.losses", "segloss.models", "segloss.metrics"):
        assert name in modules
    assert "segloss.data.prepared" in modules and "segloss.io" in modules
    assert "segloss.sweep" not in modules and "segloss.evaluation" not in modules
    assert "segloss.tracking" not in modules  # MLflow at the edges: not part of a model


def test_training_imports_no_mlflow_and_untracked_records_nothing(make_cfg, tmp_path):
    """segloss.training alone: no mlflow import, no store, the checkpoint's run ids None."""
    import subprocess
    import sys

    code = "import sys, segloss.training; assert 'mlflow' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
    from segloss.training import train as untracked_train

    summary = untracked_train(make_cfg("loss=bce", "train.epochs=1"))
    _, checkpoint = load_checkpoint(summary.model_path)
    assert summary.mlflow_run_id is None and checkpoint["mlflow_parent_run_id"] is None
    assert "mlflow_model_id" not in checkpoint and not (tmp_path / "mlflow.db").exists()


def test_fingerprint_stamp_decides_reuse_without_torch_and_is_never_trusted_alone(make_cfg):
    """fingerprint.json lets a job skip loading the model; a model.pt that is not the one the
    stamp hashed (replaced, or written without a new stamp) is not reused from the stamp."""
    from segloss.fingerprint import STAMP, quick_reuse

    cfg = make_cfg("loss=bce", "train.epochs=1")
    first = train(cfg)
    out = tmp_out = Path(first.model_path).parent
    quick = quick_reuse(cfg)
    assert quick.reused and quick.mlflow_run_id == first.mlflow_run_id
    assert quick_reuse(make_cfg("loss=bce", "train.epochs=2")) is None  # other config
    assert quick_reuse(make_cfg("loss=bce", "train.epochs=1", "train.reuse=false")) is None
    (tmp_out / "model.pt").write_bytes((out / "model.pt").read_bytes() + b"x")
    assert quick_reuse(cfg) is None
    (out / STAMP).unlink()
    assert quick_reuse(cfg) is None


def _settings(**overrides):
    t = {"batch_size": 4, "sampling": "uniform", "uniform_share": 0.1, "samples_per_epoch": None}
    return dataclasses.replace(TRAIN, **(t | overrides))


def test_uniform_sampling_is_the_shuffled_pass_it_replaces():
    """Every slice at most once per epoch, the same draws as one randperm, whole batches."""
    masks = torch.zeros(10, 8, 8, dtype=torch.uint8)
    batches = epoch_batches(masks, _settings(), torch.Generator().manual_seed(5))
    expected = torch.randperm(10, generator=torch.Generator().manual_seed(5)).split(4)[:2]
    assert [b.tolist() for b in batches] == [b.tolist() for b in expected]
    twice = torch.cat(epoch_batches(masks, _settings(samples_per_epoch=20), torch.Generator()))
    assert torch.bincount(twice, minlength=10).tolist() == [2] * 10  # two whole passes


def test_foreground_sampling_draws_slices_in_proportion_to_tumour_area():
    """Simulation with a known truth: weights share/n + (1 - share) * area / total area."""
    areas = torch.tensor([0, 0, 0, 0, 4, 12, 48])
    masks = torch.zeros(7, 8, 8, dtype=torch.uint8)
    for i, area in enumerate(areas.tolist()):
        masks[i].view(-1)[:area] = 1
    t = _settings(sampling="foreground", uniform_share=0.3, samples_per_epoch=70_000)
    drawn = torch.cat(epoch_batches(masks, t, torch.Generator().manual_seed(0)))
    assert len(drawn) == 70_000
    expected = 0.3 / 7 + 0.7 * areas / areas.sum()
    observed = torch.bincount(drawn, minlength=7) / len(drawn)
    assert torch.allclose(observed, expected.float(), atol=0.006), (observed, expected)
    none = epoch_batches(masks * 0, t, torch.Generator().manual_seed(0))  # no tumour anywhere
    assert torch.bincount(torch.cat(none), minlength=7).tolist() == [10_000] * 7


def test_validation_every_k_epochs_keeps_the_best_validated_epoch(make_cfg, tmp_path):
    result = train(make_cfg("loss=bce", "train.epochs=3", "train.val_every=2"))
    history = pd.read_csv(tmp_path / "models" / "bce" / "seed0" / "history.csv")
    assert history["val_dice"].isna().tolist() == [True, False, False]  # 2 and the last
    assert result.best_epoch in (2, 3) and not history["train_loss"].isna().any()
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    steps = [m.step for m in client.get_metric_history(result.mlflow_run_id, "val_dice")]
    assert steps == [2, 3]
    run = client.get_run(result.mlflow_run_id)
    assert run.data.params["train.val_every"] == "2"


@pytest.mark.parametrize(
    ("loss", "variant"), [("dice", "batch"), ("bce_dice_image", "image"), ("bce", "pixel")]
)
def test_the_mlflow_run_names_the_loss_variant(make_cfg, tmp_path, loss, variant):
    result = train(make_cfg(f"loss={loss}", "train.epochs=1"))
    run = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").get_run(result.mlflow_run_id)
    assert run.data.tags["loss_variant"] == variant
    assert run.info.run_name == f"{loss} ({variant}) seed0"
    assert run.data.params.get("loss.reduction") == (None if loss == "bce" else variant)


def test_a_second_factors_level_is_in_the_run_name_and_tags(make_cfg, tmp_path):
    cfg = make_cfg("loss=bce", "train.epochs=1", "factor=train.sampling", "train.sampling=uniform")
    result = train(cfg)
    assert Path(result.model_path).parents[2].name == "sampling_uniform"
    run = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").get_run(result.mlflow_run_id)
    assert run.info.run_name == "bce (pixel) sampling=uniform seed0"
    assert run.data.tags["sampling"] == "uniform"
