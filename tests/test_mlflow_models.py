"""What an MLflow user sees of a training run: a pickle-free logged model that round-trips,
the data sets, system metrics, source tags; and runs without MLflow (``tracking=none``)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from helpers import settings, stage_command

from segloss.data.prepared import load_meta, load_split
from segloss.models import load_checkpoint, preprocess
from segloss.sweep.tracked import train

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(repo_root, tiny_prepared, tmp_path_factory):
    """One model trained in-process on the tiny data, its model logged, system metrics every
    second: (summary, checkpoint, tracking uri)."""
    tmp = tmp_path_factory.mktemp("logged")
    overrides = [
        f"paths.prepared={tiny_prepared}",
        f"paths.models={tmp / 'models'}",
        f"tracking.uri=sqlite:///{tmp / 'mlflow.db'}",
        "tracking.system_metrics_interval=1",
        "train.epochs=2",
        "train.num_threads=1",
        "loss=bce_dice",
    ]
    cfg = settings(*overrides)
    threads = torch.get_num_threads()
    try:
        summary = train(cfg)
    finally:
        torch.set_num_threads(threads)
    _, checkpoint = load_checkpoint(summary.model_path)
    return summary, checkpoint, cfg.tracking.uri


def test_logged_model_is_pickle_free_with_signature_and_example(trained):
    summary, checkpoint, uri = trained
    client = mlflow.MlflowClient(uri)
    model_id = checkpoint["mlflow_model_id"]
    logged = client.get_logged_model(model_id)
    assert logged.source_run_id == summary.mlflow_run_id
    assert logged.tags["loss"] == "bce_dice" and logged.tags["seed"] == "0"
    local = Path(mlflow.artifacts.download_artifacts(f"models:/{model_id}"))
    files = {p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file()}
    assert "data/model.pt2" in files and not any(f.endswith(".pth") for f in files), files
    mlmodel = yaml.safe_load((local / "MLmodel").read_text())
    assert "pytorch" in mlmodel["flavors"]
    inputs = yaml.safe_load(mlmodel["signature"]["inputs"])
    assert inputs[0]["tensor-spec"]["shape"] == [-1, 3, 32, 32]
    assert inputs[0]["tensor-spec"]["dtype"] == "float32"
    assert mlmodel["saved_input_example_info"]["type"] == "ndarray"


def test_logged_model_predicts_the_same_masks_as_the_checkpoint(trained, tiny_prepared):
    summary, checkpoint, uri = trained
    assert not os.environ.get("MLFLOW_ALLOW_PICKLE_DESERIALIZATION")  # MLflow's pickle check on
    mlflow.set_tracking_uri(uri)
    loaded = mlflow.pytorch.load_model(f"models:/{checkpoint['mlflow_model_id']}")
    reference, _ = load_checkpoint(summary.model_path)
    test = load_split(tiny_prepared, "test")
    x = preprocess(torch.from_numpy(np.array(test.images[:5])))  # batch 5: not the example's 2
    with torch.inference_mode():
        ours, theirs = reference(x), loaded(x)
    assert theirs.shape == (5, 1, 32, 32)
    torch.testing.assert_close(theirs, ours, rtol=1e-4, atol=1e-4)
    assert torch.equal(theirs > 0, ours > 0)


def test_run_has_datasets_splits_system_metrics_and_source(trained, tiny_prepared):
    summary, checkpoint, uri = trained
    client = mlflow.MlflowClient(uri)
    run = client.get_run(summary.mlflow_run_id)
    meta = load_meta(tiny_prepared)
    inputs = {
        next(t.value for t in d.tags if t.key == "mlflow.data.context"): d.dataset
        for d in run.inputs.dataset_inputs
    }
    assert set(inputs) == {"training", "validation"}
    assert {d.digest for d in inputs.values()} == {meta["data_hash"]}
    assert inputs["training"].name == "blobs-train"
    assert '"num_rows": 18' in inputs["training"].profile  # 3 patients x 6 slices
    local = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="splits.csv")
    splits = pd.read_csv(local)
    for context, split in (("training", "train"), ("validation", "val"), ("testing", "test")):
        patients = splits.loc[splits["split"] == context, "patient"]
        assert sorted(patients) == sorted(meta["splits"][split])
    system = {k for k in run.data.metrics if k.startswith("system/")}
    assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= system
    assert run.data.tags["mlflow.source.name"] == "pipelines/train.py"
    assert len(run.data.tags["mlflow.source.git.commit"]) == 40


def test_tracking_none_trains_without_mlflow(repo_root, tiny_prepared, tmp_path):
    cmd = [
        *stage_command("train"),
        "-m",
        "tracking=none",
        "loss=bce",
        "seed=0",
        "train.epochs=1",
        "train.num_threads=1",
        f"paths.prepared={tiny_prepared}",
        f"paths.models={tmp_path / 'models'}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
    ]
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'env.db'}"}
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _, checkpoint = load_checkpoint(tmp_path / "models" / "bce" / "seed0" / "model.pt")
    assert checkpoint["mlflow_run_id"] is None and checkpoint["mlflow_parent_run_id"] is None
    assert not list(tmp_path.glob("*.db")) and not (tmp_path / "mlartifacts").exists()
    assert not (tmp_path / "sweep" / "mlflow_parent_run_id").exists()
    # the composed config printed as a tree at start (rich)
    assert "── tracking" in proc.stdout and "uri: null" in proc.stdout


def test_run_logs_the_time_spent_in_model_steps(trained):
    summary, _, uri = trained
    from segloss import tracking

    steps = tracking.metric_history(uri, summary.mlflow_run_id, "step_seconds")
    epochs = tracking.metric_history(uri, summary.mlflow_run_id, "seconds")
    assert len(steps) == len(epochs) == 2
    assert all(0 < step < epoch for step, epoch in zip(steps, epochs, strict=True))
