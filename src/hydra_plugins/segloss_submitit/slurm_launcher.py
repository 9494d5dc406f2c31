"""hydra-submitit-launcher's SLURM launcher, made to finish a sweep the way the others do.

``hydra/launcher=slurm`` (conf/hydra/launcher/slurm.yaml) uses it. Differences from
``submitit_slurm``:

* every job's config starts from ``task_overrides`` (the command line still wins), so the
  launcher file sets ``train.num_threads`` to ``cpus_per_task`` and ``train.device``;
* it waits for every job before reporting any failure (submitit's launcher raises at the
  first failed job while the others still run), asking the controller with ``scontrol``
  (:mod:`segloss.slurm`), so it also works where ``sacct`` does not;
* a job that SLURM ended (scancel, time limit, memory, node failure) has its MLflow run
  ended KILLED (cancelled, preempted) or FAILED (anything else), tagged ``slurm_state`` and
  with the SLURM state as its ``reason``; the sweep then fails naming each (loss, seed);
* Ctrl-C or SIGTERM while waiting cancels the sweep's jobs that have not ended.

Plugins must live in the ``hydra_plugins`` namespace; imports of segloss and submitit are
deferred so that discovering plugins stays fast for every entry point.
"""

import contextlib
import logging
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf, SlurmQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher
from omegaconf import OmegaConf

log = logging.getLogger(__name__)
CANCEL_WAIT_S = 120  # at most this long for cancelled jobs to end (SLURM's KillWait: 30 s)


@dataclass
class SeglossSlurmQueueConf(SlurmQueueConf):
    _target_: str = "hydra_plugins.segloss_submitit.slurm_launcher.SeglossSlurmLauncher"
    # Task-config overrides every job starts from (command-line overrides come after them).
    task_overrides: list[str] = field(default_factory=list)
    # Seconds between two looks at the jobs' states while waiting for them.
    poll_s: float = 5.0


ConfigStore.instance().store(
    group="hydra/launcher",
    name="segloss_submitit_slurm",
    node=SeglossSlurmQueueConf(),
    provider="segloss",
)


class SlurmJobFailed(Exception):
    """A sweep job that did not complete; the message names its (loss, seed) and why."""


class SeglossSlurmLauncher(SlurmLauncher):
    def __init__(self, task_overrides: Sequence[str] = (), poll_s: float = 5.0, **params: Any):
        super().__init__(**params)
        if OmegaConf.is_config(task_overrides):
            task_overrides = OmegaConf.to_container(task_overrides, resolve=True)
        self.task_overrides = [str(o) for o in task_overrides]
        self.poll_s = float(poll_s)

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        overrides = [[*self.task_overrides, *o] for o in job_overrides]
        jobs = self._submit(overrides, initial_job_idx)
        try:
            self._wait(jobs)
        except KeyboardInterrupt:
            log.warning("interrupted: cancelling the sweep's SLURM jobs that have not ended")
            for job in jobs:
                job.cancel(check=False)
            # Let the jobs end their own runs (SLURM sends SIGTERM, then SIGKILL after its
            # KillWait) before the sweep ends the parent and any run still RUNNING: two
            # processes ending one run at once collide in the store. Another signal: go now.
            with contextlib.suppress(KeyboardInterrupt):
                self._wait(jobs, timeout_s=CANCEL_WAIT_S)
            raise
        results = [self._result(job, o) for job, o in zip(jobs, overrides, strict=True)]
        failed = [r for r in results if r.status == JobStatus.FAILED]
        if failed:
            log.error(
                "%d of %d SLURM jobs failed:\n%s",
                len(failed),
                len(results),
                "\n".join(f"  {r._return_value}" for r in failed),
            )
        return results

    def _submit(self, job_overrides: list[list[str]], initial_job_idx: int) -> list:
        """Submit one array of jobs, as ``BaseSubmititLauncher.launch`` does; where SLURM
        refuses them, one ``error:`` line and exit status 2 (the CLI's convention)."""
        import submitit
        from submitit.core.utils import FailedJobError

        assert self.config is not None
        params = dict(self.params)
        executor = submitit.AutoExecutor(
            cluster="slurm",
            folder=params.pop("submitit_folder"),
            slurm_max_num_timeout=params.pop("max_num_timeout"),
        )
        shared = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(
            **{k if k in shared else f"slurm_{k}": v for k, v in params.items()}
        )
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        if "mode" in self.config.hydra.sweep:
            sweep_dir.chmod(int(str(self.config.hydra.sweep.mode), 8))
        log.info("Submitit 'slurm' sweep output dir : %s", sweep_dir)
        args = []
        for idx, overrides in enumerate(job_overrides, initial_job_idx):
            log.info("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))
            args.append(
                (overrides, "hydra.sweep.dir", idx, f"job_id_for_{idx}", Singleton.get_state())
            )
        if shutil.which("sbatch") is None:
            _exit_with_error("sbatch not found: hydra/launcher=slurm submits from a SLURM node")
        try:
            return executor.map_array(self, *zip(*args, strict=True))
        except FailedJobError as exc:  # sbatch refused: bad partition, account, resources...
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
            _exit_with_error(f"SLURM refused the sweep's jobs: {lines[-1] if lines else exc}")

    def _wait(self, jobs: list, timeout_s: float | None = None) -> None:
        """Until every job has ended (or ``timeout_s`` has passed). A poll of states, not a retry
        of failed calls, so not tenacity: nothing here fails and is tried again."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        waiting = list(jobs)
        while waiting and (deadline is None or time.monotonic() < deadline):
            waiting = [job for job in waiting if not _ended(job)]
            if waiting:
                time.sleep(min(self.poll_s, 1.0) if deadline else self.poll_s)

    def _result(self, job: Any, overrides: list[str]) -> JobReturn:
        from submitit.core.utils import FailedJobError, UncompletedJobError

        label = self._label(overrides)
        state = _state(job)
        if job.paths.result_pickle.exists() or state.state == "COMPLETED":
            try:
                ret = job.results()[0]
            except (UncompletedJobError, FailedJobError) as exc:
                return self._failed(overrides, f"{label}: SLURM job {job.job_id}: {exc}")
            if ret.status == JobStatus.FAILED and label not in str(ret._return_value):
                error = SlurmJobFailed(f"{label} (SLURM job {job.job_id}): {ret._return_value}")
                error.__cause__ = ret._return_value
                ret.return_value = error
            return ret
        reason = f"SLURM job {job.job_id} ended {state.describe()}"
        recorded = self._record_in_mlflow(overrides, job.job_id, state, reason)
        return self._failed(overrides, f"{label}: {reason}; {recorded}; log {job.paths.stderr}")

    def _sweep_config(self, overrides: list[str]) -> Any:
        assert self.hydra_context is not None and self.config is not None
        return self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))

    def _label(self, overrides: list[str]) -> str:
        try:
            cfg = self._sweep_config(overrides)
            return f"loss {cfg.loss.name}, seed {cfg.seed}"
        except Exception:  # not segloss's config: name the job by its overrides
            return " ".join(filter_overrides(overrides))

    def _failed(self, overrides: list[str], message: str) -> JobReturn:
        return JobReturn(
            overrides=overrides,
            status=JobStatus.FAILED,
            _return_value=SlurmJobFailed(message),
        )

    def _record_in_mlflow(self, overrides: list[str], job_id: str, state: Any, reason: str) -> str:
        """End the job's MLflow run KILLED (cancelled, preempted) or FAILED (any other end),
        or record such a run if the job never started one; what was done, in words.

        The job's own run may already have ended (KILLED by the SIGTERM SLURM sends); its
        status follows the SLURM state all the same, except that a FINISHED run stays so."""
        from segloss import slurm, tracking
        from segloss.config import validate
        from segloss.sweep import PARENT_RUN_FILE
        from segloss.sweep.tracked import run_name

        assert self.config is not None
        parent_file = Path(str(self.config.hydra.sweep.dir)) / PARENT_RUN_FILE
        if not parent_file.is_file():
            return f"no MLflow parent run ({parent_file} missing): not recorded"
        parent = parent_file.read_text().strip()
        cfg = validate(self._sweep_config(overrides))  # the job's settings, as it would have
        uri, experiment = cfg.tracking.uri, cfg.tracking.experiment
        status = tracking.KILLED if state.state in slurm.KILLED_STATES else tracking.FAILED
        tags = {tracking.SLURM_JOB_TAG: job_id, slurm.STATE_TAG: state.state}
        runs = tracking.child_runs(uri, parent, {tracking.SLURM_JOB_TAG: job_id})
        if not runs:  # ended before training started: record it all the same
            run_id = tracking.start_run(
                uri,
                experiment,
                run_name=run_name(cfg),
                parent_run_id=parent,
                tags={"loss": cfg.loss.name, "seed": cfg.seed, **tags},
            )
            runs = [tracking.RunInfo(run_id, "RUNNING", {})]
        ended = []
        for run in runs:
            tracking.set_tags(uri, run.run_id, tags)
            before = run.tags.get(tracking.REASON_TAG)
            final = run.status if run.status == tracking.FINISHED else status
            tracking.end_run(
                uri, run.run_id, final, reason=f"{reason} ({before})" if before else reason
            )
            ended.append(f"MLflow run {run.run_id} {final}")
        return ", ".join(ended)


def _exit_with_error(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def _state(job: Any) -> Any:
    """The job's SLURM state: from the controller, else (forgotten job) from sacct, else
    UNKNOWN (no accounting: the test cluster, some small sites)."""
    from segloss import slurm

    state = slurm.job_state(job.job_id)
    if state is not None:
        return state
    if (sacct := job.state) != "UNKNOWN":
        return slurm.JobState(sacct)
    return slurm.JobState("UNKNOWN", "the controller no longer knows the job and sacct has none")


def _ended(job: Any) -> bool:
    if job.paths.result_pickle.exists():
        return True
    from segloss import slurm

    state = slurm.job_state(job.job_id)
    return state is None or state.ended
