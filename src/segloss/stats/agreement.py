"""Do two metrics rank the same models alike? Kendall's tau and the share of discordant pairs."""

from __future__ import annotations

import itertools
from collections.abc import Mapping

import numpy as np
import pandas as pd
from scipy import stats


def discordant_share(a: np.ndarray, b: np.ndarray) -> float:
    """The share of pairs of models that ``a`` and ``b`` order in opposite directions (a tie
    in either is not discordant)."""
    da = np.sign(a[:, None] - a[None, :])
    db = np.sign(b[:, None] - b[None, :])
    upper = np.triu_indices(len(a), k=1)
    return float(np.mean((da * db)[upper] < 0)) if len(a) > 1 else 0.0


def metric_agreement(
    models: pd.DataFrame, higher_is_better: Mapping[str, bool]
) -> list[dict[str, object]]:
    """For each pair of the metric columns of ``models`` (one row per model) named in
    ``higher_is_better``: Kendall's tau-b (``scipy.stats.kendalltau``) between the models'
    orders, each metric oriented so that higher is better (tau > 0: the metrics agree), and
    the share of model pairs the two order differently. Tau is null where a metric does not
    vary (no order to compare)."""
    oriented = {
        name: models[name].to_numpy(float) * (1.0 if up else -1.0)
        for name, up in higher_is_better.items()
        if name in models
    }
    rows = []
    for a, b in itertools.combinations(oriented, 2):
        x, y = oriented[a], oriented[b]
        keep = np.isfinite(x) & np.isfinite(y)
        tau = stats.kendalltau(x[keep], y[keep]).statistic if keep.sum() > 1 else np.nan
        rows.append(
            {
                "metric_a": a,
                "metric_b": b,
                "kendall_tau": float(tau) if np.isfinite(tau) else None,
                "discordant_share": discordant_share(x[keep], y[keep]),
            }
        )
    return rows
