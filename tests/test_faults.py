"""Faults a sweep must survive, with real processes: signals under every launcher, kill -9
and resume, two sweeps at once on a fresh store, divergence, and one-line errors.

Every sweep runs tiny models (32x32 blobs, 1 thread per job); runs are read straight from
the SQLite file (no mlflow import in the polling loop) while the sweep writes it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from helpers import Logged, stage_command
from helpers import runs as logged_runs

from segloss import tracking
from segloss.models import load_checkpoint

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]


def train_cmd(tmp: Path, prepared: Path, *args: str, sweep_dir: str | None = None) -> list[str]:
    base = {
        "paths.prepared": str(prepared),
        "paths.models": str(tmp / "models"),
        "tracking.uri": f"sqlite:///{tmp / 'mlflow.db'}",
        "tracking.log_model": "false",
        "tracking.system_metrics_interval": "null",  # its sampler writes SQLite unretried
        "train.num_threads": "1",
        "hydra.sweep.dir": sweep_dir or str(tmp / "sweep"),
        "hydra.run.dir": str(tmp / "run"),
    }
    given = {a.split("=")[0] for a in args}
    rest = [f"{k}={v}" for k, v in base.items() if k not in given]
    return [*stage_command("train"), *args, *rest]


def start(cmd: list[str], log: Path) -> subprocess.Popen:
    """A sweep in its own process group (so a test can signal the whole group, as a terminal
    does on Ctrl-C)."""
    out = log.open("w")
    return subprocess.Popen(
        cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
    )


def runs(db: Path) -> list[Logged]:
    """Every run of the SQLite store ``db``."""
    return logged_runs(f"sqlite:///{db}")


def wait_for(condition, timeout: float, what: str, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            break
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def kill_group(proc: subprocess.Popen) -> None:
    """Leave no process behind, whatever the test did."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_group_ends(proc: subprocess.Popen, timeout: float) -> None:
    """Wait for every process of the sweep's group to end; on timeout, say which are left."""
    try:
        wait_for(lambda: not group_alive(proc.pid), timeout, "every process of the sweep to end")
    except AssertionError:
        left = []
        for process in psutil.process_iter(["cmdline"]):
            with contextlib.suppress(psutil.Error, OSError):  # it may end meanwhile
                if os.getpgid(process.pid) == proc.pid:
                    left.append(" ".join(process.info["cmdline"] or [])[-160:])
        raise AssertionError(f"processes of the sweep left after {timeout:.0f} s: {left}") from None


LONG = ["train.epochs=400", "train.augment.enabled=false"]  # long enough to be interrupted


@pytest.mark.parametrize(
    ("launcher", "how"),
    [
        ("basic", "SIGTERM"),
        ("basic", "Ctrl-C"),
        ("joblib", "SIGTERM"),
        ("joblib", "Ctrl-C"),
        ("submitit_local", "SIGTERM"),
        ("submitit_local", "Ctrl-C"),
    ],
)
def test_signal_ends_every_started_child_and_the_parent_killed(
    tiny_prepared, tmp_path, launcher, how
):
    """SIGTERM to the launching process, or SIGINT to the whole process group (Ctrl-C in a
    terminal): once the sweep is gone, no run is RUNNING; every started child and the parent
    are KILLED with the reason as a tag, and no job process is left."""
    extra = [] if launcher == "basic" else [f"hydra/launcher={launcher}"]
    if launcher == "joblib":
        extra.append("hydra.launcher.n_jobs=2")
    cmd = train_cmd(tmp_path, tiny_prepared, "-m", "loss=bce,dice", "seed=0", *LONG, *extra)
    proc = start(cmd, tmp_path / "sweep.log")
    db = tmp_path / "mlflow.db"
    try:
        wanted = 1 if launcher == "basic" else 2  # basic runs one job at a time
        wait_for(
            lambda: len([r for r in runs(db) if r.parent and r.status == "RUNNING"]) >= wanted,
            150,
            f"{wanted} running child run(s)",
            proc,
        )
        time.sleep(1.0)  # into the epochs
        if how == "SIGTERM":
            os.kill(proc.pid, signal.SIGTERM)
        else:
            os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=60)
        wait_group_ends(proc, 30)  # job processes (submitit's beside the launcher) end too
    finally:
        kill_group(proc)
    log = (tmp_path / "sweep.log").read_text()
    assert proc.returncode != 0, log[-3000:]
    found = runs(db)
    parents = [r for r in found if r.parent is None]
    children = [r for r in found if r.parent]
    assert len(parents) == 1 and len(children) >= wanted, found
    assert {r.status for r in found} == {"KILLED"}, [(r.name, r.status) for r in found]
    assert "interrupted by" in parents[0].tags["reason"]
    for child in children:
        assert "interrupted" in child.tags.get("reason", ""), child
    assert not list((tmp_path / "models").glob("**/.tmp-*"))  # nothing half-written


def job_processes(pid: int) -> list[psutil.Process]:
    """The sweep's submitit job processes (children of its per-job controllers)."""
    try:
        below = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    found = []
    for child in below:
        with contextlib.suppress(psutil.Error):
            if "submitit.core._submit" in " ".join(child.cmdline()):
                found.append(child)
    return found


def test_launcher_killed_before_the_jobs_runs_start_ends_every_job(tiny_prepared, tmp_path):
    """submitit's job process ignores SIGTERM ("bypass") outside a run. The launcher killed
    as soon as its job processes exist (still importing torch, their runs not yet created)
    ends them all the same, within a minute, and no run is left RUNNING."""
    cmd = train_cmd(
        tmp_path,
        tiny_prepared,
        "-m",
        "loss=bce,dice",
        "seed=0",
        *LONG,
        "hydra/launcher=submitit_local",
    )
    proc = start(cmd, tmp_path / "sweep.log")
    db = tmp_path / "mlflow.db"
    try:
        wait_for(lambda: len(job_processes(proc.pid)) >= 2, 150, "2 job processes", proc)
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
        wait_group_ends(proc, 60)
    finally:
        kill_group(proc)
    found = runs(db)
    assert found and not [r for r in found if r.status == "RUNNING"], found


def test_kill_9_midway_then_rerun_trains_only_the_unfinished(tiny_prepared, tmp_path):
    """kill -9 of the whole sweep (joblib, 2 workers, 3 models) once one model is done: the
    database is intact, every model.pt on disk loads, and the rerun ends the dead runs as
    KILLED, keeps the finished model untouched and trains only the others."""
    args = ["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
    args += ["loss=bce,dice,bce_dice", "seed=0", "train.epochs=60", "train.augment.enabled=false"]
    proc = start(train_cmd(tmp_path, tiny_prepared, *args), tmp_path / "first.log")
    models, db = tmp_path / "models", tmp_path / "mlflow.db"
    try:
        wait_for(
            lambda: (
                list(models.glob("*/seed0/model.pt"))
                and any(r.parent and r.status == "RUNNING" for r in runs(db))
            ),
            240,
            "one finished model while another job runs",
            proc,
        )
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        kill_group(proc)
    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    done = {p.parent.parent.name: p.stat().st_mtime_ns for p in models.glob("*/seed0/model.pt")}
    assert 1 <= len(done) < 3
    for path in models.glob("*/seed0/model.pt"):
        load_checkpoint(path)  # complete, never half-written
    before = runs(db)
    stale = {r.id for r in before if r.status == "RUNNING"}
    assert stale  # the parent and the killed jobs' runs

    rerun = subprocess.run(
        train_cmd(tmp_path, tiny_prepared, *args, sweep_dir=str(tmp_path / "sweep2")),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    after = {r.id: r for r in runs(db)}
    for run_id in stale:
        assert after[run_id].status == "KILLED"
        assert "ended without closing this run" in after[run_id].tags["reason"]
    new_children = [r for r in after.values() if r.id not in {b.id for b in before}]
    trained = sorted(r.tags["loss"] for r in new_children if r.parent)
    assert trained == sorted({"bce", "dice", "bce_dice"} - set(done))
    for loss, stamp in done.items():
        assert (models / loss / "seed0" / "model.pt").stat().st_mtime_ns == stamp
    assert len(list(models.glob("*/seed0/model.pt"))) == 3
    assert "reused" in rerun.stderr + rerun.stdout


def test_two_sweeps_at_once_on_a_fresh_store_log_every_run(tiny_prepared, tmp_path):
    """Started together, on no database: the schema is created once, each sweep gets its
    own folder (the default name has microseconds) and its own parent with its own runs; a
    third sweep told to use a live sweep's folder is refused before any run."""
    multirun = tmp_path / "multirun" / "${now:%Y-%m-%d_%H-%M-%S-%f}"
    n_epochs = 150  # the sweeps still run when the third starts, also on a loaded machine
    procs = []
    for name, loss in (("a", "bce,dice"), ("b", "dice,bce_dice")):
        cmd = train_cmd(
            tmp_path,
            tiny_prepared,
            "-m",
            f"loss={loss}",
            "seed=0",
            f"train.epochs={n_epochs}",
            f"paths.models={tmp_path / name}",
            sweep_dir=str(multirun),
        )
        procs.append(start(cmd, tmp_path / f"{name}.log"))
    try:
        folders = wait_for(
            lambda: [p for p in (tmp_path / "multirun").glob("*/mlflow_parent_run_id")],
            120,
            "a sweep folder",
        )
        taken = folders[0].parent
        third = subprocess.run(
            train_cmd(tmp_path, tiny_prepared, "-m", "loss=bce", sweep_dir=str(taken)),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
        for proc in procs:
            proc.wait(timeout=300)
    finally:
        for proc in procs:
            kill_group(proc)
    for name, proc in zip("ab", procs, strict=True):
        assert proc.returncode == 0, (tmp_path / f"{name}.log").read_text()[-3000:]
    assert third.returncode == 2 and "is in use by the running sweep" in third.stderr
    folders = sorted(p.parent for p in (tmp_path / "multirun").glob("*/mlflow_parent_run_id"))
    assert len(folders) == 2
    found = runs(tmp_path / "mlflow.db")
    parents = {r.id: r for r in found if r.parent is None}
    assert len(parents) == 2
    ids = {f.joinpath("mlflow_parent_run_id").read_text().strip() for f in folders}
    assert ids == set(parents)
    for parent_id, parent in parents.items():
        children = [r for r in found if r.parent == parent_id]
        assert len(children) == 2 and {c.status for c in children} == {"FINISHED"}
        assert parent.status == "FINISHED"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    logged = [tracking.metric_history(uri, r.id, "val_dice") for r in found if r.parent]
    assert sum(map(len, logged)) == 4 * n_epochs  # no metric lost


def test_diverged_single_run_exits_non_zero_and_writes_no_model(tiny_prepared, tmp_path):
    """lr=1e30 diverges: exit status 2 with one error line, the run FAILED, no model.pt."""
    done = subprocess.run(
        train_cmd(tmp_path, tiny_prepared, "loss=bce", "train.epochs=1", "train.lr=1e30"),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "loss bce, seed 0, epoch 1" in errors[0]
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "models" / "bce").exists()
    (only,) = runs(tmp_path / "mlflow.db")
    assert only.status == "FAILED" and "NonFiniteLoss" in only.tags["reason"]


def _one_error_line(done: subprocess.CompletedProcess, *fragments: str) -> str:
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, done.stderr[-3000:]
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


def test_unknown_loss_in_a_sweep_is_one_line_and_leaves_no_run(tiny_prepared, tmp_path):
    done = subprocess.run(
        train_cmd(tmp_path, tiny_prepared, "-m", "loss=bce,nope", "seed=0"),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    _one_error_line(done, "loss=nope", "Could not find 'loss/nope'", "bce_dice")
    assert runs(tmp_path / "mlflow.db") == []


def test_sqlite_uri_in_a_missing_folder_is_an_error(tiny_prepared, tmp_path):
    missing = tmp_path / "nonexistent_dir"
    done = subprocess.run(
        train_cmd(tmp_path, tiny_prepared, f"tracking.uri=sqlite:///{missing}/x.db"),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    _one_error_line(done, f"folder {missing} does not exist")
    assert not missing.exists()


def test_truncated_checkpoint_in_evaluate_is_one_line_naming_it(tiny_prepared, tmp_path):
    from test_evaluation import write_checkpoint

    from segloss.data.prepared import load_meta

    path = write_checkpoint(tmp_path / "models", "bce", 0, load_meta(tiny_prepared))
    path.write_bytes(path.read_bytes()[:5000])
    done = subprocess.run(
        [
            *stage_command("evaluate"),
            f"paths.prepared={tiny_prepared}",
            f"paths.models={tmp_path / 'models'}",
            f"paths.predictions={tmp_path / 'predictions'}",
            f"paths.reports={tmp_path / 'reports'}",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    _one_error_line(done, str(path), "not a readable checkpoint")
    assert not (tmp_path / "predictions").exists() and not (tmp_path / "reports").exists()


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("data.image_size=100000", "data.image_size=100000 is larger than the scans"),
        (  # a wrong type: Hydra's own message at composition, in one line
            "data.image_size=7.5",
            "data.image_size=7.5: Value '7.5' of type 'float' could not be converted to Integer",
        ),
    ],
)
def test_prepare_rejects_bad_sizes_in_one_line(tmp_path, override, fragment):
    from test_data_kaggle import write_fake_patient

    write_fake_patient(tmp_path / "data", size=16)
    done = subprocess.run(
        [
            *stage_command("prepare"),
            "data=lgg",
            f"data.root={tmp_path / 'data'}",
            f"paths.prepared={tmp_path / 'prepared'}",
            f"paths.reports={tmp_path / 'reports'}",
            f"hydra.run.dir={tmp_path / 'run'}",
            override,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    _one_error_line(done, fragment)
    assert not (tmp_path / "prepared").exists()


def test_tiff_cut_to_100_bytes_is_one_line(tmp_path):
    """A TIFF whose first page lies past the cut: tifffile only logs a warning and returns an
    empty array; that is an error naming the file, and nothing else is printed."""
    import logging

    import numpy as np
    import tifffile
    from test_data_kaggle import write_fake_patient

    from segloss.data import kaggle
    from segloss.errors import DataError

    folder = write_fake_patient(tmp_path, size=64)
    bad = folder / f"{folder.name}_2.tif"
    # page data first, IFD at the end (as the Kaggle files are written): cut keeps no page
    tifffile.imwrite(bad, np.full((64, 64, 3), 9, np.uint8), photometric="rgb")
    data = bad.read_bytes()
    offset = int.from_bytes(data[4:8], "little")
    if offset < 100:  # this tifffile put the IFD first: move the offset past the cut
        data = data[:4] + (len(data) + 8).to_bytes(4, "little") + data[8:]
    bad.write_bytes(data[:100])
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger().addHandler(handler)
    try:
        with pytest.raises(DataError) as exc:
            kaggle.read_tiff(bad)
    finally:
        logging.getLogger().removeHandler(handler)
    message = str(exc.value)
    assert "\n" not in message and str(bad) in message
    assert "unreadable TIFF, truncated or damaged (" in message and "invalid offset" in message
    assert not [r for r in records if r.name.startswith("tifffile")]


@pytest.mark.parametrize("damage", ["meta", "manifest", "images"])
def test_damaged_prepared_files_are_one_line_errors(tmp_path, damage):
    import shutil

    from conftest import build_tiny_prepared

    from segloss.data.prepared import load_meta, load_split
    from segloss.errors import DataError

    prepared = build_tiny_prepared(tmp_path / "prepared")
    target = {
        "meta": prepared / "meta.json",
        "manifest": prepared / "manifest.csv",
        "images": prepared / "images_train.npy",
    }[damage]
    target.write_bytes(target.read_bytes()[: 40 if damage != "manifest" else 0] + b"\x00{")
    with pytest.raises(DataError) as exc:
        load_meta(prepared)
        load_split(prepared, "train")
    message = str(exc.value)
    assert "\n" not in message and str(target) in message and "prepare stage" in message
    shutil.rmtree(prepared)


def test_stale_run_of_a_dead_process_is_killed_and_live_ones_are_not(tmp_path):
    """Only runs recorded on this host whose process is gone are ended."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    live = tracking.start_run(uri, "segloss", run_name="live")
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            "from segloss import tracking; "
            f"print(tracking.start_run({uri!r}, 'segloss', run_name='dead'))",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    dead = child.stdout.strip().splitlines()[-1]
    elsewhere = tracking.start_run(
        uri, "segloss", run_name="other host", tags={tracking.HOST_TAG: "another-machine"}
    )
    assert tracking.end_stale_runs(uri, "segloss") == [dead]
    assert tracking.run_status(uri, dead) == "KILLED"
    assert tracking.run_status(uri, live) == tracking.run_status(uri, elsewhere) == "RUNNING"
    for run_id in (live, elsewhere):
        tracking.end_run(uri, run_id)
