"""verdict.json as types: what :mod:`segloss.report.verdict` builds and the report reads.

Typed dicts, not dataclasses: verdict.json is the document itself, written as it is built and
read back by the report's sections, the MLflow logging and anyone citing it. Its nested
results are the :mod:`segloss.stats` dataclasses serialised with ``dataclasses.asdict``.
"""

from __future__ import annotations

from typing import TypedDict

from segloss.fingerprint import Json  # a JSON object: a serialised result, meta.json


class Comparison(TypedDict, total=False):
    """One comparison (the primary one's fields; each entry of ``comparisons``): a serialised
    :class:`segloss.stats.PairedComparison` with both losses' variants and, for the primary
    metric, the analysis without collapsed seeds. With no primary comparison possible its
    numbers are null and ``reason`` says why."""

    variant: dict[str, str | None]
    baseline: str
    candidate: str
    metric: str
    higher_is_better: bool
    mean_difference: float | None
    ci: list[float | None] | None
    ci_level: float
    ci_method: str
    margin: float
    verdict: str | None
    p_value: float | None
    p_holm: float | None
    effect_size: float | None
    bayes: dict[str, float]
    power: Json
    variance: dict[str, float | None]
    n_pairs: int
    n_seeds: int
    n_folds: int
    per_seed_differences: dict[int, float | None]
    superiority: Json | None
    alpha: float
    collapsed_seeds: dict[str, int]
    without_collapsed: Comparison | None
    dropped_seeds: list[int]
    at_best_threshold: Comparison
    reason: str


class Verdict(Comparison, total=False):
    """verdict.json: the primary comparison's fields, then everything else the report says."""

    variance_by_loss: dict[str, dict[str, float | None]]
    learning_rates: dict[str, list[float]]
    loss_variants: dict[str, str | None]
    comparisons: list[Comparison]
    collapse: dict[str, Json]
    collapse_dice: float
    collapse_test: Json | None
    metric_agreement: list[Json]
    friedman: Json
    verdicts_by_metric: dict[str, dict[str, Json]]
    interaction: Json
    headline: str
