"""A run in progress: :func:`tracked_run` starts it, samples system metrics while it runs
and ends it FINISHED, FAILED or KILLED with the reason."""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

import numpy as np
from torch import nn

from segloss.errors import first_line
from segloss.processes import signal_reason, sigterm_as_interrupt
from segloss.tracking.records import Dataset, log_artifacts, log_datasets, log_metrics, log_model
from segloss.tracking.runs import FAILED, FINISHED, KILLED, end_run, start_run
from segloss.tracking.store import enabled

log = logging.getLogger(__name__)


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

    def log_model(
        self, model: nn.Module, input_example: np.ndarray, tags: Mapping[str, object] | None = None
    ) -> str | None:
        return log_model(self.uri, self.run_id, model, input_example, tags=tags)

    def log_datasets(self, datasets: Iterable[Dataset]) -> None:
        log_datasets(self.uri, self.run_id, datasets)


class NullRun(TrackedRun):
    """Tracking off (``tracking=none``): every call does nothing, ``run_id`` is None."""

    def __init__(self) -> None:
        super().__init__(uri="", run_id=None, parent_run_id=None)

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        pass

    def log_artifacts(self, paths: Iterable[str | os.PathLike]) -> None:
        pass

    def log_model(self, model, input_example, tags=None) -> None:
        return None

    def log_datasets(self, datasets: Iterable[Dataset]) -> None:
        pass


@contextlib.contextmanager
def system_metrics(uri: str, run_id: str, interval: float | None) -> Iterator[None]:
    """Sample CPU, memory, disk and network (psutil; GPU where pynvml finds one) every
    ``interval`` seconds into the run's ``system/*`` metrics, as ``log_system_metrics=True``
    does; one last sample is logged at the end, so a run shorter than ``interval`` has one
    too. ``interval`` None or 0: off.

    MLflow's monitors measure, but this thread logs, through :func:`log_metrics` (retried
    while SQLite is locked): MLflow's own sampling thread writes without retries, and under
    parallel jobs logs "database is locked" and stops sampling.
    """
    if not interval:
        yield
        return
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    quiet = logging.getLogger("mlflow.system_metrics")
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    monitor = SystemMetricsMonitor(run_id, sampling_interval=interval, tracking_uri=uri)
    prefix = "system/" + (f"{monitor.node_id}/" if monitor.node_id else "")
    steps, stop = itertools.count(), threading.Event()

    def publish() -> None:
        metrics = {prefix + k: v for k, v in monitor.aggregate_metrics().items()}
        for part in monitor.monitors:
            part.clear_metrics()
        log_metrics(uri, run_id, metrics, step=next(steps))

    def sample() -> None:
        monitor.collect_metrics()
        while not stop.wait(monitor.sampling_interval):
            try:
                publish()
            except Exception as exc:  # the store refuses (not a lock): stop sampling
                log.warning("system metrics: %s; sampling stops", first_line(exc))
                return
            monitor.collect_metrics()

    thread = threading.Thread(target=sample, name="system-metrics", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        with contextlib.suppress(Exception):  # a sample lost to a locked store is no failure
            monitor.collect_metrics()
            publish()
        quiet.setLevel(level)


@contextlib.contextmanager
def tracked_run(
    uri: str,
    experiment: str,
    *,
    run_name: str,
    parent_run_id: str | None = None,
    tags: Mapping[str, object] | None = None,
    params: Mapping[str, object] | None = None,
    system_metrics_interval: float | None = None,
) -> Iterator[TrackedRun]:
    """A run that ends FINISHED, FAILED on an exception, KILLED on Ctrl-C or SIGTERM; a FAILED
    or KILLED run gets the exception's first line (or the signal) as its ``reason`` tag.

    With tracking off (:func:`enabled`) it yields a :class:`NullRun` (signals still become
    KeyboardInterrupt). ``system_metrics_interval``: see :func:`system_metrics`.
    """
    if not enabled(uri):
        with sigterm_as_interrupt():
            yield NullRun()
        return
    run_id = start_run(
        uri, experiment, run_name=run_name, parent_run_id=parent_run_id, tags=tags, params=params
    )
    status, reason = FAILED, "the process ended before the run did"
    try:
        with sigterm_as_interrupt(), system_metrics(uri, run_id, system_metrics_interval):
            yield TrackedRun(uri, run_id, parent_run_id)
        status, reason = FINISHED, None
    except KeyboardInterrupt as exc:
        status, reason = KILLED, signal_reason(exc)
        raise
    except BaseException as exc:
        reason = f"{type(exc).__name__}: {first_line(exc)}"
        raise
    finally:
        end_run(uri, run_id, status, reason=reason)
