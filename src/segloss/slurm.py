"""SLURM job states, read from the controller with ``scontrol`` (no accounting database needed).

Ground floor: SLURM's client commands only, nothing of Hydra or MLflow. The sweep's SLURM
launcher (``hydra_plugins.segloss_submitit``) uses it to tell when a job has ended and why:
submitit asks ``sacct``, which needs ``slurmdbd``; ``scontrol`` answers on every cluster while
the controller still holds the job (``MinJobAge``, 300 s after its end by default).
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass

from segloss.errors import SeglossError

# Job states after which nothing more happens (SLURM's "job state codes").
ENDED = frozenset(
    {
        "BOOT_FAIL",
        "CANCELLED",
        "COMPLETED",
        "DEADLINE",
        "FAILED",
        "NODE_FAIL",
        "OUT_OF_MEMORY",
        "PREEMPTED",
        "REVOKED",
        "SPECIAL_EXIT",
        "TIMEOUT",
    }
)
# Stopped from outside (scancel, preemption): the job's MLflow run ends KILLED, not FAILED.
KILLED_STATES = frozenset({"CANCELLED", "PREEMPTED"})
STATE_TAG = "slurm_state"  # MLflow tag of a job SLURM ended: its state (CANCELLED, TIMEOUT...)


class SlurmError(SeglossError):
    """A SLURM command failed."""


@dataclass(frozen=True)
class JobState:
    """A job's state, the controller's reason for it and the exit code (``status:signal``)."""

    state: str
    reason: str = "None"
    exit_code: str = "0:0"

    @property
    def ended(self) -> bool:
        return self.state in ENDED

    def describe(self) -> str:
        """``TIMEOUT (reason TimeLimit, exit code 0:15)``; only the parts that say something."""
        extra = [f"reason {self.reason}"] if self.reason not in ("None", "") else []
        if self.exit_code not in ("0:0", ""):
            extra.append(f"exit code {self.exit_code}")
        return f"{self.state} ({', '.join(extra)})" if extra else self.state


def job_state(job_id: str) -> JobState | None:
    """The state of ``job_id`` (``123`` or an array task ``123_4``) as the controller knows it;
    None once it no longer knows the job (it ended more than ``MinJobAge`` ago, or it was an
    array task cancelled before it started)."""
    try:
        proc = subprocess.run(
            ["scontrol", "show", "job", "--oneliner", job_id],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SlurmError(f"scontrol show job {job_id}: {exc}") from exc
    if proc.returncode != 0:
        said = (proc.stderr + proc.stdout).strip()
        # "Invalid job id specified": purged; "Job 12_1 not found": an array task that was
        # cancelled while it waited in the queue leaves no record at all.
        if "Invalid job id" in said or "not found" in said:
            return None
        raise SlurmError(f"scontrol show job {job_id}: {said}")
    # An array whose tasks have not started yet answers with one line for all of them.
    fields = dict(re.findall(r"(\w+)=(\S*)", proc.stdout.splitlines()[0]))
    return JobState(
        fields.get("JobState", "UNKNOWN"),
        fields.get("Reason", "None"),
        fields.get("ExitCode", "0:0"),
    )
