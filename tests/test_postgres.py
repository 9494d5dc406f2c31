"""A real tracking server: a throwaway PostgreSQL cluster behind `mlflow server`, and the
SQLite store under 4 parallel jobs; every run, param, metric, artifact and parent/child link
of a joblib sweep must arrive, also when 8 jobs log one data set at once.

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
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from conftest import wait_for_http
from helpers import runs, stage_command

from segloss import tracking
from segloss.tracking.records import Dataset

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
        *stage_command("train"),
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
    found = runs(uri)
    parents = [r for r in found if r.parent is None]
    assert len(parents) == 1 and parents[0].status == "FINISHED"
    children = [r for r in found if r.parent == parents[0].id]
    assert len(children) == n_children == len(found) - 1
    for child in children:
        assert child.status == "FINISHED", child.tags.get("reason")
        config_path = client.download_artifacts(child.id, "config.yaml")
        import yaml

        expected = tracking.flatten(yaml.safe_load(Path(config_path).read_text()))
        assert child.params == expected
        for metric in PER_EPOCH:
            steps = [m.step for m in client.get_metric_history(child.id, metric)]
            assert sorted(steps) == list(range(1, epochs + 1)), metric
        artifacts = {a.path for a in client.list_artifacts(child.id)}
        assert {"config.yaml", "history.csv"} <= artifacts


@pytest.fixture(scope="module")
def postgres_server(tmp_path_factory) -> Iterator[tuple[str, Path]]:
    """One `mlflow server` on a fresh PostgreSQL cluster for this module; (URI, artifacts)."""
    base = tmp_path_factory.mktemp("pg-server")
    with (
        postgres_cluster() as backend,
        mlflow_server(backend, base / "artifacts", base / "server.log") as uri,
    ):
        yield uri, base / "artifacts"


@pytest.mark.xdist_group("postgres")  # one worker: the module's server is started once
def test_joblib_sweep_logs_everything_to_an_mlflow_server_on_postgresql(
    postgres_server, tiny_prepared, tmp_path
):
    uri, artifacts = postgres_server
    sweep(tmp_path, tiny_prepared, uri, n_jobs=2, losses="bce,dice", seeds="0", epochs=2)
    check_everything_arrived(uri, n_children=2, epochs=2)
    assert any(artifacts.rglob("history.csv"))  # stored by the server


def log_at_once(uri: str, runs: list[str], splits: list[Dataset]) -> None:
    """Each run logs ``splits`` from its own thread, all released together; a job's error is
    raised here."""
    start = threading.Barrier(len(runs))

    def log(run_id: str) -> None:
        start.wait()
        tracking.log_datasets(uri, run_id, splits)

    with ThreadPoolExecutor(len(runs)) as pool:
        list(pool.map(log, runs))


# log_datasets quiets MLflow's schema hints with warnings.catch_warnings, which is not
# thread-safe; each job of a real sweep is its own process.
@pytest.mark.filterwarnings("ignore:Hint:UserWarning")
@pytest.mark.xdist_group("postgres")
def test_jobs_logging_one_data_set_at_once_all_record_it_on_postgresql(postgres_server):
    """Parallel jobs of one sweep log the same splits (same name and digest) when they start.
    The server's select-then-insert lets two of them insert one data set, and PostgreSQL
    rejects the second ("duplicate key value violates unique constraint"); the retry finds the
    row and reuses it. 8 jobs at once, 3 times, hit that race every time without the retry."""
    uri, _ = postgres_server
    client = mlflow.MlflowClient(uri)
    experiment = client.create_experiment("one-data-set-at-once")
    table = pd.DataFrame({"patient": ["p0"], "slice": [1], "tumour_pixels": [3]})
    for attempt in range(3):
        splits = [
            Dataset(f"blobs-{split}", f"digest{attempt}", "/prepared", table, context)
            for split, context in (("train", "training"), ("val", "validation"))
        ]
        runs = [client.create_run(experiment).info.run_id for _ in range(8)]
        log_at_once(uri, runs, splits)
        for run_id in runs:
            logged = client.get_run(run_id).inputs.dataset_inputs
            assert sorted((d.dataset.name, d.dataset.digest) for d in logged) == [
                ("blobs-train", f"digest{attempt}"),
                ("blobs-val", f"digest{attempt}"),
            ]


def test_sqlite_store_under_4_parallel_jobs_loses_no_run_or_metric(tiny_prepared, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    sweep(tmp_path, tiny_prepared, uri, n_jobs=4, losses="bce,dice", seeds="0,1", epochs=3)
    check_everything_arrived(uri, n_children=4, epochs=3)
