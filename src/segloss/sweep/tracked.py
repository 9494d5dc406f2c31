"""A training job tracked as one MLflow run: :func:`train` is :func:`segloss.training.train`
with its run (nested under the sweep's parent run in a multirun), which the train entry point
calls; :func:`preflight` adds the tracking store's check to the training's.

The run starts once the model is built (tags, the resolved config as params, system
metrics), records its training and validation sets, every epoch's metrics, then the best
epoch's metrics, ``config.yaml``, ``splits.csv``, ``history.csv`` and (``tracking.log_model``)
the model; it ends FINISHED, FAILED (e.g. diverged) or KILLED (a signal) with the reason.
"""

from __future__ import annotations

import contextlib
import functools
import math
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import yaml

from segloss import tracking, training
from segloss.config import Config, plain
from segloss.data.prepared import fold_splits, load_manifest
from segloss.fingerprint import factor_level
from segloss.losses import loss_variant
from segloss.sweep.worker import ENTRY_POINT
from segloss.training import Job, Trained, TrainSummary
from segloss.training.job import Progress
from segloss.training.loop import EpochRow


def preflight(*jobs: Config) -> None:
    """The training's checks (:func:`segloss.training.preflight`) of every job of a sweep,
    then the tracking store's, once per store (reachable; database and experiment created if
    needed)."""
    for settings in jobs:
        training.preflight(settings)
    for store in dict.fromkeys((s.tracking.uri, s.tracking.experiment) for s in jobs):
        tracking.prepare(*store)


def split_patients(fold: int | None, meta: Mapping[str, object]) -> dict[str, list[str]]:
    """The patients of each split a job of ``fold`` uses (None: no cross-validation)."""
    if fold is None:
        return dict(meta.get("splits") or {})
    return fold_splits(meta, fold)


class JobRun:
    """A training job's :class:`segloss.training.Recorder`: logs into its MLflow run."""

    def __init__(self, job: Job, run: tracking.TrackedRun, parent_run_id: str | None) -> None:
        self.job, self.run, self.parent_run_id = job, run, parent_run_id
        prepared = job.settings.paths.prepared
        manifest = load_manifest(prepared)
        self.splits = [
            tracking.split_dataset(manifest, prepared, job.meta, split, patients, job.fold)
            for split, patients in split_patients(job.fold, job.meta).items()
        ]
        # the run's inputs: what it trains and validates on (evaluation adds the test set)
        run.log_datasets([d for d in self.splits if d.context in ("training", "validation")])

    def epoch(self, row: EpochRow) -> None:
        # an epoch without validation (train.val_every) has NaN val columns: not logged
        metrics = {k: v for k, v in row.items() if k != "epoch" and math.isfinite(v)}
        self.run.log_metrics(metrics, step=row["epoch"])

    def trained(self, result: Trained) -> dict[str, str | None]:
        """The best epoch's metrics, the run's files and the model; the checkpoint's ids."""
        job, run = self.job, self.run
        run.log_metrics(
            {
                "best_val_dice": result.best_val_dice,
                "best_epoch": result.best_epoch,
                "train_seconds": result.seconds,
            },
            step=result.best_epoch,
        )
        with tempfile.TemporaryDirectory() as tmp:
            config_path = Path(tmp) / "config.yaml"
            config_path.write_text(yaml.safe_dump(plain(job.settings), sort_keys=False))
            splits_path = Path(tmp) / "splits.csv"
            tracking.splits_table(self.splits).to_csv(splits_path, index=False)
            run.log_artifacts([config_path, splits_path, result.history_path])
        ids = {"mlflow_run_id": run.run_id, "mlflow_parent_run_id": self.parent_run_id}
        if job.settings.tracking.log_model:
            tags = {"loss": job.loss, "seed": job.seed, "data_hash": job.meta.get("data_hash")}
            ids["mlflow_model_id"] = run.log_model(result.model, result.example, tags=tags)
        return ids


def run_name(settings: Config) -> str:
    """A job's MLflow run name, with its loss's variant (and level of a second factor):
    ``dice (batch) seed0 fold1``, ``bce (pixel) sampling=uniform seed0 fold1``."""
    fold, level = settings.cv.fold, factor_level(settings)
    name = f"{settings.loss.name} ({loss_variant(settings.loss)})"
    name += "" if level is None else f" {'='.join(level)}"
    return name + f" seed{settings.seed}" + ("" if fold is None else f" fold{fold}")


def _tags(job: Job) -> dict[str, object]:
    tags = {
        "loss": job.loss,
        "loss_variant": loss_variant(job.settings.loss),
        "seed": job.seed,
        "model": job.settings.model.name,
        "git_commit": tracking.git_commit(),
        "data_hash": job.meta.get("data_hash"),
        "code_version": job.fingerprint["code_version"],
        "fingerprint": job.fingerprint_hash,
        **tracking.source_tags(ENTRY_POINT),
    }
    if job.fold is not None:
        tags["fold"] = job.fold
    if (level := factor_level(job.settings)) is not None:
        tags[level[0]] = level[1]  # e.g. sampling: uniform, to filter runs by arm in the UI
    return tags


@contextlib.contextmanager
def job_run(job: Job, parent_run_id: str | None = None) -> Iterator[JobRun]:
    """A :data:`segloss.training.Tracker`: the job's run, from start to FINISHED, FAILED or
    KILLED (:func:`segloss.tracking.tracked_run`)."""
    settings = job.settings
    with tracking.tracked_run(
        settings.tracking.uri,
        settings.tracking.experiment,
        run_name=run_name(settings),
        parent_run_id=parent_run_id,
        tags=_tags(job),
        params=tracking.flatten(plain(settings)),
        system_metrics_interval=settings.tracking.system_metrics_interval,
    ) as run:
        yield JobRun(job, run, parent_run_id)


def train(
    settings: Config,
    *,
    parent_run_id: str | None = None,
    progress: Progress | None = None,
) -> TrainSummary:
    """:func:`segloss.training.train`, tracked: the prepared data and the tracking store
    checked before any work, then one MLflow run nested under ``parent_run_id`` (none for a
    reused model)."""
    meta = training.preflight(settings)
    tracking.prepare(settings.tracking.uri, settings.tracking.experiment)
    tracker = functools.partial(job_run, parent_run_id=parent_run_id)
    return training.train(settings, meta=meta, tracker=tracker, progress=progress)
