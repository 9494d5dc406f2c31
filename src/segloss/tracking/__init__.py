"""MLflow tracking: the only package that imports mlflow.

Runs are driven through :class:`mlflow.MlflowClient` with explicit run ids rather than the
fluent API's process-global "active run", because sweep jobs run in other processes
(joblib, submitit) and a reused worker must not inherit a previous job's run. A child run is
nested under its sweep's parent run by the ``mlflow.parentRunId`` tag, which is exactly what
``mlflow.start_run(nested=True)`` writes.

SQLite with parallel writers: the schema is created (or migrated) once, under a file lock
beside the database (``<db>.lock``), so two sweeps started together on a fresh store do not
race in MLflow's migrations; every write retries (tenacity) while SQLite reports "database
is locked", system-metric samples included, and when parallel jobs insert the same row at
once (a tag, or one data set on SQLite or PostgreSQL).

Every run records where it runs (tags ``segloss.host``, ``segloss.pid``,
``segloss.pid_started``), so a later sweep can end as KILLED the runs that a process killed
with ``kill -9`` left RUNNING (:func:`end_stale_runs`). A run that ends FAILED or KILLED
carries the reason as the tag ``reason`` (:func:`end_run`).

Modules: :mod:`.store` (client, retries, experiment), :mod:`.runs` (start, end, find runs),
:mod:`.records` (metrics, data sets, artifacts, models), :mod:`.session` (a run in progress).
"""

from segloss.tracking.records import (
    Dataset,
    image_signature,
    log_artifacts,
    log_datasets,
    log_metrics,
    log_model,
    logged_model_id,
    split_dataset,
    splits_table,
)
from segloss.tracking.runs import (
    FAILED,
    FINISHED,
    HOST_TAG,
    KILLED,
    PID_STARTED_TAG,
    PID_TAG,
    REASON_TAG,
    SLURM_JOB_TAG,
    RunInfo,
    child_runs,
    child_statuses,
    end_run,
    end_running_children,
    end_stale_runs,
    metric_history,
    run_is_live,
    run_seconds,
    run_status,
    set_tags,
    start_run,
    sweep_status,
)
from segloss.tracking.session import NullRun, TrackedRun, system_metrics, tracked_run
from segloss.tracking.store import (
    TrackingError,
    check_reachable,
    enabled,
    flatten,
    git_commit,
    prepare,
    source_tags,
    sqlite_path,
)

__all__ = [
    "FAILED",
    "FINISHED",
    "HOST_TAG",
    "KILLED",
    "PID_STARTED_TAG",
    "PID_TAG",
    "REASON_TAG",
    "SLURM_JOB_TAG",
    "Dataset",
    "NullRun",
    "RunInfo",
    "TrackedRun",
    "TrackingError",
    "check_reachable",
    "child_runs",
    "child_statuses",
    "enabled",
    "end_run",
    "end_running_children",
    "end_stale_runs",
    "flatten",
    "git_commit",
    "image_signature",
    "log_artifacts",
    "log_datasets",
    "log_metrics",
    "log_model",
    "logged_model_id",
    "metric_history",
    "prepare",
    "run_is_live",
    "run_seconds",
    "run_status",
    "set_tags",
    "source_tags",
    "split_dataset",
    "splits_table",
    "start_run",
    "sweep_status",
    "sqlite_path",
    "system_metrics",
    "tracked_run",
]
