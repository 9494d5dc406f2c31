"""What the report records in MLflow, computed without MLflow: the sweeps' parent runs the
models came from, the verdict's numbers and each loss's mean test metrics, and the tags.
``pipelines/report.py`` logs them, with the report's files, to every parent run."""

from __future__ import annotations

import numpy as np
import pandas as pd

from segloss.report.document import Verdict
from segloss.scoring import SUMMARY_METRICS


def parent_runs(per_model: pd.DataFrame) -> list[str]:
    """The MLflow parent runs (sweeps) the evaluated models were trained in."""
    return [str(run_id) for run_id in per_model["mlflow_parent_run_id"].dropna().unique()]


def parent_metrics(verdict: Verdict, per_model: pd.DataFrame) -> dict[str, float]:
    """The numbers a sweep's parent run shows: ``verdict_mean_difference``, ``verdict_ci_low``,
    ``verdict_ci_high``, ``verdict_p_value``, ``verdict_margin`` (where defined), with a
    second factor ``interaction_difference``, ``interaction_ci_low``/``_high``, and
    ``<loss>/test_<metric>``, the mean over seeds of each test summary metric."""
    ci = verdict.get("ci") or [None, None]
    values = {
        "verdict_mean_difference": verdict.get("mean_difference"),
        "verdict_ci_low": ci[0],
        "verdict_ci_high": ci[1],
        "verdict_p_value": verdict.get("p_value"),
        "verdict_margin": verdict.get("margin"),
    }
    interaction = verdict.get("interaction")
    if interaction:
        low, high = interaction["ci"]
        values |= {
            "interaction_difference": interaction["difference"],
            "interaction_ci_low": low,
            "interaction_ci_high": high,
        }
    columns = [c for c in SUMMARY_METRICS if c in per_model]
    for loss, row in per_model.groupby("loss")[columns].mean().iterrows():
        values |= {f"{loss}/test_{name}": row[name] for name in columns}
    return {k: float(v) for k, v in values.items() if v is not None and np.isfinite(float(v))}


def parent_tags(verdict: Verdict) -> dict[str, str]:
    """The outcome and the headline as tags (the headline is also the run's description)."""
    return {
        "verdict": verdict.get("verdict") or "none",
        "verdict_comparison": f"{verdict.get('candidate')} vs {verdict.get('baseline')} "
        f"on {verdict.get('metric')}",
        "verdict_headline": verdict.get("headline", ""),
        "mlflow.note.content": verdict.get("headline", ""),
    }
