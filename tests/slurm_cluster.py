"""A real one-node SLURM cluster for the tests: munged, slurmctld and slurmd on this machine.

``slurm_cluster`` (session scope) writes a ``slurm.conf`` for one node on 127.0.0.1 with this
machine's CPUs and memory (``slurmd -C``) and one partition that is not the default (so a job
reaches it only through ``hydra.launcher.partition``), starts the three daemons as root in a
temporary folder (own munge key and socket, own ports), waits until ``sinfo`` reports the node
idle, and points ``SLURM_CONF`` at it for the session. Afterwards it cancels what is left of
the partition's jobs and stops the daemons by PID, whatever the outcome.

Debian's ``slurm-wlm`` and ``munge`` packages are needed (``.ci/run`` installs them). Where the
daemons cannot start, the tests skip with the reason, unless ``SEGLOSS_REQUIRE_SLURM=1`` (set
by ``.ci/run``): then they fail. There is no accounting database (``sacct`` needs
``slurmdbd``); finished jobs are recorded by ``jobcomp/filetxt`` in :attr:`Cluster.jobcomp`.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REQUIRE_ENV = "SEGLOSS_REQUIRE_SLURM"
PARTITION = "segloss"
DAEMONS = ("munged", "slurmctld", "slurmd")
SBIN = "/usr/sbin:/sbin"  # where Debian puts the daemons, often not on a user's PATH


def which(name: str) -> str | None:
    return shutil.which(name, path=f"{os.environ.get('PATH', '')}:{SBIN}")


START_TIMEOUT_S = 60


@dataclass(frozen=True)
class Cluster:
    root: Path
    conf: Path
    partition: str
    jobcomp: Path

    def run(self, *cmd: str) -> str:
        """A SLURM client command against this cluster; its stdout."""
        env = {**os.environ, "SLURM_CONF": str(self.conf)}
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)}: {proc.stderr.strip()}")
        return proc.stdout

    def finished_jobs(self) -> dict[str, dict[str, str]]:
        """Every ended job's record from ``jobcomp/filetxt``, by ``<array job>_<task>`` (or
        the plain job id)."""
        records = {}
        text = self.jobcomp.read_text() if self.jobcomp.is_file() else ""
        for line in text.splitlines():
            fields = dict(re.findall(r"(\w+)=(\S*)", line))
            array, task = fields.get("ArrayJobId"), fields.get("ArrayTaskId")
            in_array = array not in (None, "", "0") and task is not None
            key = f"{array}_{task}" if in_array else fields["JobId"]
            records[key] = fields
        return records


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _node_line() -> str:
    """This machine as slurmd sees it (NodeName, CPUs, sockets, cores, RealMemory)."""
    cmd = [which("slurmd") or "slurmd", "-C"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    first = out.stdout.splitlines()[0] if out.stdout else ""
    if out.returncode != 0 or not first.startswith("NodeName="):
        raise RuntimeError(f"slurmd -C: {out.stderr.strip() or out.stdout.strip()}")
    return first


def write_conf(root: Path) -> Path:
    node = _node_line()
    host = node.split()[0].removeprefix("NodeName=")
    conf = root / "slurm.conf"
    conf.write_text(
        "\n".join(
            [
                "ClusterName=segloss-test",
                f"SlurmctldHost={host}(127.0.0.1)",
                f"SlurmctldPort={_free_port()}",
                f"SlurmdPort={_free_port()}",
                "SlurmUser=root",
                "SlurmdUser=root",
                "AuthType=auth/munge",
                "CredType=cred/munge",
                f"AuthInfo=socket={root / 'munge' / 'munge.socket'}",
                f"StateSaveLocation={root / 'state'}",
                f"SlurmdSpoolDir={root / 'spool'}",
                f"SlurmctldPidFile={root / 'slurmctld.pid'}",
                f"SlurmdPidFile={root / 'slurmd.pid'}",
                f"SlurmctldLogFile={root / 'slurmctld.log'}",
                f"SlurmdLogFile={root / 'slurmd.log'}",
                # No cgroups in containers: plain process tracking, no task binding.
                "ProctrackType=proctrack/linuxproc",
                "TaskPlugin=task/none",
                "JobAcctGatherType=jobacct_gather/none",
                "AccountingStorageType=accounting_storage/none",
                "JobCompType=jobcomp/filetxt",
                f"JobCompLoc={root / 'jobcomp.txt'}",
                "SelectType=select/cons_tres",
                "SelectTypeParameters=CR_CPU_Memory",
                "SchedulerType=sched/backfill",
                "MpiDefault=none",
                "SwitchType=switch/none",
                "ReturnToService=2",
                "KillWait=10",
                "MinJobAge=600",
                f"{node} NodeAddr=127.0.0.1 State=UNKNOWN",
                f"PartitionName={PARTITION} Nodes={host} Default=NO MaxTime=INFINITE State=UP",
                "",
            ]
        )
    )
    return conf


def _start(root: Path, conf: Path) -> list[subprocess.Popen]:
    munge = root / "munge"
    munge.mkdir(mode=0o755)
    key = munge / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o600)
    for name in ("state", "spool"):
        (root / name).mkdir()
    commands = [
        [
            which("munged"),
            "--foreground",
            f"--key-file={key}",
            f"--socket={munge / 'munge.socket'}",
            f"--pid-file={munge / 'munged.pid'}",
            f"--log-file={munge / 'munged.log'}",
            f"--seed-file={munge / 'munged.seed'}",
        ],
        [which("slurmctld"), "-D", "-f", str(conf)],
        [which("slurmd"), "-D", "-f", str(conf)],
    ]
    procs: list[subprocess.Popen] = []
    env = {**os.environ, "SLURM_CONF": str(conf)}
    for cmd in commands:
        log = open(root / f"{Path(cmd[0]).name}.out", "w")  # noqa: SIM115 (closed with the process)
        procs.append(
            subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        )
        log.close()
        if cmd[0].endswith("munged"):
            _wait_for(lambda: (munge / "munge.socket").exists(), procs, "munged's socket")
    return procs


def _wait_for(ready, procs: list[subprocess.Popen], what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while not ready():
        for proc in procs:
            if proc.poll() is not None:
                raise RuntimeError(f"{proc.args[0]} exited with status {proc.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"no {what} after {START_TIMEOUT_S} s")
        time.sleep(0.5)


def _node_idle(cluster: Cluster) -> bool:
    try:
        return cluster.run("sinfo", "-h", "-p", cluster.partition, "-o", "%T").strip() == "idle"
    except RuntimeError:
        return False


def _logs(root: Path) -> str:
    tails = []
    for path in sorted([*root.glob("*.log"), *root.glob("*.out"), *root.glob("munge/*.log")]):
        lines = path.read_text(errors="replace").strip().splitlines()[-5:]
        tails.append(f"--- {path.name}\n" + "\n".join(lines))
    return "\n".join(tails)


def _stop(cluster: Cluster, procs: list[subprocess.Popen]) -> None:
    """Cancel the partition's jobs, wait for them to go, then stop the daemons by PID."""
    if procs and all(proc.poll() is None for proc in procs):
        try:
            cluster.run("scancel", "--partition", cluster.partition)
            deadline = time.monotonic() + 30
            while cluster.run("squeue", "-h", "-p", cluster.partition).strip():
                if time.monotonic() > deadline:
                    break
                time.sleep(1)
        except RuntimeError:
            pass
    for proc in reversed(procs):
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=15)


def _unavailable(reason: str) -> None:
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"SLURM test cluster unavailable ({REQUIRE_ENV}=1): {reason}")
    pytest.skip(f"SLURM test cluster unavailable: {reason}")


@pytest.fixture(scope="session", name="slurm_cluster")
def slurm_cluster_fixture() -> Iterator[Cluster]:
    missing = [name for name in (*DAEMONS, "sbatch", "scontrol") if which(name) is None]
    if missing:
        _unavailable(f"{', '.join(missing)} not found (apt-get install slurm-wlm munge)")
    if os.geteuid() != 0:
        _unavailable("the daemons run as root; these tests were started as another user")
    # munged wants its socket's folders searchable by everyone: not under pytest's 0700 tmp.
    root = Path(tempfile.mkdtemp(prefix="segloss-slurm-"))
    root.chmod(0o755)
    procs: list[subprocess.Popen] = []
    cluster = Cluster(root, root / "slurm.conf", PARTITION, root / "jobcomp.txt")
    try:
        try:
            write_conf(root)
            procs = _start(root, cluster.conf)
            _wait_for(lambda: _node_idle(cluster), procs, f"idle node in partition {PARTITION}")
        except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
            _unavailable(f"{exc}\n{_logs(root)}")
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("SLURM_CONF", str(cluster.conf))
            yield cluster
    finally:
        _stop(cluster, procs)
        shutil.rmtree(root, ignore_errors=True)
