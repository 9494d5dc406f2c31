"""DVC stage `evaluate`: score every trained model on the test split.

python pipelines/evaluate.py                 # models/ -> predictions/, reports/metrics/
python pipelines/evaluate.py eval.threshold=0.3 eval.device=cuda
"""

from __future__ import annotations

import warnings
from pathlib import Path

import hydra
import numpy as np

from segloss.cli import stage
from segloss.config import Config
from segloss.data.prepared import load_manifest
from segloss.evaluation import Evaluation, score_models, write_outputs


def log_test_metrics(uri: str | None, evaluation: Evaluation, prepared_dir: str) -> None:
    """Log ``test_<metric>`` to each model's MLflow run (``mlflow_run_id`` in its checkpoint),
    or warn why not. The test split is recorded as the run's ``testing`` data set, and the
    metrics are attached to the run's logged model and to that data set (MLflow 3 shows them
    on the model's page)."""
    if uri is None:
        return
    from segloss import tracking  # imports mlflow: only when something is logged

    if not tracking.enabled(uri):
        return
    manifest = load_manifest(prepared_dir)
    for result in evaluation.models:
        run_id, data = result.state.get("mlflow_run_id"), result.state.get("data") or {}
        if not run_id:
            warnings.warn(
                f"{result.checkpoint.path} has no mlflow_run_id: its test metrics are not "
                "logged to MLflow",
                stacklevel=2,
            )
            continue
        splits = data.get("splits") or evaluation.meta.get("splits") or {}
        test = list(splits.get("test", []))
        dataset = tracking.split_dataset(
            manifest, prepared_dir, evaluation.meta, "test", test, data.get("fold")
        )
        tracking.log_datasets(uri, run_id, [dataset])
        model_id = result.state.get("mlflow_model_id") or tracking.logged_model_id(uri, run_id)
        metrics = {f"test_{k}": float(v) for k, v in result.summary.items() if np.isfinite(v)}
        tracking.log_metrics(uri, run_id, metrics, model_id=model_id, dataset=dataset)


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
@stage
def main(settings: Config) -> None:
    paths = settings.paths
    evaluation = score_models(
        prepared_dir=paths.prepared,
        models_dir=paths.models,
        predictions_dir=paths.predictions,
        settings=settings.eval,
        factor=settings.factor,
    )
    reports = Path(paths.reports)
    written = write_outputs(evaluation, reports / "metrics", reports / "plots")
    log_test_metrics(settings.tracking.uri, evaluation, paths.prepared)
    print(f"predictions: {written['predictions']}/")
    print(f"metrics:     {written['summary']} (and per_image.csv, per_patient.csv, ... beside it)")


if __name__ == "__main__":
    main()
