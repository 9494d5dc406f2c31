"""DVC stage `report`: render the comparison report and the verdict from the evaluation.

python pipelines/report.py                   # -> reports/report.{md,html}, verdict.json
python pipelines/report.py report.candidate=dice report.alpha=0.01
"""

from __future__ import annotations

import warnings
from pathlib import Path

import hydra

from segloss.cli import stage
from segloss.config import Config
from segloss.fingerprint import factor_level
from segloss.report import BuiltReport, Factor, build_report, logged


def log_to_parent_runs(uri: str | None, report: BuiltReport) -> None:
    """Log the report to every sweep (MLflow parent run) the models came from: its files
    under ``report/``, the verdict's numbers and each loss's mean test metrics as metrics,
    the outcome and the headline as tags (``segloss.report.logged``)."""
    if uri is None:
        return
    from segloss import tracking  # imports mlflow: only when something is logged

    if not tracking.enabled(uri):
        return
    parents = logged.parent_runs(report.per_model)
    if not parents:
        warnings.warn(
            "the checkpoints name no mlflow_parent_run_id: the report is not logged to MLflow",
            stacklevel=2,
        )
        return
    metrics = logged.parent_metrics(report.verdict, report.per_model)
    tags = logged.parent_tags(report.verdict)
    for run_id in parents:
        tracking.log_artifacts(uri, run_id, list(report.paths.values()), artifact_path="report")
        tracking.log_metrics(uri, run_id, metrics)
        tracking.set_tags(uri, run_id, tags)


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
@stage
def main(settings: Config) -> None:
    reports = Path(settings.paths.reports)
    level = factor_level(settings)  # the factor's configured value: the arm the main sections show
    report = build_report(
        prepared_dir=settings.paths.prepared,
        predictions_dir=settings.paths.predictions,
        metrics_dir=reports / "metrics",
        reports_dir=reports,
        settings=settings.report,
        factor=None if level is None else Factor(settings.factor, level[1]),
    )
    log_to_parent_runs(settings.tracking.uri, report)
    print(
        f"report:  {report.paths['report_html'].resolve()} (Markdown: {report.paths['report_md']})"
    )
    print(f"verdict: {report.paths['verdict']}")


if __name__ == "__main__":
    main()
