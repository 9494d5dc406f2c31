"""pipelines/train.py through the real Hydra CLI: sweeps, launchers, MLflow runs, CLI errors.

Each subprocess pays the torch/mlflow imports (~5-10 s), so every case uses 1 epoch on the
32x32 tiny data set.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from helpers import Logged, runs, settings, stage_command

from segloss.models import load_checkpoint
from segloss.sweep import PARENT_RUN_FILE
from segloss.training import HISTORY_COLUMNS

pytestmark = pytest.mark.slow

PER_EPOCH = {"train_loss", "val_loss", "val_dice", "val_iou", "lr", "seconds"}


def run_train(repo: Path, tmp: Path, prepared: Path, *args: str) -> subprocess.CompletedProcess:
    """Run the CLI on ``prepared`` writing into ``tmp``, 1 epoch unless ``args`` say otherwise."""
    base = [
        f"paths.prepared={prepared}",
        f"paths.models={tmp / 'models'}",
        f"tracking.uri={uri(tmp)}",
        "train.epochs=1",
        f"hydra.sweep.dir={tmp / 'sweep'}",
        f"hydra.run.dir={tmp / 'run'}",
    ]
    given = {a.split("=")[0] for a in args}
    cmd = [
        *stage_command("train"),
        *args,
        *(b for b in base if b.split("=")[0] not in given),
    ]
    return subprocess.run(cmd, cwd=repo, capture_output=True, text=True, timeout=300)


def uri(tmp: Path) -> str:
    return f"sqlite:///{tmp / 'mlflow.db'}"


def split_parent(tmp: Path) -> tuple[Logged, list[Logged]]:
    found = runs(uri(tmp))
    parents = [r for r in found if r.parent is None]
    assert len(parents) == 1, [(r.id, r.parent) for r in found]
    parent = parents[0]
    assert (tmp / "sweep" / PARENT_RUN_FILE).read_text().strip() == parent.id
    children = [r for r in found if r.parent == parent.id]
    assert len(children) == len(found) - 1
    return parent, children


def test_tiny_sweep_writes_models_histories_and_nested_runs(repo_root, tiny_prepared, tmp_path):
    default = settings()
    proc = run_train(
        repo_root,
        tmp_path,
        tiny_prepared,
        "-m",
        "loss=bce,bce_dice",
        "seed=0",
        "train.num_threads=1",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    parent, children = split_parent(tmp_path)
    assert parent.status == "FINISHED"
    assert sorted(c.tags["loss"] for c in children) == ["bce", "bce_dice"]
    client = mlflow.MlflowClient(uri(tmp_path))
    for child in children:
        loss = child.tags["loss"]
        out = tmp_path / "models" / loss / "seed0"
        history = pd.read_csv(out / "history.csv")
        assert list(history.columns) == HISTORY_COLUMNS and history["epoch"].tolist() == [1]
        _, checkpoint = load_checkpoint(out / "model.pt")
        assert checkpoint["mlflow_run_id"] == child.id
        assert checkpoint["mlflow_parent_run_id"] == parent.id
        assert child.status == "FINISHED"
        assert child.tags["seed"] == "0" and len(child.tags["git_commit"]) == 40
        assert child.tags["data_hash"] == checkpoint["data"]["data_hash"]
        assert child.params["train.lr"] == "0.001" and child.params["loss.name"] == loss
        assert child.params["model.encoder_name"] == default.model.encoder_name
        for metric in PER_EPOCH:
            assert len(client.get_metric_history(child.id, metric)) == 1, metric
        artifacts = {a.path for a in client.list_artifacts(child.id)}
        assert artifacts == {"config.yaml", "history.csv", "splits.csv"}
        experiment = client.get_run(child.id).info.experiment_id
        models = client.search_logged_models(
            [experiment], filter_string=f"source_run_id = '{child.id}'"
        )
        assert len(models) == 1


def test_failed_job_ends_failed_and_the_sweep_goes_on(repo_root, tiny_prepared, tmp_path):
    proc = run_train(
        repo_root,
        tmp_path,
        tiny_prepared,
        "-m",
        "loss=bce",
        "seed=0",
        "loss.pos_weight=inf,2.0",  # the first job's loss is not finite
        "train.num_threads=1",
        "tracking.log_model=false",
    )
    assert proc.returncode != 0
    assert "loss bce, seed 0, epoch 1: training loss became" in proc.stderr
    parent, children = split_parent(tmp_path)
    by_weight = {c.params["loss.pos_weight"]: c.status for c in children}
    assert by_weight == {"inf": "FAILED", "2.0": "FINISHED"}
    assert parent.status == "FAILED"
    assert (tmp_path / "models" / "bce" / "seed0" / "model.pt").is_file()


def test_joblib_parallel_jobs_log_every_run_param_and_metric(repo_root, tiny_prepared, tmp_path):
    proc = run_train(
        repo_root,
        tmp_path,
        tiny_prepared,
        "-m",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=3",
        "loss=bce,dice,bce_dice",
        "seed=0",
        "tracking.log_model=false",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    parent, children = split_parent(tmp_path)
    assert parent.status == "FINISHED" and len(children) == 3
    assert {c.status for c in children} == {"FINISHED"}
    client = mlflow.MlflowClient(uri(tmp_path))
    for child in children:
        checkpoint = load_checkpoint(
            tmp_path / "models" / child.tags["loss"] / "seed0" / "model.pt"
        )
        assert set(child.params) == set(_flat_keys(checkpoint[1]["config"]))
        assert child.params["train.num_threads"] == "1"  # 2 cores // 3 jobs, at least 1
        for metric in PER_EPOCH:
            assert len(client.get_metric_history(child.id, metric)) == 1, metric


def _flat_keys(config: dict, prefix: str = "") -> list[str]:
    keys = []
    for k, v in config.items():
        keys += _flat_keys(v, f"{prefix}{k}.") if isinstance(v, dict) else [f"{prefix}{k}"]
    return keys


def test_submitit_local_job_writes_its_model_and_child_run(repo_root, tiny_prepared, tmp_path):
    proc = run_train(
        repo_root,
        tmp_path,
        tiny_prepared,
        "-m",
        "hydra/launcher=submitit_local",
        "loss=dice",
        "seed=1",
        "tracking.log_model=false",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    parent, children = split_parent(tmp_path)
    assert parent.status == "FINISHED"
    assert [(c.tags["loss"], c.status) for c in children] == [("dice", "FINISHED")]
    assert (tmp_path / "models" / "dice" / "seed1" / "history.csv").is_file()


def test_cli_errors_are_one_line_before_any_work(repo_root, tiny_prepared, tmp_path):
    single = run_train(repo_root, tmp_path, tiny_prepared, "train.epochs=0")
    assert single.returncode == 2
    assert single.stderr.strip().splitlines()[-1].startswith("error: train.epochs must be")
    sweep = run_train(repo_root, tmp_path, tmp_path / "missing", "-m", "loss=bce,dice")
    assert sweep.returncode == 2
    assert (
        "run the prepare stage" in sweep.stderr and "Launching" not in sweep.stdout + sweep.stderr
    )
    assert not (tmp_path / "models").exists() and not (tmp_path / "mlflow.db").exists()


def test_a_sweep_over_a_missing_fold_fails_before_any_job(repo_root, tmp_path):
    """Every job's fold is checked at the sweep's start, not when that job's turn comes."""
    import numpy as np
    from conftest import make_blob_split

    from segloss.data.folds import fold_roles
    from segloss.data.prepared import write_prepared

    patients = [f"P{i}" for i in range(6)]
    pool = make_blob_split(np.random.default_rng(0), patients, 4, 32)
    burden = {p: float(pool.masks[pool.patients == p].mean()) for p in patients}
    meta = {"source": "blobs", "cv": {"folds": 2}, "folds": fold_roles(burden, 2, 0, 0.25)}
    prepared = write_prepared(tmp_path / "prepared", {"all": pool}, meta)
    sweep = run_train(repo_root, tmp_path, prepared, "-m", "cv.folds=2", "cv.fold=0,2")
    assert sweep.returncode == 2, sweep.stderr
    last = sweep.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "has 2 folds; choose 0..1" in last
    assert not (tmp_path / "models").exists()


@pytest.mark.parametrize("tracked", [True, False], ids=["mlflow", "tracking=none"])
def test_parallel_sweep_shows_one_display_and_logs_epochs_per_job(
    repo_root, tiny_prepared, tmp_path, tracked
):
    """joblib: no per-job progress bars on the terminal (they interleaved), one sweep-level
    display (models done of total, elapsed, ETA), tracked or not; each job's epochs go to
    its own log."""
    tracking = ("tracking.log_model=false",) if tracked else ("tracking=none", "tracking.uri=null")
    proc = run_train(
        repo_root,
        tmp_path,
        tiny_prepared,
        "-m",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "loss=bce,dice",
        "seed=0",
        "train.epochs=2",
        *tracking,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    assert "batch/s" not in out and "s/batch" not in out  # no tqdm bar drawn
    assert "sweep: 2/2 models done" in out and "ETA" in out
    for num in ("0", "1"):
        log = (tmp_path / "sweep" / num / "train.log").read_text()
        assert "epoch 1/2: loss" in log and "epoch 2/2: loss" in log
    states = {p.name: p.read_text() for p in (tmp_path / "sweep" / "progress").glob("*.json")}
    assert set(states) == {"0.json", "1.json"} and all('"done"' in s for s in states.values())


def test_single_run_keeps_its_progress_bar(repo_root, tiny_prepared, tmp_path):
    proc = run_train(repo_root, tmp_path, tiny_prepared, "loss=bce", "tracking.log_model=false")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "batch/s" in proc.stderr or "s/batch" in proc.stderr
