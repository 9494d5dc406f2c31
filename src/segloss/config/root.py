"""The root of the composed config: one field per group, the run's seed and the paths."""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import MISSING

from segloss.config.checks import int_at_least, is_number, rule
from segloss.config.cv import CvConfig
from segloss.config.data import DataConfig
from segloss.config.eval import EvalConfig
from segloss.config.loss import LossConfig
from segloss.config.model import ModelConfig
from segloss.config.report import ReportConfig
from segloss.config.tracking import TrackingConfig
from segloss.config.train import TrainConfig
from segloss.config.tune import TuneConfig


@dataclass
class Paths:
    """Outputs, relative to the repository root (Hydra ``job.chdir: false``)."""

    prepared: str = MISSING
    models: str = MISSING
    predictions: str = MISSING
    reports: str = MISSING


@dataclass
class Config:
    """Every stage's config (conf/config.yaml picks one option per group)."""

    data: DataConfig = MISSING
    cv: CvConfig = MISSING
    model: ModelConfig = MISSING
    loss: LossConfig = MISSING
    train: TrainConfig = MISSING
    tracking: TrackingConfig = MISSING
    eval: EvalConfig = MISSING
    report: ReportConfig = MISSING
    tune: TuneConfig = MISSING
    seed: int = MISSING  # the model's seed (weights, batches, augmentation)
    print_config: bool = MISSING  # each stage prints its composed config as a tree at start
    paths: Paths = MISSING
    # experiment=tuned: the rate per loss that pipelines/tune.py chose (conf/tuned/lr.yaml)
    tuned_lr: dict[str, float] | None = None
    # A second factor crossed with the loss (experiment=lgg_sampling: train.sampling): a
    # setting of the train or model group whose values the sweep varies. Each level's models
    # live in <paths.models>/<setting>_<value>/ and the report compares the losses per level.
    factor: str | None = None

    def __post_init__(self) -> None:
        rule("seed", self.seed, int_at_least(self.seed, 0), "an integer >= 0")
        ok = isinstance(self.print_config, bool)
        rule("print_config", self.print_config, ok, "true or false")
        if self.factor is not None:
            group, _, key = self.factor.partition(".")
            value = getattr(getattr(self, group, None), key, None) if key else None
            scalar = isinstance(value, str | bool) or is_number(value)
            ok = group in FACTOR_GROUPS and "." not in key and scalar
            rule("factor", self.factor, ok, "a scalar setting of the train or model group")


FACTOR_GROUPS = ("train", "model")

GROUPS: dict[str, type] = {
    "data": DataConfig,
    "cv": CvConfig,
    "model": ModelConfig,
    "loss": LossConfig,
    "train": TrainConfig,
    "tracking": TrackingConfig,
    "eval": EvalConfig,
    "report": ReportConfig,
    "tune": TuneConfig,
}
