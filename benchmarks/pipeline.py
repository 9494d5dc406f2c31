"""The default ``dvc repro`` end to end, stage by stage (opt-in: ``run_all.py --pipeline``).

Copies the working tree (tracked and untracked, not ignored: no data, models or MLflow
store) to a temporary folder and runs each stage's ``cmd`` from dvc.yaml there in order,
as ``dvc repro`` would on a fresh checkout, with the project's Python first on PATH. Per
stage: wall seconds, CPU seconds and peak RSS (GNU time's ``%M``: the largest single process of
the stage, its reaped children included). DVC's own hashing is not included.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from common import REPO

TIME = "/usr/bin/time"  # GNU time


def copy_tree(dest: Path) -> None:
    """Copy the files git would see (tracked + untracked, not ignored) to ``dest``."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    for name in listed:
        if (REPO / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dest / name)


def run_stage(command: str, cwd: Path, env: dict[str, str], log: Path) -> dict[str, Any]:
    """Run one stage's shell command under GNU time; wall and CPU seconds, peak RSS in MiB.

    Not ``os.wait4`` from here: a child forked from this large process inherits its RSS high
    water mark, so the peak must be taken by a small parent (``/usr/bin/time``).
    """
    usage = log.with_suffix(".time")
    timed = [TIME, "-f", "%U %S %M", "-o", str(usage), "sh", "-c", command]
    start = time.perf_counter()
    with log.open("w") as out:
        done = subprocess.run(timed, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    if done.returncode:
        tail = log.read_text()[-3000:]
        raise RuntimeError(f"`{command}` failed with status {done.returncode}:\n{tail}")
    user, system, max_kib = usage.read_text().split()[-3:]
    return {
        "command": command,
        "seconds": seconds,
        "cpu_seconds": float(user) + float(system),
        "peak_rss_mib": int(max_kib) / 1024,
    }


def run(overrides: tuple[str, ...] = ()) -> dict[str, Any]:
    """Every stage in dvc.yaml order, each command followed by the Hydra ``overrides``."""
    extra = "".join(f" {shlex.quote(o)}" for o in overrides)
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    env = os.environ | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    with tempfile.TemporaryDirectory(prefix="segloss-pipeline-") as tmp:
        root = Path(tmp) / "repo"
        copy_tree(root)
        env["PYTHONPATH"] = str(root / "src")  # the copy's code, not the editable install's
        results = {
            name: run_stage(stage["cmd"] + extra, root, env, Path(tmp) / f"{name}.log")
            for name, stage in stages.items()
        }
    return {
        "stages": results,
        "total_seconds": sum(r["seconds"] for r in results.values()),
        "peak_rss_mib": max(r["peak_rss_mib"] for r in results.values()),
    }
