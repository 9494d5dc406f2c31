"""A real tracking server: a throwaway PostgreSQL cluster behind `mlflow server`, and the
SQLite store under 4 parallel jobs; every run, param, metric, artifact and parent/child link
of a joblib sweep must arrive.

The PostgreSQL test needs Debian's `postgresql` (.ci/run installs it; elsewhere the test
skips unless SEGLOSS_REQUIRE_POSTGRES=1). Both servers listen on 127.0.0.1 only, on free
ports, and are stopped at the end.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
from conftest import wait_for_http

from segloss import tracking

REPO = Path(__file__).resolve().parents[1]
PER_EPOCH = ("train_loss", "val_loss", "val_dice", "val_iou", "lr", "seconds")
pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        if os.environ.get("SEGLOSS_REQUIRE_POSTGRES"):
            pytest.fail("PostgreSQL not installed (.ci/run installs Debian's postgresql)")
        pytest.skip("PostgreSQL not installed (apt-get install postgresql)")
    return Path(found[-1]).parent


def _as_postgres(cmd: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run its tools as the postgres user then."""
    if os.geteuid() != 0:
        return cmd
    return ["su", "postgres", "-s", "/bin/sh", "-c", " ".join(map(str, cmd))]


@contextlib.contextmanager
def postgres_cluster() -> Iterator[str]:
    """A fresh cluster in a temporary folder on 127.0.0.1:<free port>; its mlflow database
    URI. Stopped and deleted afterwards."""
    bin_dir = _pg_bin()
    base = Path(tempfile.mkdtemp(prefix="segloss-pg-", dir="/tmp"))
    data, port = base / "data", _free_port()
    if os.geteuid() == 0:
        shutil.chown(base, "postgres", "postgres")
    run = {"check": True, "capture_output": True, "text": True, "timeout": 120}
    try:
        subprocess.run(
            _as_postgres([bin_dir / "initdb", "-D", data, "-A", "trust", "-U", "segloss"]), **run
        )
        options = f"'-p {port} -k {base} -c listen_addresses=127.0.0.1'"
        subprocess.run(
            _as_postgres(
                [bin_dir / "pg_ctl", "-D", data, "-o", options, "-l", base / "log", "-w", "start"]
            ),
            **run,
        )
        try:
            subprocess.run(
                [
                    bin_dir / "createdb",
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(port),
                    "-U",
                    "segloss",
                    "mlflow",
                ],
                **run,
            )
            yield f"postgresql+psycopg2://segloss@127.0.0.1:{port}/mlflow"
        finally:
            subprocess.run(
                _as_postgres([bin_dir / "pg_ctl", "-D", data, "-m", "fast", "-w", "stop"]),
                capture_output=True,
                timeout=120,
            )
    finally:
        shutil.rmtree(base, ignore_errors=True)


@contextlib.contextmanager
def mlflow_server(backend: str, artifacts: Path, log: Path) -> Iterator[str]:
    """`mlflow server` on 127.0.0.1:<free port> over ``backend``; its URI once /health answers."""
    port = _free_port()
    cmd = [
        str(Path(sys.executable).with_name("mlflow")),
        "server",
        "--backend-store-uri",
        backend,
        "--artifacts-destination",
        str(artifacts),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{uri}/health", proc, log, timeout=180)
        yield uri
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 15)
        proc.wait(timeout=60)


def sweep(tmp: Path, prepared: Path, uri: str, n_jobs: int, losses: str, seeds: str, epochs: int):
    cmd = [
        sys.executable,
        str(REPO / "pipelines" / "train.py"),
        "-m",
        "hydra/launcher=joblib",
        f"hydra.launcher.n_jobs={n_jobs}",
        f"loss={losses}",
        f"seed={seeds}",
        f"train.epochs={epochs}",
        f"paths.prepared={prepared}",
        f"paths.models={tmp / 'models'}",
        f"tracking.uri={uri}",
        "tracking.log_model=false",
        "tracking.system_metrics_interval=null",
        "train.num_threads=1",
        f"hydra.sweep.dir={tmp / 'sweep'}",
    ]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]


def check_everything_arrived(uri: str, n_children: int, epochs: int) -> None:
    """One FINISHED parent, ``n_children`` FINISHED children nested under it, each with every
    param of its config, every per-epoch metric at every epoch, and its artifacts."""
    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name("segloss")
    found = client.search_runs([experiment.experiment_id])
    parents = [r for r in found if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    children = [r for r in found if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(children) == n_children == len(found) - 1
    for child in children:
        assert child.info.status == "FINISHED", child.data.tags.get("reason")
        config_path = client.download_artifacts(child.info.run_id, "config.yaml")
        import yaml

        expected = tracking.flatten(yaml.safe_load(Path(config_path).read_text()))
        assert child.data.params == expected
        for metric in PER_EPOCH:
            steps = [m.step for m in client.get_metric_history(child.info.run_id, metric)]
            assert sorted(steps) == list(range(1, epochs + 1)), metric
        artifacts = {a.path for a in client.list_artifacts(child.info.run_id)}
        assert {"config.yaml", "history.csv"} <= artifacts


def test_joblib_sweep_logs_everything_to_an_mlflow_server_on_postgresql(tiny_prepared, tmp_path):
    with (
        postgres_cluster() as backend,
        mlflow_server(backend, tmp_path / "artifacts", tmp_path / "server.log") as uri,
    ):
        sweep(tmp_path, tiny_prepared, uri, n_jobs=2, losses="bce,dice", seeds="0", epochs=2)
        check_everything_arrived(uri, n_children=2, epochs=2)
        assert any((tmp_path / "artifacts").rglob("history.csv"))  # stored by the server


def test_sqlite_store_under_4_parallel_jobs_loses_no_run_or_metric(tiny_prepared, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    sweep(tmp_path, tiny_prepared, uri, n_jobs=4, losses="bce,dice", seeds="0,1", epochs=3)
    check_everything_arrived(uri, n_children=4, epochs=3)
