"""Hydra glue for training sweeps: the MLflow parent run of a multirun, and per-job settings.

:class:`MlflowSweepCallback` (``hydra.callbacks`` in conf/config.yaml) runs in the launching
process. ``on_multirun_start`` runs every pre-flight check once (settings, prepared data,
tracking store: one clear error before any job), creates the parent run and writes its id
to ``<sweep dir>/mlflow_parent_run_id``; jobs (in this process, joblib workers or submitit
processes, possibly on other machines sharing the folder) read it with
:func:`parent_run_id`. The parent ends in ``on_multirun_end``, or at exit when the sweep
raised (Hydra's basic sweeper runs every job of the batch, then raises for a failed one):
KILLED if a child was, FAILED if a child failed or the sweep did not complete, else FINISHED.
"""

from __future__ import annotations

import atexit
import contextlib
from pathlib import Path
from typing import Any

import joblib
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from segloss import tracking
from segloss.cli import one_line_errors

PARENT_RUN_FILE = "mlflow_parent_run_id"


def _plain(config: DictConfig) -> dict[str, Any]:
    """The resolved config without its ``hydra`` node, as plain containers."""
    keys = [k for k in config if k != "hydra"]
    return OmegaConf.to_container(OmegaConf.masked_copy(config, keys), resolve=True)


class MlflowSweepCallback(Callback):
    """Create the sweep's MLflow parent run before its jobs and end it after them."""

    def __init__(self) -> None:
        self._parent: tuple[str, str] | None = None
        self._signals = contextlib.ExitStack()

    def __getstate__(self) -> dict:
        """Launchers pickle the callbacks to their workers: only the launching process owns
        the parent run and the signal handler, so copies start empty."""
        return {}

    def __setstate__(self, state: dict) -> None:
        self.__init__()

    @one_line_errors
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from segloss.training import preflight  # torch-heavy; only needed once a sweep starts

        plain = _plain(config)
        preflight(plain)
        uri, experiment = plain["tracking"]["uri"], plain["tracking"]["experiment"]
        sweep_dir = Path(config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        params = {f"sweep.{k}": v for k, v in (config.hydra.sweeper.get("params") or {}).items()}
        params["overrides"] = " ".join(config.hydra.overrides.task)
        run_id = tracking.start_run(
            uri,
            experiment,
            run_name=f"sweep {sweep_dir.name}",
            tags={"sweep_dir": str(sweep_dir), "git_commit": tracking.git_commit()},
            params=params,
        )
        (sweep_dir / PARENT_RUN_FILE).write_text(run_id + "\n")
        self._parent = (uri, run_id)
        self._signals.enter_context(tracking.sigterm_as_interrupt())
        atexit.register(self._end, completed=False)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._end(completed=True)

    def _end(self, completed: bool) -> None:
        self._signals.close()
        if self._parent is None:
            return
        uri, run_id = self._parent
        self._parent = None
        tracking.end_run(uri, run_id, tracking.sweep_status(uri, run_id, completed=completed))


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
