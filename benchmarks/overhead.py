"""The train stage's time outside model steps, read from a finished sweep's MLflow runs.

    python benchmarks/overhead.py --parent <sweep parent run id> [--workers 2] \
        [--tracking-uri sqlite:///mlflow.db]

Each child run logs ``step_seconds`` per epoch (forward, loss, backward, optimizer step:
``segloss.training.epoch.train_epoch``). Two shares of wall time outside those steps:

* ``per_run``: 1 - sum(step seconds) / sum(child run durations): inside the runs (data
  loading, augmentation, validation, logging, checkpointing, model export);
* ``stage``: 1 - sum(step seconds) / (parent run duration x workers): the whole sweep, also
  process start-up, job scheduling and idle workers (``--workers``: jobs run at once, e.g.
  joblib's n_jobs).

Goal for the real-data sweep (``experiment=lgg_cv``): ``stage`` <= 0.10.
"""

from __future__ import annotations

import argparse
import json

from segloss import tracking


def overhead(uri: str, parent: str, workers: int = 1) -> dict:
    children = [c for c in tracking.child_runs(uri, parent) if c.status == tracking.FINISHED]
    if not children:
        raise SystemExit(f"error: --parent {parent}: no finished child runs")
    steps = sum(sum(tracking.metric_history(uri, c.run_id, "step_seconds")) for c in children)
    runs = sum(tracking.run_seconds(uri, c.run_id) or 0.0 for c in children)
    wall = tracking.run_seconds(uri, parent)
    if wall is None:
        raise SystemExit(f"error: --parent {parent}: the sweep is still running")
    return {
        "runs": len(children),
        "workers": workers,
        "step_seconds": steps,
        "run_seconds": runs,
        "stage_seconds": wall,
        "per_run": 1 - steps / runs if runs else None,
        "stage": 1 - steps / (wall * workers),
        "goal_stage": "<= 0.10",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parent", required=True, help="the sweep's MLflow parent run id")
    parser.add_argument("--workers", type=int, default=1, help="jobs run at once")
    parser.add_argument("--tracking-uri", default="sqlite:///mlflow.db")
    args = parser.parse_args()
    print(json.dumps(overhead(args.tracking_uri, args.parent, args.workers), indent=2))


if __name__ == "__main__":
    main()
