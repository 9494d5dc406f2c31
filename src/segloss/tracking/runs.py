"""Runs: create, end and find them; the host, PID and start time every run records, so the
runs a killed process left RUNNING can be ended (:func:`end_stale_runs`)."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass

from mlflow.entities import Param
from mlflow.exceptions import MlflowException
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from segloss import processes
from segloss.errors import first_line
from segloss.tracking.store import prepare, retry_locked, store_client

FINISHED, FAILED, KILLED = "FINISHED", "FAILED", "KILLED"
# Tags every run gets: where its process runs, so a dead process's runs can be found.
HOST_TAG, PID_TAG, PID_STARTED_TAG = "segloss.host", "segloss.pid", "segloss.pid_started"
REASON_TAG = "reason"  # why a run ended FAILED or KILLED
SLURM_JOB_TAG = "slurm_job_id"  # the SLURM job a run ran in (squeue/sacct id)
MAX_TAG_LENGTH = 5000  # MLflow's limit for a tag value


def start_run(
    uri: str,
    experiment: str,
    *,
    run_name: str,
    parent_run_id: str | None = None,
    tags: Mapping[str, object] | None = None,
    params: Mapping[str, object] | None = None,
) -> str:
    """Create a RUNNING run (nested under ``parent_run_id`` if given); its id.

    The run is tagged with this process's host, PID and start time (:func:`end_stale_runs`).
    """
    client = store_client(uri)
    experiment_id = prepare(uri, experiment)
    all_tags = {**_process_tags(), **{k: str(v) for k, v in (tags or {}).items()}}
    if parent_run_id:
        all_tags[MLFLOW_PARENT_RUN_ID] = parent_run_id
    run = retry_locked(client.create_run, experiment_id, tags=all_tags, run_name=run_name)
    # MLflow's log_batch splits the params into batches of its limit (100) itself
    params = [Param(k, v) for k, v in (params or {}).items()]
    retry_locked(client.log_batch, run.info.run_id, params=params)
    return run.info.run_id


def end_run(uri: str, run_id: str, status: str = FINISHED, reason: str | None = None) -> None:
    """Mark a run FINISHED, FAILED or KILLED; ``reason`` (why it failed or was killed) is kept
    as the run's ``reason`` tag. The one place where a run's end and its reason are written
    (sweeps, the SLURM launcher's jobs and stale-run clean-up all call it)."""
    client = store_client(uri)
    if reason:
        retry_locked(client.set_tag, run_id, REASON_TAG, first_line(str(reason))[:MAX_TAG_LENGTH])
    retry_locked(client.set_terminated, run_id, status)


def slurm_job_id() -> str | None:
    """Inside a SLURM job: its id as squeue shows it (``<array job>_<task>`` for an array
    task, as submitit names it too); None outside SLURM."""
    array_job, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array_job and task:
        return f"{array_job}_{task}"
    return os.environ.get("SLURM_JOB_ID")


def _process_tags() -> dict[str, str]:
    host, pid, started = processes.identity()
    tags = {HOST_TAG: host, PID_TAG: str(pid), PID_STARTED_TAG: f"{started:.2f}"}
    if job_id := slurm_job_id():  # in a SLURM job: the SLURM launcher finds its run by it
        tags[SLURM_JOB_TAG] = job_id
    return tags


def run_is_live(uri: str, run_id: str) -> bool:
    """Is ``run_id`` RUNNING in a process that still exists (or on another host, where that
    cannot be checked)?"""
    try:
        run = retry_locked(store_client(uri).get_run, run_id)
    except MlflowException:
        return False
    if run.info.status != "RUNNING":
        return False
    tags = run.data.tags
    if tags.get(HOST_TAG) != socket.gethostname() or not tags.get(PID_TAG, "").isdigit():
        return True
    started = float(tags[PID_STARTED_TAG]) if tags.get(PID_STARTED_TAG) else None
    return processes.alive(int(tags[PID_TAG]), started)


def end_stale_runs(uri: str, experiment: str) -> list[str]:
    """End as KILLED the RUNNING runs of ``experiment`` whose process is gone; their ids.

    Only runs recorded on this host (tag ``segloss.host``) whose PID no longer exists, or now
    belongs to a process started at another time, are ended: runs of live processes and of
    other machines are left alone. A sweep killed with ``kill -9`` leaves such runs.
    """
    client = store_client(uri)
    experiment_id = prepare(uri, experiment)
    running = retry_locked(
        client.search_runs, [experiment_id], filter_string="attributes.status = 'RUNNING'"
    )
    host, ended = socket.gethostname(), []
    for run in running:
        tags = run.data.tags
        if tags.get(HOST_TAG) != host or not tags.get(PID_TAG, "").isdigit():
            continue
        pid = int(tags[PID_TAG])
        started = float(tags[PID_STARTED_TAG]) if tags.get(PID_STARTED_TAG) else None
        if processes.alive(pid, started):
            continue
        end_run(
            uri,
            run.info.run_id,
            KILLED,
            reason=f"process {pid} on {host} ended without closing this run (found at the "
            "start of a later run)",
        )
        ended.append(run.info.run_id)
    return ended


def run_status(uri: str, run_id: str) -> str:
    """A run's status string (RUNNING, FINISHED, FAILED, KILLED, ...)."""
    return retry_locked(store_client(uri).get_run, run_id).info.status


def _children(uri: str, parent_run_id: str) -> list:
    client = store_client(uri)
    parent = retry_locked(client.get_run, parent_run_id)
    return retry_locked(
        client.search_runs,
        [parent.info.experiment_id],
        filter_string=f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent_run_id}'",
    )


@dataclass(frozen=True)
class RunInfo:
    run_id: str
    status: str
    tags: dict[str, str]


def child_runs(
    uri: str, parent_run_id: str, tags: Mapping[str, str] | None = None
) -> list[RunInfo]:
    """The runs nested under ``parent_run_id`` that carry every one of ``tags``."""
    wanted = dict(tags or {})
    return [
        RunInfo(run.info.run_id, run.info.status, dict(run.data.tags))
        for run in _children(uri, parent_run_id)
        if all(run.data.tags.get(k) == v for k, v in wanted.items())
    ]


def set_tags(uri: str, run_id: str, tags: Mapping[str, object]) -> None:
    """Set tags on an existing run (running or ended)."""
    client = store_client(uri)
    for key, value in tags.items():
        retry_locked(client.set_tag, run_id, key, str(value)[:MAX_TAG_LENGTH])


def child_statuses(uri: str, parent_run_id: str) -> list[str]:
    """Statuses of the runs nested under ``parent_run_id``."""
    return [run.info.status for run in _children(uri, parent_run_id)]


def end_running_children(uri: str, parent_run_id: str, status: str, reason: str) -> list[str]:
    """End every still-RUNNING child of a sweep (their jobs are gone); their ids."""
    ended = []
    for run in _children(uri, parent_run_id):
        if run.info.status == "RUNNING":
            end_run(uri, run.info.run_id, status, reason=reason)
            ended.append(run.info.run_id)
    return ended


def sweep_status(uri: str, parent_run_id: str, *, completed: bool) -> str:
    """A sweep's status from its children: KILLED if any was, else FAILED if any failed or the
    sweep did not complete, else FINISHED."""
    statuses = set(child_statuses(uri, parent_run_id))
    if KILLED in statuses:
        return KILLED
    if FAILED in statuses or not completed:
        return FAILED
    return FINISHED


def metric_history(uri: str, run_id: str, key: str) -> list[float]:
    """Every value of a run's metric ``key``, in step order (empty if never logged)."""
    history = retry_locked(store_client(uri).get_metric_history, run_id, key)
    return [m.value for m in sorted(history, key=lambda m: (m.step, m.timestamp))]


def run_seconds(uri: str, run_id: str) -> float | None:
    """A run's wall time, start to end, in seconds (None while it is running)."""
    info = retry_locked(store_client(uri).get_run, run_id).info
    return None if info.end_time is None else (info.end_time - info.start_time) / 1000
