"""The ``tracking`` group: MLflow (the tracking package); ``tracking=none`` logs nothing."""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import MISSING

from segloss.config.checks import positive, rule


@dataclass
class TrackingConfig:
    """Values and what they mean: conf/tracking/mlflow.yaml and none.yaml."""

    uri: str | None = MISSING
    experiment: str = MISSING
    log_model: bool = MISSING
    system_metrics_interval: float | None = MISSING

    def __post_init__(self) -> None:
        value = self.system_metrics_interval
        rule(
            "tracking.system_metrics_interval",
            value,
            value is None or positive(value),
            "a number of seconds > 0 or null",
        )
