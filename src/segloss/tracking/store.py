"""The tracking store: is tracking on, can the store be reached, one client per store with
SQLite's schema created under a file lock, and every write retried while SQLite is locked or
a concurrent insert of the same row won."""

from __future__ import annotations

import contextlib
import functools
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import ParamSpec, TypeVar

import filelock
import mlflow
import tenacity
from mlflow.exceptions import MlflowException
from mlflow.utils.mlflow_tags import MLFLOW_GIT_COMMIT, MLFLOW_SOURCE_NAME, MLFLOW_SOURCE_TYPE

from segloss.errors import SeglossError
from segloss.processes import uninterrupted

T = TypeVar("T")
P = ParamSpec("P")

LOCK_RETRIES = 12


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


# What a store says when a write must be tried again. SQLite: locked by another writer.
# A unique-key clash is MLflow's select-then-insert losing a race to another process that
# writes the same row at once: the same tag when two end one run, or the same data set
# (experiment, name, digest) when two jobs of one sweep log their splits; the retry finds
# the row and reuses it. SQLite and PostgreSQL (also through a server's REST error) word
# the clash differently.
_RETRIABLE = (
    "database is locked",
    "UNIQUE constraint failed",
    "duplicate key value violates unique constraint",
)


def _retriable(exc: BaseException) -> bool:
    # SQLAlchemy's error, or the same wrapped in an MlflowException or a RestException.
    text = str(exc)
    return any(reason in text for reason in _RETRIABLE)


def retry_locked(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Call ``fn``, retrying with jittered exponential backoff while the store is locked or a
    concurrent insert of the same row won (up to ``LOCK_RETRIES`` attempts); any other error
    is raised at once."""
    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception(_retriable),
        stop=tenacity.stop_after_attempt(LOCK_RETRIES),
        wait=tenacity.wait_random_exponential(multiplier=0.05, max=2.0),
        sleep=lambda seconds: time.sleep(seconds),  # looked up at call time (tests patch it)
        reraise=True,
    )
    with uninterrupted():  # a signal waits for the store call to end (see uninterrupted)
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
def store_client(uri: str) -> mlflow.MlflowClient:
    """One client per store and process, built under the schema lock.

    ``MlflowClient(uri)`` builds the store at once, and for SQLite that creates or migrates
    the tables; two processes doing that together on a fresh file fail ("Online migration
    expected to match one row", "table _alembic_tmp_metrics already exists").
    """
    with _schema_lock(uri):
        return retry_locked(mlflow.MlflowClient, tracking_uri=uri)


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
        client = store_client(uri)
    except filelock.Timeout as exc:
        raise TrackingError(f"tracking.uri={uri}: {exc}") from exc
    found = retry_locked(client.get_experiment_by_name, experiment)
    if found is not None:
        return found.experiment_id
    try:
        return retry_locked(client.create_experiment, experiment, _artifact_location(uri))
    except MlflowException:  # created meanwhile by another process
        return retry_locked(client.get_experiment_by_name, experiment).experiment_id


def flatten(config: Mapping[str, object], prefix: str = "") -> dict[str, str]:
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
