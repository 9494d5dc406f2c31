"""In a sweep job's process: the sweep's parent run, the launcher to watch, torch threads."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import joblib
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from segloss import processes

PARENT_RUN_FILE = "mlflow_parent_run_id"
ENTRY_POINT = "pipelines/train.py"  # the runs' source (the MLflow UI's Source column)
# "<pid>:<start time>:<host>" of the launching process, for jobs in other processes
LAUNCHER_ENV = "SEGLOSS_SWEEP_LAUNCHER"


_watching: list[int] = []


@contextlib.contextmanager
def interruptible_job() -> Iterator[None]:
    """A sweep job, from its first line to its last: SIGTERM ends it as Ctrl-C does (a run in
    progress ends KILLED), and a job in another process on the launcher's host gets that
    SIGTERM once the launching process is gone.

    It covers the whole job, not only its run, because submitit's job process otherwise
    ignores SIGTERM ("Bypassing signal SIGTERM"): a job still starting (imports, data) when its
    launcher dies must end too.
    """
    with processes.sigterm_as_interrupt():
        _watch_launcher()  # after the handler: its SIGTERM must never find submitit's
        yield


def _watch_launcher() -> None:
    """SIGTERM this process once the launching process is gone (once per process: a joblib
    worker keeps its watcher from job to job)."""
    value = os.environ.get(LAUNCHER_ENV, "")
    if _watching or value.count(":") < 2:
        return
    pid, started, host = value.split(":", 2)
    if host != socket.gethostname() or int(pid) == os.getpid():
        return
    _watching.append(int(pid))
    processes.watch(int(pid), float(started))


def parent_run_id() -> str | None:
    """In a multirun job: the sweep's parent run id (None in a single run)."""
    hydra = HydraConfig.get()
    if hydra.mode != RunMode.MULTIRUN:
        return None
    path = Path(hydra.sweep.dir) / PARENT_RUN_FILE
    return path.read_text().strip() if path.is_file() else None


def num_threads(requested: int | None) -> int:
    """Torch threads for this job: ``requested``, else cores divided by parallel jobs.

    joblib: ``n_jobs`` jobs share the machine (``-1`` = all cores, so 1 thread each);
    submitit: ``cpus_per_task`` (1 if unset); sequential: every core.
    """
    if requested:
        return int(requested)
    hydra = HydraConfig.get()
    cores = joblib.cpu_count()
    if hydra.mode != RunMode.MULTIRUN:
        return cores
    launcher = hydra.launcher
    target = launcher.get("_target_", "")
    if "joblib" in target:
        n_jobs = launcher.n_jobs
        jobs = n_jobs if n_jobs > 0 else cores + 1 + n_jobs
        return max(1, cores // max(1, jobs))
    if "submitit" in target:
        return int(launcher.cpus_per_task or 1)
    return cores
