"""Plumbing the test modules share: compose the Hydra config, build the typed settings, the
command line of a pipeline stage, and the MLflow runs a store holds."""

from __future__ import annotations

import contextlib
import sqlite3
import sys
from dataclasses import dataclass
from pathlib import Path

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from omegaconf import DictConfig

from segloss import config
from segloss.config import Config, CvConfig, DataConfig, validate

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
PARENT_TAG = "mlflow.parentRunId"  # MLflow's tag of a nested run's parent


def compose(*overrides: str, hydra: bool = False, conf: Path = CONF) -> DictConfig:
    """conf/config.yaml composed with ``overrides`` (and the ``hydra`` node with ``hydra``)."""
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        return hydra_compose("config", overrides=list(overrides), return_hydra_config=hydra)


def settings(*overrides: str, conf: Path = CONF) -> Config:
    """The typed settings an entry point builds from the composed config."""
    return validate(compose(*overrides, conf=conf))


def stage_command(stage: str, *args: str) -> list[str]:
    """``python pipelines/<stage>.py ARGS`` with this interpreter."""
    return [sys.executable, str(REPO / "pipelines" / f"{stage}.py"), *args]


def data_config(values: dict) -> DataConfig:
    """The ``data`` settings of ``values`` (a source's dict, as a test writes it)."""
    return config.data_config(values)


def cv_config(values: dict) -> CvConfig:
    """The ``cv`` settings of ``values``."""
    return config.from_mapping(CvConfig, values, "cv")


@dataclass(frozen=True)
class Logged:
    """One MLflow run as the tests read it."""

    id: str
    name: str
    status: str
    parent: str | None  # the sweep's parent run id (None for a parent or a single run)
    tags: dict[str, str]
    params: dict[str, str]


def runs(uri: str, experiment: str = "segloss") -> list[Logged]:
    """Every active run of ``experiment`` in the store at ``uri``, oldest first; none where the
    store or the experiment does not exist yet (a SQLite file is never created here)."""
    from segloss import tracking

    db = tracking.sqlite_path(uri)
    if db is None:
        return _client_runs(uri, experiment)
    return _sqlite_runs(db, experiment) if db.is_file() else []


def _sqlite_runs(db: Path, experiment: str) -> list[Logged]:
    """A SQLite store read read-only through sqlite3, its connection closed at once: tests
    poll stores that running sweeps write, and MLflow's SQLAlchemy client keeps pooled
    connections whose locks made those writers fail ("database is locked")."""
    query = (
        "SELECT r.run_uuid, r.name, r.status FROM runs r JOIN experiments e "
        "ON r.experiment_id = e.experiment_id "
        "WHERE e.name = ? AND r.lifecycle_stage = 'active' ORDER BY r.start_time"
    )
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)) as con:
            rows = con.execute(query, (experiment,)).fetchall()
            tags = con.execute("SELECT run_uuid, key, value FROM tags").fetchall()
            params = con.execute("SELECT run_uuid, key, value FROM params").fetchall()
    except sqlite3.OperationalError:  # the schema is not created yet
        return []
    by_run: dict[str, tuple[dict[str, str], dict[str, str]]] = {r: ({}, {}) for r, _, _ in rows}
    for kind, found in enumerate((tags, params)):
        for run_id, key, value in found:
            if run_id in by_run:
                by_run[run_id][kind][key] = value
    return [
        Logged(r, name, status, by_run[r][0].get(PARENT_TAG), *by_run[r])
        for r, name, status in rows
    ]


def _client_runs(uri: str, experiment: str) -> list[Logged]:
    """A server's store, through the project's client (retried while it is busy)."""
    from segloss.tracking.store import retry_locked, store_client

    client = store_client(uri)
    found = retry_locked(client.get_experiment_by_name, experiment)
    if found is None:
        return []
    order = ["attributes.start_time ASC"]
    return [
        Logged(
            id=run.info.run_id,
            name=run.info.run_name,
            status=run.info.status,
            parent=run.data.tags.get(PARENT_TAG),
            tags=dict(run.data.tags),
            params=dict(run.data.params),
        )
        for run in retry_locked(client.search_runs, [found.experiment_id], order_by=order)
    ]
