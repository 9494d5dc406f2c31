"""Sweep throughput through the real CLI: sequential against ``hydra/launcher=joblib``.

Both run ``python pipelines/train.py -m loss=<losses> seed=<seeds>`` on the same prepared
folder (4 jobs of 4 epochs on 512 slices: long enough that worker start-up, ~10 s of imports
per joblib worker, does not hide the compute). Sequential: Hydra's basic launcher, every
core for each job. Parallel: joblib with
``n_jobs = min(cores, jobs)`` and ``train.num_threads`` left to :func:`segloss.sweep.num_threads`
(cores // jobs), so jobs x threads = cores. Wall times include process start-up, the MLflow
parent run and worker start-up: what a user waits for.
``parallel_sweep_speedup = sequential seconds / parallel seconds`` (goal >= 1).
"""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

import joblib
from common import REPO, Bench


def _timed(command: list[str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return seconds


def run(bench: Bench) -> dict[str, Any]:
    sizes = bench.sizes
    size = sizes.image_sizes[0]
    prepared = bench.prepared(size, sizes.sweep_train_slices, sizes.eval_slices, sizes.eval_slices)
    jobs = len(sizes.sweep_losses) * len(sizes.sweep_seeds)
    cores = joblib.cpu_count()  # what segloss.sweep.num_threads divides
    n_jobs = min(cores, jobs)
    base = [
        sys.executable,
        "pipelines/train.py",
        "-m",
        f"loss={','.join(sizes.sweep_losses)}",
        f"seed={','.join(map(str, sizes.sweep_seeds))}",
        f"train.epochs={sizes.sweep_epochs}",
        f"paths.prepared={prepared}",
        *bench.overrides(),
    ]
    launchers = {
        "sequential": [],
        "parallel": ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={n_jobs}"],
    }
    seconds = {}
    for name, extra in launchers.items():
        out = bench.work / f"sweep_{name}"
        seconds[name] = _timed(
            [*base, *extra, f"paths.models={out / 'models'}", f"hydra.sweep.dir={out / 'multirun'}"]
        )
    return {
        "jobs": jobs,
        "losses": list(sizes.sweep_losses),
        "seeds": list(sizes.sweep_seeds),
        "epochs": sizes.sweep_epochs,
        "train_slices": sizes.sweep_train_slices,
        "image_size": size,
        "parallel_n_jobs": n_jobs,
        "sequential_threads": cores,
        "parallel_threads_per_job": max(1, cores // n_jobs),
        "seconds": seconds,
        "parallel_sweep_speedup": seconds["sequential"] / seconds["parallel"],
    }
