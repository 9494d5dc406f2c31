"""The training sweep on a real one-node SLURM cluster (tests/slurm_cluster.py): jobs go through
sbatch as a job array, models and MLflow runs come back, a job SLURM cancels is recorded and
named, and the rerun trains only what is missing.

``pytest -k slurm`` runs these; they skip where the daemons cannot start (CI requires them).
"""

from __future__ import annotations

import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest
from helpers import compose, runs
from hydra.utils import instantiate
from slurm_cluster import Cluster, slurm_cluster_fixture  # noqa: F401 (the fixture)
from test_train_sweep import run_train, split_parent, uri

from segloss.models import load_checkpoint

# One session-scoped cluster: under pytest-xdist every SLURM test runs on the same worker.
pytestmark = pytest.mark.xdist_group("slurm")

SWEEP = ("-m", "loss=bce,bce_dice", "seed=0")


def slurm_args(cluster: Cluster, *extra: str) -> tuple[str, ...]:
    """The sweep on the test cluster: 1 CPU and 1 GB per job, so both jobs run at once."""
    return (
        *SWEEP,
        "hydra/launcher=slurm",
        f"hydra.launcher.partition={cluster.partition}",
        "hydra.launcher.cpus_per_task=1",
        "hydra.launcher.mem_gb=1",
        "hydra.launcher.poll_s=1",
        *extra,
    )


def submitit_job_ids(sweep_dir: Path) -> list[str]:
    """Job ids submitit recorded: one folder per array task, named ``<array job>_<task>``."""
    folders = (sweep_dir / ".submitit").iterdir()
    return sorted(p.name for p in folders if p.is_dir() and re.fullmatch(r"\d+_\d+", p.name))


@pytest.mark.parametrize(
    ("launcher", "cpus", "device"), [("slurm", 4, "cpu"), ("slurm_gpu", 8, "cuda")]
)
def test_slurm_launcher_files_set_threads_to_cpus_and_the_device(repo_root, launcher, cpus, device):
    cfg = compose(f"hydra/launcher={launcher}", hydra=True)
    resized = compose(f"hydra/launcher={launcher}", "hydra.launcher.cpus_per_task=3", hydra=True)
    assert cfg.hydra.launcher.cpus_per_task == cpus and cfg.hydra.launcher.timeout_min == 60
    assert cfg.hydra.launcher.mem_gb >= 8
    assert cfg.hydra.launcher.gpus_per_task == (1 if device == "cuda" else None)
    made = instantiate(resized.hydra.launcher)
    assert made.task_overrides == ["train.num_threads=3", f"train.device={device}"]


@pytest.mark.slow
def test_slurm_sweep_submits_an_array_and_every_model_and_run_comes_back(
    slurm_cluster, repo_root, tiny_prepared, tmp_path
):
    proc = run_train(repo_root, tmp_path, tiny_prepared, *slurm_args(slurm_cluster))
    assert proc.returncode == 0, proc.stderr[-3000:]
    parent, children = split_parent(tmp_path)
    assert parent.status == "FINISHED"
    assert sorted(c.tags["loss"] for c in children) == ["bce", "bce_dice"]
    assert {c.status for c in children} == {"FINISHED"}

    # Both jobs are tasks of one array that went through sbatch to the test partition.
    ids = submitit_job_ids(tmp_path / "sweep")
    assert len(ids) == 2 and len({i.split("_")[0] for i in ids}) == 1, ids
    assert sorted(c.tags["slurm_job_id"] for c in children) == ids
    script = next((tmp_path / "sweep" / ".submitit").glob("*/*_submission.sh")).read_text()
    for flag in (
        f"--partition={slurm_cluster.partition}", "--cpus-per-task=1", "--mem=1GB", "--time=60"
    ):  # fmt: skip
        assert f"#SBATCH {flag}\n" in script
    finished = slurm_cluster.finished_jobs()
    for job_id in ids:
        record = finished[job_id]
        assert record["JobState"] == "COMPLETED" and record["Partition"] == slurm_cluster.partition
        assert record["ProcCnt"] == "1" and "mem=1G" in record["Tres"]

    for child in children:
        out = tmp_path / "models" / child.tags["loss"] / "seed0"
        _, checkpoint = load_checkpoint(out / "model.pt")
        assert checkpoint["mlflow_run_id"] == child.id
        assert checkpoint["mlflow_parent_run_id"] == parent.id
        assert pd.read_csv(out / "history.csv")["epoch"].tolist() == [1]
        # threads = CPUs per task, and the CPU, from conf/hydra/launcher/slurm.yaml
        assert child.params["train.num_threads"] == "1"
        assert child.params["train.device"] == "cpu"


def running_jobs(tmp: Path) -> dict[str, str]:
    """SLURM job id of each loss whose MLflow run is RUNNING (its job is training)."""
    return {
        r.tags["loss"]: r.tags["slurm_job_id"]
        for r in runs(uri(tmp))
        if r.status == "RUNNING" and "slurm_job_id" in r.tags and "loss" in r.tags
    }


def wait_for_running(tmp: Path, losses: set[str], timeout: float = 240) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while not losses <= set(jobs := running_jobs(tmp)):
        if time.monotonic() > deadline:
            return jobs
        time.sleep(0.5)
    return jobs


def cancel_when_running(cluster: Cluster, tmp: Path, loss: str, found: dict) -> None:
    """scancel the SLURM job of ``loss``'s run as soon as that run is RUNNING (training)."""
    if loss in (jobs := wait_for_running(tmp, {loss})):
        found["job_id"] = jobs[loss]
        cluster.run("scancel", jobs[loss])


@pytest.mark.slow
def test_slurm_cancelled_job_is_killed_named_and_the_rerun_trains_only_it(
    slurm_cluster, repo_root, tiny_prepared, tmp_path
):
    # 40 epochs keep the jobs training for ~10 s: time enough to cancel one of them.
    args = slurm_args(slurm_cluster, "train.epochs=40", "tracking.log_model=false")
    found: dict[str, str] = {}
    canceller = threading.Thread(
        target=cancel_when_running, args=(slurm_cluster, tmp_path, "bce", found)
    )
    canceller.start()
    proc = run_train(repo_root, tmp_path, tiny_prepared, *args)
    canceller.join()
    assert "job_id" in found, "the bce job never showed a RUNNING run to cancel"
    job_id = found["job_id"]
    assert proc.returncode != 0
    assert f"loss bce, seed 0: SLURM job {job_id} ended CANCELLED" in proc.stderr

    parent, children = split_parent(tmp_path)
    by_loss = {child.tags["loss"]: child for child in children}
    killed, other = by_loss["bce"], by_loss["bce_dice"]
    assert killed.status == "KILLED" and killed.tags["slurm_state"] == "CANCELLED"
    assert killed.tags["reason"].startswith(f"SLURM job {job_id} ended CANCELLED")
    assert f"MLflow run {killed.id} KILLED" in proc.stderr
    assert other.status == "FINISHED"  # the other job ran to its end
    assert parent.status == "KILLED"
    models = tmp_path / "models"
    assert not (models / "bce" / "seed0" / "model.pt").exists()
    done = models / "bce_dice" / "seed0" / "model.pt"
    first = done.stat().st_mtime_ns

    # The same sweep again: the finished model is reused, only the cancelled one trains.
    again = run_train(
        repo_root, tmp_path, tiny_prepared, *args, f"hydra.sweep.dir={tmp_path / 'sweep2'}"
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert done.stat().st_mtime_ns == first
    _, checkpoint = load_checkpoint(models / "bce" / "seed0" / "model.pt")
    found = runs(uri(tmp_path))
    (rerun,) = [r for r in found if r.tags.get("sweep_dir") == str(tmp_path / "sweep2")]
    assert rerun.status == "FINISHED"
    (retrained,) = [r for r in found if r.parent == rerun.id]
    assert (retrained.tags["loss"], retrained.status) == ("bce", "FINISHED")
    assert checkpoint["mlflow_run_id"] == retrained.id


@pytest.mark.slow
def test_slurm_sigterm_of_the_sweep_cancels_its_jobs(
    slurm_cluster, repo_root, tiny_prepared, tmp_path
):
    args = slurm_args(slurm_cluster, "train.epochs=400", "tracking.log_model=false")
    done: dict[str, subprocess.CompletedProcess] = {}
    sweep = threading.Thread(
        target=lambda: done.update(proc=run_train(repo_root, tmp_path, tiny_prepared, *args))
    )
    sweep.start()
    jobs = wait_for_running(tmp_path, {"bce", "bce_dice"})
    (launcher,) = [
        p for p in psutil.Process().children() if "pipelines/train.py" in " ".join(p.cmdline())
    ]
    launcher.send_signal(signal.SIGTERM)
    sweep.join()
    assert set(jobs) == {"bce", "bce_dice"}, jobs
    assert done["proc"].returncode != 0
    output = done["proc"].stdout + done["proc"].stderr  # Hydra logs to stdout
    assert "cancelling the sweep's SLURM jobs" in output, output[-3000:]

    deadline = time.monotonic() + 60  # the jobs end within SLURM's KillWait (10 s here)
    while not set(jobs.values()) <= set(finished := slurm_cluster.finished_jobs()):
        assert time.monotonic() < deadline, f"jobs {jobs} still not ended"
        time.sleep(1)
    assert {finished[j]["JobState"] for j in jobs.values()} == {"CANCELLED"}
    parent, children = split_parent(tmp_path)
    assert parent.status == "KILLED", output[-3000:]
    assert {c.status for c in children} == {"KILLED"}, output[-3000:]
    assert not list((tmp_path / "models").glob("*/*/model.pt"))


def cancel_second_task_when_submitted(cluster: Cluster, sweep_dir: Path, found: dict) -> None:
    """scancel task 1 of the sweep's array as soon as submitit has recorded it (pending)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ids = submitit_job_ids(sweep_dir) if (sweep_dir / ".submitit").is_dir() else []
        if second := [i for i in ids if i.endswith("_1")]:
            found["job_id"] = second[0]
            cluster.run("scancel", second[0])
            return
        time.sleep(0.2)


@pytest.mark.slow
def test_slurm_job_cancelled_before_it_starts_still_gets_a_failed_run(
    slurm_cluster, repo_root, tiny_prepared, tmp_path
):
    # One task at a time: task 1 waits in the queue while task 0 runs.
    args = slurm_args(slurm_cluster, "hydra.launcher.array_parallelism=1")
    found: dict[str, str] = {}
    canceller = threading.Thread(
        target=cancel_second_task_when_submitted, args=(slurm_cluster, tmp_path / "sweep", found)
    )
    canceller.start()
    proc = run_train(repo_root, tmp_path, tiny_prepared, *args, "tracking.log_model=false")
    canceller.join()
    job_id = found["job_id"]
    assert proc.returncode != 0
    parent, children = split_parent(tmp_path)
    by_loss = {child.tags["loss"]: child for child in children}
    assert by_loss["bce"].status == "FINISHED"
    never = by_loss["bce_dice"]  # recorded by the launcher: the job never started training
    assert never.tags["slurm_job_id"] == job_id and never.tags["seed"] == "0"
    # Whether the controller keeps a record of a queued array task that is cancelled depends
    # on whether it had been split from the array yet; without a record (and no sacct here)
    # the job's end is known, not its state.
    state = never.tags["slurm_state"]
    assert (state, never.status) in {("CANCELLED", "KILLED"), ("UNKNOWN", "FAILED")}
    assert f"loss bce_dice, seed 0: SLURM job {job_id} ended {state}" in proc.stderr
    assert parent.status == never.status
    assert (tmp_path / "models" / "bce" / "seed0" / "model.pt").is_file()
    assert not (tmp_path / "models" / "bce_dice").exists()


@pytest.mark.slow
def test_slurm_refusing_the_jobs_is_one_error_line(
    slurm_cluster, repo_root, tiny_prepared, tmp_path
):
    args = [a for a in slurm_args(slurm_cluster) if not a.startswith("hydra.launcher.partition")]
    proc = run_train(
        repo_root, tmp_path, tiny_prepared, *args, "hydra.launcher.partition=no_such_partition"
    )
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: SLURM refused the sweep's jobs: sbatch: error:"), last
    assert "partition" in last.lower()
    assert not (tmp_path / "models").exists()
