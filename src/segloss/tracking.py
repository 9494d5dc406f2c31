"""MLflow tracking: the only module that imports mlflow.

Runs are driven through :class:`mlflow.MlflowClient` with explicit run ids rather than the
fluent API's process-global "active run", because sweep jobs run in other processes
(joblib, submitit) and a reused worker must not inherit a previous job's run. A child run is
nested under its sweep's parent run by the ``mlflow.parentRunId`` tag, which is exactly what
``mlflow.start_run(nested=True)`` writes.

SQLite with parallel writers: the schema is created (or migrated) once, under a file lock
beside the database (``<db>.lock``), so two sweeps started together on a fresh store do not
race in MLflow's migrations; every write retries (tenacity) while SQLite reports "database
is locked".

Every run records where it runs (tags ``segloss.host``, ``segloss.pid``,
``segloss.pid_started``), so a later sweep can end as KILLED the runs that a process killed
with ``kill -9`` left RUNNING (:func:`end_stale_runs`). A run that ends FAILED or KILLED
carries the reason as the tag ``reason`` (:func:`end_run`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import filelock
import mlflow
import numpy as np
import pandas as pd
import tenacity
from mlflow.entities import DatasetInput, InputTag, Metric, Param
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.types.schema import Schema, TensorSpec
from mlflow.utils.mlflow_tags import (
    MLFLOW_DATASET_CONTEXT,
    MLFLOW_GIT_COMMIT,
    MLFLOW_PARENT_RUN_ID,
    MLFLOW_SOURCE_NAME,
    MLFLOW_SOURCE_TYPE,
)
from torch import nn

from segloss import processes
from segloss.errors import SeglossError

T = TypeVar("T")

FINISHED, FAILED, KILLED = "FINISHED", "FAILED", "KILLED"
MAX_PARAMS_PER_BATCH = 100  # MLflow's limit for one log_batch call
LOCK_RETRIES = 12
MODEL_PIP_REQUIREMENTS = ["torch", "segmentation-models-pytorch"]
# Tags every run gets: where its process runs, so a dead process's runs can be found.
HOST_TAG, PID_TAG, PID_STARTED_TAG = "segloss.host", "segloss.pid", "segloss.pid_started"
REASON_TAG = "reason"  # why a run ended FAILED or KILLED
SLURM_JOB_TAG = "slurm_job_id"  # the SLURM job a run ran in (squeue/sacct id)
MAX_TAG_LENGTH = 5000  # MLflow's limit for a tag value
SYSTEM_METRICS_INTERVAL = 10.0  # seconds between samples of CPU, memory, disk, network


def enabled(uri: str | None) -> bool:
    """Is tracking on? ``tracking.uri: null`` (``tracking=none``) turns every call off."""
    return bool(uri) and str(uri).lower() != "none"


def source_tags(entry_point: str, cwd: str | os.PathLike | None = None) -> dict[str, str]:
    """The tags the MLflow UI's Source column shows: the entry point and the git commit."""
    return {
        MLFLOW_SOURCE_NAME: entry_point,
        MLFLOW_SOURCE_TYPE: "LOCAL",
        MLFLOW_GIT_COMMIT: git_commit(cwd),
    }


class TrackingError(SeglossError):
    """The tracking server or store cannot be used."""


def _is_locked(exc: BaseException) -> bool:
    # SQLAlchemy OperationalError, or the same wrapped in an MlflowException. A "UNIQUE
    # constraint failed" comes from two processes writing the same tag at once (e.g. both
    # ending one run with a reason): MLflow's select-then-insert lost the race, and the retry
    # finds the row and updates it.
    text = str(exc)
    return "database is locked" in text or "UNIQUE constraint failed" in text


def _retry_locked(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call ``fn``, retrying with jittered exponential backoff while SQLite says "database is
    locked" (up to ``LOCK_RETRIES`` attempts); any other error is raised at once."""
    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception(_is_locked),
        stop=tenacity.stop_after_attempt(LOCK_RETRIES),
        wait=tenacity.wait_random_exponential(multiplier=0.05, max=2.0),
        sleep=lambda seconds: time.sleep(seconds),  # looked up at call time (tests patch it)
        reraise=True,
    )
    return retrying(fn, *args, **kwargs)


def check_reachable(uri: str | None, timeout: float = 5.0) -> None:
    """For an http(s) URI, fail fast with one clear error if the server does not answer.

    MLflow's own client would retry for minutes before failing; this runs before any work.
    """
    if not enabled(uri) or not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout):
            pass
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise TrackingError(
            f"MLflow tracking server {uri} is unreachable ({reason}); start it "
            "(`mlflow server --host 127.0.0.1 --port 5000`) or use tracking.uri=sqlite:///mlflow.db"
        ) from exc


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (None for any other store)."""
    if uri.startswith("sqlite:///"):
        return Path(uri.removeprefix("sqlite:///"))
    return None


def _artifact_location(uri: str) -> str | None:
    """For a local SQLite store, keep artifacts beside the database (``mlartifacts/``)."""
    db = sqlite_path(uri)
    return (db.resolve().parent / "mlartifacts").as_uri() if db is not None else None


@contextlib.contextmanager
def _schema_lock(uri: str) -> Iterator[None]:
    """For SQLite: hold ``<db>.lock`` while MLflow creates or migrates the schema."""
    db = sqlite_path(uri)
    if db is None:
        yield
        return
    with filelock.FileLock(f"{db}.lock", timeout=120):
        yield


@functools.cache
def _client(uri: str) -> mlflow.MlflowClient:
    """One client per store and process, built under the schema lock.

    ``MlflowClient(uri)`` builds the store at once, and for SQLite that creates or migrates
    the tables; two processes doing that together on a fresh file fail ("Online migration
    expected to match one row", "table _alembic_tmp_metrics already exists").
    """
    with _schema_lock(uri):
        return _retry_locked(mlflow.MlflowClient, tracking_uri=uri)


def prepare(uri: str | None, experiment: str) -> str | None:
    """Check the store, create the database and the experiment if needed; its id.

    A ``sqlite:///`` URI whose folder does not exist is an error (nothing is created). With
    tracking off (:func:`enabled`) nothing is checked and the id is None.
    """
    if not enabled(uri):
        return None
    check_reachable(uri)
    db = sqlite_path(uri)
    if db is not None and not db.parent.is_dir():
        raise TrackingError(
            f"tracking.uri={uri}: folder {db.parent} does not exist; create it or point "
            "tracking.uri at an existing folder"
        )
    try:
        client = _client(uri)
    except filelock.Timeout as exc:
        raise TrackingError(f"tracking.uri={uri}: {exc}") from exc
    found = _retry_locked(client.get_experiment_by_name, experiment)
    if found is not None:
        return found.experiment_id
    try:
        return _retry_locked(client.create_experiment, experiment, _artifact_location(uri))
    except MlflowException:  # created meanwhile by another process
        return _retry_locked(client.get_experiment_by_name, experiment).experiment_id


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested mapping -> ``{"train.lr": "0.001", ...}`` (lists kept as their string)."""
    flat: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, prefix=f"{name}."))
        else:
            flat[name] = str(value)
    return flat


def git_commit(cwd: str | os.PathLike | None = None) -> str:
    """The current git commit, ``unknown`` outside a repository."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return out.stdout.strip()


def start_run(
    uri: str,
    experiment: str,
    *,
    run_name: str,
    parent_run_id: str | None = None,
    tags: Mapping[str, Any] | None = None,
    params: Mapping[str, Any] | None = None,
) -> str:
    """Create a RUNNING run (nested under ``parent_run_id`` if given); its id.

    The run is tagged with this process's host, PID and start time (:func:`end_stale_runs`).
    """
    client = _client(uri)
    experiment_id = prepare(uri, experiment)
    all_tags = {**_process_tags(), **{k: str(v) for k, v in (tags or {}).items()}}
    if parent_run_id:
        all_tags[MLFLOW_PARENT_RUN_ID] = parent_run_id
    run = _retry_locked(client.create_run, experiment_id, tags=all_tags, run_name=run_name)
    items = [Param(k, v) for k, v in (params or {}).items()]
    for i in range(0, len(items), MAX_PARAMS_PER_BATCH):
        _retry_locked(client.log_batch, run.info.run_id, params=items[i : i + MAX_PARAMS_PER_BATCH])
    return run.info.run_id


def end_run(uri: str, run_id: str, status: str = FINISHED, reason: str | None = None) -> None:
    """Mark a run FINISHED, FAILED or KILLED; ``reason`` (why it failed or was killed) is kept
    as the run's ``reason`` tag. The one place where a run's end and its reason are written
    (sweeps, the SLURM launcher's jobs and stale-run clean-up all call it)."""
    client = _client(uri)
    if reason:
        _retry_locked(client.set_tag, run_id, REASON_TAG, one_line(reason)[:MAX_TAG_LENGTH])
    _retry_locked(client.set_terminated, run_id, status)


def one_line(message: object) -> str:
    """The first non-empty line of a message (exception texts can be long)."""
    lines = [line for line in str(message).splitlines() if line.strip()]
    return lines[0].strip() if lines else ""


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


_process_alive = processes.alive


def run_is_live(uri: str, run_id: str) -> bool:
    """Is ``run_id`` RUNNING in a process that still exists (or on another host, where that
    cannot be checked)?"""
    try:
        run = _retry_locked(_client(uri).get_run, run_id)
    except MlflowException:
        return False
    if run.info.status != "RUNNING":
        return False
    tags = run.data.tags
    if tags.get(HOST_TAG) != socket.gethostname() or not tags.get(PID_TAG, "").isdigit():
        return True
    started = float(tags[PID_STARTED_TAG]) if tags.get(PID_STARTED_TAG) else None
    return _process_alive(int(tags[PID_TAG]), started)


def end_stale_runs(uri: str, experiment: str) -> list[str]:
    """End as KILLED the RUNNING runs of ``experiment`` whose process is gone; their ids.

    Only runs recorded on this host (tag ``segloss.host``) whose PID no longer exists, or now
    belongs to a process started at another time, are ended: runs of live processes and of
    other machines are left alone. A sweep killed with ``kill -9`` leaves such runs.
    """
    client = _client(uri)
    experiment_id = prepare(uri, experiment)
    running = _retry_locked(
        client.search_runs, [experiment_id], filter_string="attributes.status = 'RUNNING'"
    )
    host, ended = socket.gethostname(), []
    for run in running:
        tags = run.data.tags
        if tags.get(HOST_TAG) != host or not tags.get(PID_TAG, "").isdigit():
            continue
        pid = int(tags[PID_TAG])
        started = float(tags[PID_STARTED_TAG]) if tags.get(PID_STARTED_TAG) else None
        if _process_alive(pid, started):
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


def log_metrics(
    uri: str,
    run_id: str,
    metrics: Mapping[str, float],
    step: int | None = None,
    *,
    model_id: str | None = None,
    dataset: Dataset | None = None,
) -> None:
    """Log metrics to an existing run (running or ended; its status is left as it was).

    ``model_id`` attaches them to a logged model (MLflow 3 shows them on the model's page),
    ``dataset`` to the data set they were measured on.
    """
    now = int(time.time() * 1000)
    name, digest = (dataset.name, dataset.digest) if dataset else (None, None)
    batch = [
        Metric(
            k, float(v), now, step or 0, model_id=model_id, dataset_name=name, dataset_digest=digest
        )
        for k, v in metrics.items()
    ]
    _retry_locked(_client(uri).log_batch, run_id, metrics=batch)


@dataclass(frozen=True)
class Dataset:
    """A data set as a run's input: ``table`` (one row per sample) is its profile and schema,
    ``digest`` identifies its content (the prepared data's hash), ``source`` where it lies."""

    name: str
    digest: str
    source: str
    table: pd.DataFrame
    context: str  # training | validation | testing (the UI's Dataset column shows it)


def log_datasets(uri: str, run_id: str, datasets: Iterable[Dataset]) -> None:
    """Record data sets as the run's inputs (``mlflow.log_input``), each with its context."""
    inputs = []
    for d in datasets:
        # Quiet MLflow's hints ("source can be interpreted in multiple ways", integer columns
        # in the schema): the source is a local folder, and the table has no missing values.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            dataset = mlflow.data.from_pandas(
                d.table, source=d.source, name=d.name, digest=d.digest
            )
            entity = dataset._to_mlflow_entity()
        inputs.append(DatasetInput(entity, tags=[InputTag(MLFLOW_DATASET_CONTEXT, d.context)]))
    _retry_locked(_client(uri).log_inputs, run_id, datasets=inputs)


def log_artifacts(
    uri: str, run_id: str, paths: Iterable[str | os.PathLike], artifact_path: str | None = None
) -> None:
    """Upload files or folders to an existing run (its status is left as it was)."""
    client = _client(uri)
    for path in map(Path, paths):
        if path.is_dir():
            client.log_artifacts(run_id, str(path), artifact_path)
        else:
            client.log_artifact(run_id, str(path), artifact_path)


def image_signature(example: np.ndarray) -> ModelSignature:
    """Float32 images ``(batch, 3, H, W)`` in [0, 1] in, one logit ``(batch, 1, H, W)`` out;
    any batch size, the example's H and W (the size the model was trained at)."""
    _, channels, height, width = example.shape
    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, channels, height, width), "image")]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 1, height, width), "logit")]),
    )


def log_model(
    uri: str,
    run_id: str,
    model: nn.Module,
    input_example: np.ndarray,
    *,
    tags: Mapping[str, Any] | None = None,
) -> str:
    """Log a model in MLflow 3's pickle-free PyTorch format; its logged-model id.

    ``serialization_format="pt2"``: the graph that ``torch.export`` traces from
    ``input_example`` (float32 ``(batch > 1, 3, H, W)``) and the weights, saved with
    ``torch.export.save``; ``mlflow.pytorch.load_model`` loads it without unpickling anything
    (MLflow checks the archive is pickle-free) and without this project's code. The signature
    (:func:`image_signature`) and the input example are stored with it. ``log_model`` needs the
    fluent active run, so the run is resumed for the call only and its RUNNING status is
    restored afterwards. Requirements are given explicitly so MLflow does not infer them.
    """
    mlflow.set_tracking_uri(uri)
    example = np.ascontiguousarray(input_example, dtype=np.float32)
    # torch.export.save warns "No complete tensor found in the group" for weights that share
    # storage (they are on the CPU, where that warning does not apply).
    with mlflow.start_run(run_id=run_id), warnings.catch_warnings():
        warnings.filterwarnings("ignore", "No complete tensor found", UserWarning)
        info = mlflow.pytorch.log_model(
            model.eval(),
            name="model",
            signature=image_signature(example),
            input_example=example,
            pip_requirements=MODEL_PIP_REQUIREMENTS[:1],
            serialization_format="pt2",
            tags={k: str(v) for k, v in (tags or {}).items()},
            # MLflow would reload the model to serve the example as JSON lists, which the
            # PyTorch flavour does not accept (a warning and seconds lost): the round trip
            # is tested instead (tests/test_mlflow_models.py).
            validate_serving_input=False,
        )
    _retry_locked(_client(uri).update_run, run_id, status="RUNNING")
    return info.model_id


def logged_model_id(uri: str, run_id: str) -> str | None:
    """The id of the model logged by run ``run_id`` (None if it logged none)."""
    client = _client(uri)
    run = _retry_locked(client.get_run, run_id)
    found = _retry_locked(
        client.search_logged_models,
        [run.info.experiment_id],
        filter_string=f"source_run_id = '{run_id}'",
    )
    return found[0].model_id if found else None


def run_status(uri: str, run_id: str) -> str:
    """A run's status string (RUNNING, FINISHED, FAILED, KILLED, ...)."""
    return _retry_locked(_client(uri).get_run, run_id).info.status


def _children(uri: str, parent_run_id: str) -> list:
    client = _client(uri)
    parent = _retry_locked(client.get_run, parent_run_id)
    return _retry_locked(
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


def set_tags(uri: str, run_id: str, tags: Mapping[str, Any]) -> None:
    """Set tags on an existing run (running or ended)."""
    client = _client(uri)
    for key, value in tags.items():
        _retry_locked(client.set_tag, run_id, key, str(value)[:MAX_TAG_LENGTH])


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


_RECEIVED: list[str] = []  # names of the signals turned into KeyboardInterrupt, in order


def received_signal() -> str | None:
    """The first signal :func:`sigterm_as_interrupt` turned into an interrupt in this process
    (None if none did)."""
    return _RECEIVED[0] if _RECEIVED else None


def signal_reason(exc: BaseException) -> str:
    """Why a KeyboardInterrupt happened: the signal (from :func:`sigterm_as_interrupt`), or
    Ctrl-C."""
    return f"interrupted by {exc.args[0]}" if exc.args else "interrupted by Ctrl-C (SIGINT)"


@contextlib.contextmanager
def sigterm_as_interrupt(signals: tuple[int, ...] = (signal.SIGTERM,)) -> Iterator[None]:
    """Turn SIGTERM (or ``signals``) into KeyboardInterrupt("<name>") (main thread only), so
    it ends the run as KILLED like Ctrl-C does; the previous handlers come back on exit."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        _RECEIVED.append(name)
        raise KeyboardInterrupt(name)

    previous = {signum: signal.signal(signum, handler) for signum in signals}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


watch_process = processes.watch
process_identity = processes.identity


@dataclass
class TrackedRun:
    """A run in progress: log per-epoch metrics, artifacts and the model to it."""

    uri: str
    run_id: str
    parent_run_id: str | None

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        log_metrics(self.uri, self.run_id, metrics, step)

    def log_artifacts(self, paths: Iterable[str | os.PathLike]) -> None:
        log_artifacts(self.uri, self.run_id, paths)

    def log_model(
        self, model: nn.Module, input_example: np.ndarray, tags: Mapping[str, Any] | None = None
    ) -> str | None:
        return log_model(self.uri, self.run_id, model, input_example, tags=tags)

    def log_datasets(self, datasets: Iterable[Dataset]) -> None:
        log_datasets(self.uri, self.run_id, datasets)


class NullRun(TrackedRun):
    """Tracking off (``tracking=none``): every call does nothing, ``run_id`` is None."""

    def __init__(self) -> None:
        super().__init__(uri="", run_id=None, parent_run_id=None)

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        pass

    def log_artifacts(self, paths: Iterable[str | os.PathLike]) -> None:
        pass

    def log_model(self, model, input_example, tags=None) -> None:
        return None

    def log_datasets(self, datasets: Iterable[Dataset]) -> None:
        pass


@contextlib.contextmanager
def system_metrics(uri: str, run_id: str, interval: float | None) -> Iterator[None]:
    """Sample CPU, memory, disk and network (psutil; GPU where pynvml finds one) every
    ``interval`` seconds into the run's ``system/*`` metrics, as ``log_system_metrics=True``
    does; one last sample is logged at the end, so a run shorter than ``interval`` has one
    too. ``interval`` None or 0: off."""
    if not interval:
        yield
        return
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    quiet = logging.getLogger("mlflow.system_metrics")
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    monitor = SystemMetricsMonitor(run_id, sampling_interval=interval, tracking_uri=uri)
    monitor.start()
    try:
        yield
    finally:
        monitor.finish()
        with contextlib.suppress(Exception):  # a sample lost to a locked store is no failure
            monitor.collect_metrics()
            monitor.publish_metrics(monitor.aggregate_metrics())
            monitor.mlflow_logger.flush()
        quiet.setLevel(level)


@contextlib.contextmanager
def tracked_run(
    uri: str,
    experiment: str,
    *,
    run_name: str,
    parent_run_id: str | None = None,
    tags: Mapping[str, Any] | None = None,
    params: Mapping[str, Any] | None = None,
    system_metrics_interval: float | None = None,
) -> Iterator[TrackedRun]:
    """A run that ends FINISHED, FAILED on an exception, KILLED on Ctrl-C or SIGTERM; a FAILED
    or KILLED run gets the exception's first line (or the signal) as its ``reason`` tag.

    With tracking off (:func:`enabled`) it yields a :class:`NullRun` (signals still become
    KeyboardInterrupt). ``system_metrics_interval``: see :func:`system_metrics`.
    """
    if not enabled(uri):
        with sigterm_as_interrupt():
            yield NullRun()
        return
    run_id = start_run(
        uri, experiment, run_name=run_name, parent_run_id=parent_run_id, tags=tags, params=params
    )
    status, reason = FAILED, "the process ended before the run did"
    try:
        with sigterm_as_interrupt(), system_metrics(uri, run_id, system_metrics_interval):
            yield TrackedRun(uri, run_id, parent_run_id)
        status, reason = FINISHED, None
    except KeyboardInterrupt as exc:
        status, reason = KILLED, signal_reason(exc)
        raise
    except BaseException as exc:
        reason = f"{type(exc).__name__}: {one_line(exc)}"
        raise
    finally:
        end_run(uri, run_id, status, reason=reason)


def metric_history(uri: str, run_id: str, key: str) -> list[float]:
    """Every value of a run's metric ``key``, in step order (empty if never logged)."""
    history = _retry_locked(_client(uri).get_metric_history, run_id, key)
    return [m.value for m in sorted(history, key=lambda m: (m.step, m.timestamp))]


def run_seconds(uri: str, run_id: str) -> float | None:
    """A run's wall time, start to end, in seconds (None while it is running)."""
    info = _retry_locked(_client(uri).get_run, run_id).info
    return None if info.end_time is None else (info.end_time - info.start_time) / 1000
