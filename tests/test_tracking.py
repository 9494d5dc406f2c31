"""segloss.tracking: run statuses, resuming ended runs, reachability, lock retries."""

from __future__ import annotations

import os
import signal
import sqlite3

import mlflow
import pytest

from segloss import tracking
from segloss.tracking import store


@pytest.fixture(scope="module")
def uri(tmp_path_factory) -> str:
    db = tmp_path_factory.mktemp("tracking") / "mlflow.db"
    uri = f"sqlite:///{db}"
    tracking.prepare(uri, "segloss")
    return uri


def _run(uri: str, name: str, parent: str | None = None):
    return tracking.tracked_run(uri, "segloss", run_name=name, parent_run_id=parent)


def test_prepare_is_idempotent_and_keeps_artifacts_beside_the_db(uri):
    assert tracking.prepare(uri, "segloss") == tracking.prepare(uri, "segloss")
    experiment = mlflow.MlflowClient(uri).get_experiment_by_name("segloss")
    db_dir = uri.removeprefix("sqlite:///").rsplit("/", 1)[0]
    assert experiment.artifact_location.endswith(f"{db_dir}/mlartifacts")


def test_flatten_nested_config():
    flat = tracking.flatten({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": None})
    assert flat == {"a.b": "1", "a.c.d": "[1, 2]", "e": "None"}


def test_statuses_finished_failed_killed(uri):
    with _run(uri, "ok") as ok:
        ok.log_metrics({"val_dice": 0.5}, step=1)
    with pytest.raises(RuntimeError), _run(uri, "crash") as crash:
        raise RuntimeError("boom")
    with pytest.raises(KeyboardInterrupt), _run(uri, "ctrl-c") as interrupted:
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt), _run(uri, "sigterm") as terminated:
        os.kill(os.getpid(), signal.SIGTERM)
    statuses = [tracking.run_status(uri, r.run_id) for r in (ok, crash, interrupted, terminated)]
    assert statuses == ["FINISHED", "FAILED", "KILLED", "KILLED"]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_logging_to_an_ended_run_keeps_its_status(uri, tmp_path):
    with pytest.raises(RuntimeError), _run(uri, "ended") as run:
        raise RuntimeError
    (tmp_path / "report.md").write_text("hi")
    tracking.log_metrics(uri, run.run_id, {"test_dice": 0.7})
    tracking.log_artifacts(uri, run.run_id, [tmp_path / "report.md"])
    got = mlflow.MlflowClient(uri).get_run(run.run_id)
    assert got.info.status == "FAILED" and got.data.metrics["test_dice"] == 0.7
    assert [a.path for a in mlflow.MlflowClient(uri).list_artifacts(run.run_id)] == ["report.md"]


def test_sweep_status_from_children(uri):
    def sweep(*child_outcomes: type[BaseException] | None) -> str:
        parent = tracking.start_run(uri, "segloss", run_name="sweep")
        for outcome in child_outcomes:
            try:
                with _run(uri, "child", parent):
                    if outcome:
                        raise outcome
            except BaseException:
                pass
        assert len(tracking.child_statuses(uri, parent)) == len(child_outcomes)
        return parent

    finished, failed = sweep(None, None), sweep(None, RuntimeError)
    killed = sweep(RuntimeError, KeyboardInterrupt)
    assert tracking.sweep_status(uri, finished, completed=True) == "FINISHED"
    assert tracking.sweep_status(uri, finished, completed=False) == "FAILED"
    assert tracking.sweep_status(uri, failed, completed=True) == "FAILED"
    assert tracking.sweep_status(uri, killed, completed=False) == "KILLED"


def test_unreachable_server_is_one_clear_error():
    with pytest.raises(tracking.TrackingError, match="127.0.0.1:9 is unreachable"):
        tracking.prepare("http://127.0.0.1:9", "segloss")


@pytest.mark.parametrize(
    "error",
    [
        sqlite3.OperationalError("database is locked"),
        sqlite3.IntegrityError("UNIQUE constraint failed: tags.key, tags.run_uuid"),
        # what a server on PostgreSQL answered when two sweep jobs logged one data set at once
        mlflow.exceptions.RestException(
            {
                "error_code": "BAD_REQUEST",
                "message": "(psycopg2.errors.UniqueViolation) duplicate key value violates "
                'unique constraint "dataset_pk"',
            }
        ),
    ],
    ids=["locked", "tag-race", "postgres-dataset-race"],
)
def test_database_locked_is_retried(monkeypatch, error):
    monkeypatch.setattr(store.time, "sleep", lambda s: None)
    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise error
        return "ok"

    assert store.retry_locked(flaky) == "ok" and len(calls) == 3
    with pytest.raises(ValueError):
        store.retry_locked(lambda: (_ for _ in ()).throw(ValueError("other")))
