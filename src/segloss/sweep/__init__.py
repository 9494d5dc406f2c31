"""Hydra glue for the train entry point: the MLflow parent run of a multirun, per-job
settings, the sweep's progress display, and each job's own run (:mod:`.tracked`).

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
launching process and end their run KILLED if it dies; a job runs under
:func:`interruptible_job`, so SIGTERM ends it even before its run starts.

Modules: :mod:`.callback` (the parent run), :mod:`.jobs` (every job composed and checked;
pruning), :mod:`.worker` (in a job's process), :mod:`.progress` (the display),
:mod:`.tracked` (a job's run; imported by the entry point only when a model is trained, as it
imports torch and mlflow).
"""

from segloss.sweep.callback import MlflowSweepCallback, end_sweep
from segloss.sweep.jobs import job_configs, job_overrides, prune_models
from segloss.sweep.progress import PROGRESS_ENV, SweepProgress, job_progress
from segloss.sweep.worker import (
    LAUNCHER_ENV,
    PARENT_RUN_FILE,
    interruptible_job,
    num_threads,
    parent_run_id,
)

__all__ = [
    "LAUNCHER_ENV",
    "PARENT_RUN_FILE",
    "PROGRESS_ENV",
    "MlflowSweepCallback",
    "SweepProgress",
    "end_sweep",
    "interruptible_job",
    "job_configs",
    "job_overrides",
    "job_progress",
    "num_threads",
    "parent_run_id",
    "prune_models",
]
