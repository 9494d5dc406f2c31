"""MLflow tracking: the only module that imports mlflow.

Runs are driven through :class:`mlflow.MlflowClient` with explicit run ids rather than the
fluent API's process-global "active run", because sweep jobs run in other processes
(joblib, submitit) and a reused worker must not inherit a previous job's run. A child run is
nested under its sweep's parent run by the ``mlflow.parentRunId`` tag, which is exactly what
``mlflow.start_run(nested=True)`` writes.

SQLite with parallel writers: the sweep's launcher process creates the database and the
experiment before any job starts (:func:`prepare`), so jobs never race on schema creation;
every write retries while SQLite reports "database is locked".
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import random
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import mlflow
from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
from torch import nn

from segloss.errors import SeglossError

T = TypeVar("T")

FINISHED, FAILED, KILLED = "FINISHED", "FAILED", "KILLED"
MAX_PARAMS_PER_BATCH = 100  # MLflow's limit for one log_batch call
LOCK_RETRIES = 12
MODEL_PIP_REQUIREMENTS = ["torch", "segmentation-models-pytorch"]


class TrackingError(SeglossError):
    """The tracking server or store cannot be used."""


def _retry_locked(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call ``fn``, retrying with jittered backoff while SQLite says "database is locked"."""
    for attempt in range(LOCK_RETRIES):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # SQLAlchemy OperationalError, or wrapped in MlflowException
            if "database is locked" not in str(exc) or attempt == LOCK_RETRIES - 1:
                raise
            time.sleep(min(2.0, 0.05 * 2**attempt) * (0.5 + random.random()))
    raise AssertionError("unreachable")


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """For an http(s) URI, fail fast with one clear error if the server does not answer.

    MLflow's own client would retry for minutes before failing; this runs before any work.
    """
    if not uri.startswith(("http://", "https://")):
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


def _artifact_location(uri: str) -> str | None:
    """For a local SQLite store, keep artifacts beside the database (``mlartifacts/``)."""
    if uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///"))
        return (db.resolve().parent / "mlartifacts").as_uri()
    return None


@functools.cache
def _client(uri: str) -> mlflow.MlflowClient:
    return mlflow.MlflowClient(tracking_uri=uri)


def prepare(uri: str, experiment: str) -> str:
    """Check the store, create the database and the experiment if needed; its id.

    Call it once in the launching process before parallel jobs start.
    """
    check_reachable(uri)
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    client = _retry_locked(_client, uri)
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
    """Create a RUNNING run (nested under ``parent_run_id`` if given); its id."""
    client = _client(uri)
    experiment_id = prepare(uri, experiment)
    all_tags = {k: str(v) for k, v in (tags or {}).items()}
    if parent_run_id:
        all_tags[MLFLOW_PARENT_RUN_ID] = parent_run_id
    run = _retry_locked(client.create_run, experiment_id, tags=all_tags, run_name=run_name)
    items = [Param(k, v) for k, v in (params or {}).items()]
    for i in range(0, len(items), MAX_PARAMS_PER_BATCH):
        _retry_locked(client.log_batch, run.info.run_id, params=items[i : i + MAX_PARAMS_PER_BATCH])
    return run.info.run_id


def end_run(uri: str, run_id: str, status: str = FINISHED) -> None:
    """Mark a run FINISHED, FAILED or KILLED."""
    _retry_locked(_client(uri).set_terminated, run_id, status)


def log_metrics(
    uri: str, run_id: str, metrics: Mapping[str, float], step: int | None = None
) -> None:
    """Log metrics to an existing run (running or ended; its status is left as it was)."""
    now = int(time.time() * 1000)
    batch = [Metric(k, float(v), now, step or 0) for k, v in metrics.items()]
    _retry_locked(_client(uri).log_batch, run_id, metrics=batch)


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


def log_model(uri: str, run_id: str, model: nn.Module) -> None:
    """Log a model with the MLflow PyTorch flavour (pickle format: loads with any batch size).

    ``log_model`` needs the fluent active run, so the run is resumed for the call only and
    its RUNNING status is restored afterwards. Requirements are given explicitly so MLflow
    does not spend seconds inferring them.
    """
    mlflow.set_tracking_uri(uri)
    # Quiet MLflow's per-call warning that pickled models run code when loaded: these models
    # are loaded only by this project's users (README "Training and tracking" says so).
    quiet = logging.getLogger("mlflow.pytorch")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with mlflow.start_run(run_id=run_id):
            mlflow.pytorch.log_model(
                model,
                name="model",
                pip_requirements=MODEL_PIP_REQUIREMENTS,
                serialization_format="pickle",
            )
    finally:
        quiet.setLevel(level)
    _retry_locked(_client(uri).update_run, run_id, status="RUNNING")


def run_status(uri: str, run_id: str) -> str:
    """A run's status string (RUNNING, FINISHED, FAILED, KILLED, ...)."""
    return _retry_locked(_client(uri).get_run, run_id).info.status


def child_statuses(uri: str, parent_run_id: str) -> list[str]:
    """Statuses of the runs nested under ``parent_run_id``."""
    client = _client(uri)
    parent = _retry_locked(client.get_run, parent_run_id)
    children = _retry_locked(
        client.search_runs,
        [parent.info.experiment_id],
        filter_string=f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent_run_id}'",
    )
    return [run.info.status for run in children]


def sweep_status(uri: str, parent_run_id: str, *, completed: bool) -> str:
    """A sweep's status from its children: KILLED if any was, else FAILED if any failed or the
    sweep did not complete, else FINISHED."""
    statuses = set(child_statuses(uri, parent_run_id))
    if KILLED in statuses:
        return KILLED
    if FAILED in statuses or not completed:
        return FAILED
    return FINISHED


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt (main thread only) so it ends the run as KILLED."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


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

    def log_model(self, model: nn.Module) -> None:
        log_model(self.uri, self.run_id, model)


@contextlib.contextmanager
def tracked_run(
    uri: str,
    experiment: str,
    *,
    run_name: str,
    parent_run_id: str | None = None,
    tags: Mapping[str, Any] | None = None,
    params: Mapping[str, Any] | None = None,
) -> Iterator[TrackedRun]:
    """A run that ends FINISHED, FAILED on an exception, KILLED on Ctrl-C or SIGTERM."""
    run_id = start_run(
        uri, experiment, run_name=run_name, parent_run_id=parent_run_id, tags=tags, params=params
    )
    status = FAILED
    try:
        with sigterm_as_interrupt():
            yield TrackedRun(uri, run_id, parent_run_id)
        status = FINISHED
    except KeyboardInterrupt:
        status = KILLED
        raise
    finally:
        end_run(uri, run_id, status)
