"""Train one U-Net per (loss, seed), each tracked as an MLflow run.

    python pipelines/train.py loss=dice seed=1          # one model
    python pipelines/train.py -m                        # the default sweep (conf/config.yaml)
    python pipelines/train.py -m loss=bce,focal seed=0,1 train.epochs=5 hydra/launcher=joblib

See README "Training and tracking".
"""

from __future__ import annotations

import dataclasses
import logging

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from segloss import sweep
from segloss.cli import one_line_errors, print_config
from segloss.config import Config, validate
from segloss.fingerprint import TrainSummary, quick_reuse

log = logging.getLogger("train")


def _train(settings: Config) -> TrainSummary:
    threads = sweep.num_threads(settings.train.num_threads)
    settings = dataclasses.replace(
        settings, train=dataclasses.replace(settings.train, num_threads=threads)
    )
    if summary := quick_reuse(settings):  # up to date: no torch or MLflow import in this job
        log.info("%s is up to date (same config, data and code); reused", summary.model_path)
        if report := sweep.job_progress():
            report[1]("reused")
        return summary
    from segloss.sweep.tracked import train  # torch and MLflow: only for a model to train

    report = sweep.job_progress()  # parallel jobs: the sweep's display, not a bar per job
    if report is None:
        return train(settings, parent_run_id=sweep.parent_run_id())
    on_epoch, on_end = report
    try:
        summary = train(settings, parent_run_id=sweep.parent_run_id(), progress=on_epoch)
    except BaseException:
        on_end("failed")
        raise
    on_end("reused" if summary.reused else "done")
    return summary


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> TrainSummary:
    with sweep.interruptible_job():  # SIGTERM ends the job (run KILLED), sent if the sweep dies
        hydra_cfg = HydraConfig.get()
        multirun = hydra_cfg.mode == RunMode.MULTIRUN
        # A failing job must reach Hydra, which records it, runs the other jobs and raises at
        # the end; one_line_errors would exit the whole sweep. The sweep's callback has
        # checked every job's settings before the first one started.
        settings = validate(cfg) if multirun else one_line_errors(validate)(cfg)
        if settings.print_config and (not multirun or hydra_cfg.job.num == 0):
            print_config(cfg)  # a sweep's first job only: the others differ by their overrides
        return _train(settings) if multirun else one_line_errors(_train)(settings)


if __name__ == "__main__":
    main()
