"""The Hydra callback of a training multirun: its MLflow parent run, from the checks before
the first job to the end after the last."""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import signal
import sys
import tempfile
import traceback
from pathlib import Path
from types import ModuleType

import filelock
import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from segloss import processes
from segloss.cli import one_line_errors
from segloss.config import validate
from segloss.errors import ConfigError
from segloss.sweep.jobs import job_configs, job_overrides, prune_models
from segloss.sweep.progress import PROGRESS_ENV, SweepProgress
from segloss.sweep.worker import ENTRY_POINT, LAUNCHER_ENV, PARENT_RUN_FILE

log = logging.getLogger(__name__)


def _tracking() -> ModuleType:
    """``segloss.tracking``, imported where a function needs it: mlflow is slow to import, and
    Hydra unpickles this module into every worker, most of which never track anything."""
    from segloss import tracking

    return tracking


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

    def on_multirun_start(self, config: DictConfig, **kwargs: object) -> None:
        # Hydra only warns when a callback raises, and would run the jobs without a parent:
        # a bad setting is one error line (exit 2), anything else a traceback (exit 1).
        try:
            one_line_errors(self._start)(config)
        except Exception:
            traceback.print_exc()
            sys.exit(1)

    def _start(self, config: DictConfig) -> None:
        from segloss.sweep.tracked import preflight  # torch and mlflow: only once started

        tracked = validate(config).tracking
        jobs = job_configs(config)  # every job's settings, validated
        preflight(*jobs)  # every job's data and fold, and the stores, before any job starts
        sweep_dir = Path(config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        atexit.register(self._end, completed=False)
        if _tracking().enabled(tracked.uri):  # tracking=none: no parent run, jobs untracked
            self._start_parent(config, tracked.uri, tracked.experiment, sweep_dir, len(jobs))
        if "BasicLauncher" not in str(config.hydra.launcher.get("_target_", "")):
            # parallel jobs: one display here instead of one progress bar per job
            self._progress = SweepProgress(sweep_dir / "progress", len(jobs))
            os.environ[PROGRESS_ENV] = str(self._progress.folder)
            self._progress.start()
        if self.prune:
            prune_models(jobs)

    def _start_parent(
        self, config: DictConfig, uri: str, experiment: str, sweep_dir: Path, n_jobs: int
    ) -> None:
        """The sweep's MLflow parent run (one per sweep folder), its signal handling and the
        launcher identity its jobs watch."""
        tracking = _tracking()
        ended = tracking.end_stale_runs(uri, experiment)
        if ended:
            log.info("ended %d run(s) of dead processes as KILLED", len(ended))
        self._signals.enter_context(processes.sigterm_as_interrupt((signal.SIGTERM, signal.SIGINT)))
        params = {f"sweep.{k}": v for k, v in (config.hydra.sweeper.get("params") or {}).items()}
        params["overrides"] = " ".join(config.hydra.overrides.task)
        params["jobs"] = n_jobs
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

    def on_multirun_end(self, config: DictConfig, **kwargs: object) -> None:
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
        end_sweep(uri, run_id, completed=completed, signal_name=processes.received_signal())


def _log_sweep_definition(uri: str, run_id: str, config: DictConfig) -> None:
    """The parent run's ``sweep.yaml``: the swept values, the command-line overrides and
    every job's overrides, in launch order."""
    tracking = _tracking()
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
    tracking = _tracking()
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
