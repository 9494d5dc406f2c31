"""DVC stage `evaluate`: score every trained model on the test split.

python pipelines/evaluate.py                 # models/ -> predictions/, reports/metrics/
python pipelines/evaluate.py eval.threshold=0.3 eval.device=cuda
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from segloss.cli import one_line_errors, print_config
from segloss.evaluation import evaluate


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
@one_line_errors
def main(cfg: DictConfig) -> None:
    if cfg.get("print_config", True):
        print_config(cfg)
    reports = Path(cfg.paths.reports)
    paths = evaluate(
        prepared_dir=cfg.paths.prepared,
        models_dir=cfg.paths.models,
        predictions_dir=cfg.paths.predictions,
        metrics_dir=reports / "metrics",
        plots_dir=reports / "plots",
        eval_cfg=OmegaConf.to_container(cfg.eval, resolve=True),
        tracking_uri=cfg.tracking.uri,
    )
    print(f"predictions: {paths['predictions']}/")
    print(f"metrics:     {paths['summary']} (and per_image.csv, per_patient.csv, ... beside it)")


if __name__ == "__main__":
    main()
