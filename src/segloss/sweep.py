"""Hydra glue for training sweeps: the MLflow parent run of a multirun, and per-job settings.

:class:`MlflowSweepCallback` (``hydra.callbacks`` in conf/config.yaml) runs in the launching
process. ``on_multirun_start`` composes every job's config and checks it (an unknown
``loss=`` or an out-of-range setting in any job is one clear error before any run exists),
runs the pre-flight checks once (prepared data, tracking store), ends as KILLED the runs
that dead processes left RUNNING, claims the sweep folder (two live sweeps never share
one), creates the parent run and writes its id to ``<sweep dir>/mlflow_parent_run_id``; jobs
(in this process, joblib workers or submitit processes, possibly on other machines sharing
the folder) read it with :func:`parent_run_id`. With ``prune: true`` (the DVC train stage)
it also removes the models of (loss, seed) pairs no longer in the sweep.

The parent ends in ``on_multirun_end``, or at exit when the sweep raised (Hydra's basic
sweeper runs every job of the batch, then raises for a failed one). SIGTERM and Ctrl-C end
every child still RUNNING and the parent as KILLED, whatever the launcher did to its
workers; otherwise the parent is KILLED if a child was, FAILED if a child failed or the
sweep did not complete, else FINISHED. Jobs in other processes on this host watch the
launching process (:func:`watch_launcher`) and end their run KILLED if it dies.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import filelock
import joblib
import yaml
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from segloss import processes
from segloss.cli import one_line_errors
from segloss.errors import ConfigError

log = logging.getLogger(__name__)


class _Lazy:
    """``segloss.tracking`` (mlflow) imported on first use: a job process that only finds its
    model up to date never pays for it (Hydra unpickles this module into every worker)."""

    def __getattr__(self, name: str) -> Any:
        from segloss import tracking as module

        return getattr(module, name)


tracking = _Lazy()

PARENT_RUN_FILE = "mlflow_parent_run_id"
# "<pid>:<start time>:<host>" of the launching process, for jobs in other processes
LAUNCHER_ENV = "SEGLOSS_SWEEP_LAUNCHER"
# the folder where parallel jobs report their epochs for the sweep's one display
PROGRESS_ENV = "SEGLOSS_SWEEP_PROGRESS"
ENTRY_POINT = "pipelines/train.py"  # the parent run's source (the MLflow UI's Source column)
_TMP_NAME = re.compile(r"\.tmp-(\d+)-")  # segloss.io.atomic_path's temporary names


def _plain(config: DictConfig) -> dict[str, Any]:
    """The resolved config without its ``hydra`` node, as plain containers."""
    keys = [k for k in config if k != "hydra"]
    return OmegaConf.to_container(OmegaConf.masked_copy(config, keys), resolve=True)


def _one_line(exc: BaseException) -> str:
    """Hydra's multi-line composition errors as one line ("...; available: a, b")."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return "; ".join(lines[:1] + ([f"{lines[1]} {', '.join(lines[2:])}"] if lines[1:] else []))


def job_overrides(config: DictConfig) -> list[list[str]]:
    """Every job's overrides, as Hydra's basic sweeper expands them (``hydra.sweeper.params``
    first, the command line after, the cartesian product of the swept values)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = [f"{k}={v}" for k, v in (config.hydra.sweeper.get("params") or {}).items()]
    params += list(config.hydra.overrides.task)
    loader = GlobalHydra.instance().config_loader()
    parsed = OverridesParser.create(config_loader=loader).parse_overrides(params)
    return [list(job) for job in BasicSweeper.split_arguments(parsed, None)[0]]


def job_configs(config: DictConfig) -> list[dict[str, Any]]:
    """Every job's resolved config (plain containers), composed as its launcher will.

    A job that cannot be composed (``loss=nope``) raises :class:`ConfigError` naming it.
    """
    loader = GlobalHydra.instance().config_loader()
    jobs = []
    for overrides in job_overrides(config):
        try:
            job = loader.load_sweep_config(master_config=config, sweep_overrides=overrides)
        except Exception as exc:  # Hydra's ConfigCompositionException, MissingConfigException
            raise ConfigError(f"sweep job `{' '.join(overrides)}`: {_one_line(exc)}") from None
        jobs.append(_plain(job))
    return jobs


def prune_models(jobs: list[Mapping[str, Any]]) -> list[Path]:
    """Remove every ``<paths.models>/<loss>/seed<k>/`` that no job of the sweep writes, and
    temporary files that dead processes left there; the removed paths."""
    from segloss.training import output_dir

    keep = {output_dir(job).resolve() for job in jobs}
    keep |= {parent for path in keep for parent in path.parents}  # seed<k>/ of fold<f>/
    removed = []
    for root in {Path(job["paths"]["models"]) for job in jobs}:
        if not root.is_dir():
            continue
        for folder in sorted(root.glob("*/seed*")) + sorted(root.glob("*/seed*/fold*")):
            if folder.is_dir() and folder.resolve() not in keep:
                shutil.rmtree(folder)
                removed.append(folder)
        for tmp in sorted(root.glob("**/.tmp-*")):
            match = _TMP_NAME.match(tmp.name)
            if match and not processes.alive(int(match.group(1)), None):
                shutil.rmtree(tmp) if tmp.is_dir() else tmp.unlink()
                removed.append(tmp)
        for loss_dir in root.iterdir():
            if loss_dir.is_dir() and not any(loss_dir.iterdir()):
                loss_dir.rmdir()
    for path in removed:
        log.info("removed %s (not in this sweep)", path)
    return removed


class MlflowSweepCallback(Callback):
    """Create the sweep's MLflow parent run before its jobs and end it after them.

    ``prune``: remove models of (loss, seed) pairs that are not in the sweep (the DVC train
    stage sets it, so ``models/`` holds exactly the sweep).
    """

    def __init__(self, prune: bool = False) -> None:
        self.prune = bool(prune)
        self._progress: SweepProgress | None = None
        self._parent: tuple[str, str] | None = None
        self._signals = contextlib.ExitStack()

    def __getstate__(self) -> dict:
        """Launchers pickle the callbacks to their workers: only the launching process owns
        the parent run and the signal handlers, so copies start empty."""
        return {"prune": self.prune}

    def __setstate__(self, state: dict) -> None:
        self.__init__(**state)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # Hydra only warns when a callback raises, and would run the jobs without a parent:
        # a bad setting is one error line (exit 2), anything else a traceback (exit 1).
        try:
            one_line_errors(self._start)(config)
        except Exception:
            traceback.print_exc()
            sys.exit(1)

    def _start(self, config: DictConfig) -> None:
        from segloss.training import check_config, preflight  # torch-heavy: only once started

        jobs = job_configs(config)
        for job in jobs:
            check_config(job)
        plain = _plain(config)
        preflight(plain)
        uri, experiment = plain["tracking"]["uri"], plain["tracking"]["experiment"]
        if not tracking.enabled(uri):  # tracking=none: no parent run, jobs run untracked
            if self.prune:
                prune_models(jobs)
            return
        ended = tracking.end_stale_runs(uri, experiment)
        if ended:
            log.info("ended %d run(s) of dead processes as KILLED", len(ended))
        sweep_dir = Path(config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        self._signals.enter_context(tracking.sigterm_as_interrupt((signal.SIGTERM, signal.SIGINT)))
        atexit.register(self._end, completed=False)
        params = {f"sweep.{k}": v for k, v in (config.hydra.sweeper.get("params") or {}).items()}
        params["overrides"] = " ".join(config.hydra.overrides.task)
        params["jobs"] = len(jobs)
        with filelock.FileLock(str(sweep_dir / ".lock"), timeout=60):
            parent_file = sweep_dir / PARENT_RUN_FILE
            other = parent_file.read_text().strip() if parent_file.is_file() else ""
            if other and tracking.run_is_live(uri, other):
                raise ConfigError(
                    f"hydra.sweep.dir={sweep_dir} is in use by the running sweep {other}; "
                    "give this sweep another folder"
                )
            run_id = tracking.start_run(
                uri,
                experiment,
                run_name=f"sweep {sweep_dir.name}",
                tags={
                    "sweep_dir": str(sweep_dir),
                    "git_commit": tracking.git_commit(),
                    **tracking.source_tags(ENTRY_POINT),
                },
                params=params,
            )
            self._parent = (uri, run_id)
            parent_file.write_text(run_id + "\n")
        _log_sweep_definition(uri, run_id, config)
        host, pid, started = processes.identity()
        os.environ[LAUNCHER_ENV] = f"{pid}:{started}:{host}"
        if "BasicLauncher" not in str(config.hydra.launcher.get("_target_", "")):
            # parallel jobs: one display here instead of one progress bar per job
            self._progress = SweepProgress(sweep_dir / "progress", len(jobs))
            os.environ[PROGRESS_ENV] = str(self._progress.folder)
            self._progress.start()
        if self.prune:
            prune_models(jobs)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._end(completed=True)

    def _end(self, completed: bool) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        self._signals.close()
        if self._parent is None:
            return
        uri, run_id = self._parent
        self._parent = None
        end_sweep(uri, run_id, completed=completed, signal_name=tracking.received_signal())


def _log_sweep_definition(uri: str, run_id: str, config: DictConfig) -> None:
    """The parent run's ``sweep.yaml``: the swept values, the command-line overrides and
    every job's overrides, in launch order."""
    definition = {
        "entry_point": ENTRY_POINT,
        "sweeper_params": OmegaConf.to_container(config.hydra.sweeper.get("params") or {}),
        "overrides": list(config.hydra.overrides.task),
        "launcher": OmegaConf.to_container(config.hydra.launcher).get("_target_"),
        "jobs": job_overrides(config),
    }
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "sweep.yaml"
        path.write_text(yaml.safe_dump(definition, sort_keys=False))
        tracking.log_artifacts(uri, run_id, [path])


def end_sweep(uri: str, run_id: str, *, completed: bool, signal_name: str | None) -> str:
    """End a sweep's parent run and any child its dead jobs left RUNNING; the status.

    After a signal, every RUNNING child and the parent end KILLED with the signal as reason.
    """
    if signal_name:
        reason = f"sweep interrupted by {signal_name}"
        tracking.end_running_children(uri, run_id, tracking.KILLED, reason)
        tracking.end_run(uri, run_id, tracking.KILLED, reason=reason)
        return tracking.KILLED
    tracking.end_running_children(
        uri, run_id, tracking.KILLED, "the sweep ended before this job did (its process died)"
    )
    status = tracking.sweep_status(uri, run_id, completed=completed)
    statuses = tracking.child_statuses(uri, run_id)
    reason = None
    if status != tracking.FINISHED:
        bad = sum(s in (tracking.FAILED, tracking.KILLED) for s in statuses)
        reason = f"{bad} of {len(statuses)} jobs failed or were killed"
        if not completed:
            reason += "; the sweep stopped before its end"
    tracking.end_run(uri, run_id, status, reason=reason)
    return status


_watching: list[int] = []


def watch_launcher() -> None:
    """In a sweep job running in another process on the launcher's host: end this job (as
    SIGTERM does: run KILLED) once the launching process is gone. Once per process."""
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


def job_progress() -> tuple[Any, Any] | None:
    """In a job of a parallel sweep: ``(on_epoch, on_end)`` that report this job's epochs and
    end to the sweep's display (files under ``<sweep dir>/progress/``); None otherwise."""
    folder = os.environ.get(PROGRESS_ENV)
    hydra = HydraConfig.get()
    if not folder or hydra.mode != RunMode.MULTIRUN:
        return None
    from segloss.io import write_json

    path = Path(folder) / f"{hydra.job.num}.json"
    keys = ("loss", "seed", "cv.fold")
    named = [o for o in hydra.overrides.task if o.split("=")[0] in keys and "=null" not in o]
    label = " ".join(named) or f"job {hydra.job.num}"

    def on_epoch(epoch: int, epochs: int, row: Mapping[str, float]) -> None:
        write_json({"job": label, "state": "running", "epoch": epoch, "epochs": epochs}, path)

    def on_end(state: str) -> None:
        write_json({"job": label, "state": state}, path)

    return on_epoch, on_end


class SweepProgress:
    """One display for a sweep whose jobs run in parallel: models done of total, each running
    job's epoch, elapsed time and ETA (rich; redrawn every second on a terminal, printed once
    at the end elsewhere). Jobs report through :func:`job_progress`."""

    def __init__(self, folder: Path, total: int) -> None:
        self.folder, self.total = folder, total
        self.folder.mkdir(parents=True, exist_ok=True)
        self._started = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def states(self) -> list[dict]:
        found = []
        for path in sorted(self.folder.glob("[!.]*.json")):  # not atomic writes' temporaries
            with contextlib.suppress(OSError, ValueError):
                found.append(json.loads(path.read_text()))
        return found

    def render(self) -> Any:
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        states = self.states()
        done = sum(s.get("state") in ("done", "reused") for s in states)
        failed = sum(s.get("state") == "failed" for s in states)
        running = [s for s in states if s.get("state") == "running"]
        elapsed = time.monotonic() - self._started
        progress = done + failed + sum(s["epoch"] / max(1, s["epochs"]) for s in running)
        eta = elapsed * (self.total - progress) / progress if progress else None
        title = (
            f"sweep: {done}/{self.total} models done"
            + (f", {failed} failed" if failed else "")
            + f", elapsed {_clock(elapsed)}, ETA {_clock(eta) if eta is not None else '?'}"
        )
        if not running:
            return Text(title)
        table = Table(show_edge=False)
        table.add_column("running job")
        table.add_column("epoch", justify="right")
        for s in running:
            table.add_row(s["job"], f"{s['epoch']}/{s['epochs']}")
        return Group(Text(title), table)

    def start(self) -> None:
        from rich.console import Console
        from rich.live import Live

        console = Console(stderr=True)
        self._live = Live(self.render(), console=console, refresh_per_second=1, transient=False)
        if console.is_terminal:
            self._live.start()

        def loop() -> None:
            while not self._stop.wait(1.0):
                if console.is_terminal:
                    self._live.update(self.render())

        self._thread = threading.Thread(target=loop, name="sweep-progress", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._live.is_started:
            self._live.update(self.render())
            self._live.stop()
        elif self.states():  # a sweep whose jobs never started (refused) has nothing to show
            self._live.console.print(self.render())


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
