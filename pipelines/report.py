"""DVC stage `report`: render the comparison report and the verdict from the evaluation.

python pipelines/report.py                   # -> reports/report.{md,html}, verdict.json
python pipelines/report.py report.candidate=dice report.alpha=0.01
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from segloss.cli import one_line_errors, print_config
from segloss.report import build_report


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
@one_line_errors
def main(cfg: DictConfig) -> None:
    if cfg.get("print_config", True):
        print_config(cfg)
    reports = Path(cfg.paths.reports)
    paths = build_report(
        prepared_dir=cfg.paths.prepared,
        predictions_dir=cfg.paths.predictions,
        metrics_dir=reports / "metrics",
        reports_dir=reports,
        settings=OmegaConf.to_container(cfg.report, resolve=True),
        tracking_uri=cfg.tracking.uri,
    )
    print(f"report:  {paths['report_html'].resolve()} (Markdown: {paths['report_md']})")
    print(f"verdict: {paths['verdict']}")


if __name__ == "__main__":
    main()
