"""Calibration of foreground probabilities: reliability bins, their pooling, and the ECE.

Ground floor, next to :mod:`segloss.metrics`: the evaluate stage bins each model's test
pixels (:func:`calibration_table`, written to ``calibration.csv``); the report pools the bins
of a loss's models (:func:`pool_calibration`) for its reliability diagram, and so does the
``dvc plots`` table.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from segloss import stacks


def calibration_table(probabilities: np.ndarray, target: np.ndarray, n_bins: int) -> pd.DataFrame:
    """Equal-width bins of foreground probability over all pixels: the reliability diagram.

    Per bin: pixel ``count``, mean predicted probability and the observed foreground fraction.
    """
    p = stacks.ravel(probabilities).astype(np.float64)
    y = stacks.ravel(target).astype(bool)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    index = np.clip(np.digitize(p, edges[1:-1]), 0, n_bins - 1)
    count = np.bincount(index, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_prob = np.bincount(index, weights=p, minlength=n_bins) / count
        frac_positive = np.bincount(index, weights=y, minlength=n_bins) / count
    return pd.DataFrame(
        {
            "bin": np.arange(n_bins),
            "lower": edges[:-1],
            "upper": edges[1:],
            "count": count,
            "mean_prob": mean_prob,
            "frac_positive": frac_positive,
        }
    )


def pool_calibration(table: pd.DataFrame) -> pd.DataFrame:
    """Merge the seeds' bins of each loss, weighting each seed's bin by its pixel count."""
    weighted = table.assign(
        prob_sum=table["mean_prob"].fillna(0) * table["count"],
        pos_sum=table["frac_positive"].fillna(0) * table["count"],
    )
    sums = weighted.groupby(["loss", "bin"], sort=False)[["count", "prob_sum", "pos_sum"]].sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        sums["mean_prob"] = sums["prob_sum"] / sums["count"]
        sums["frac_positive"] = sums["pos_sum"] / sums["count"]
    return sums.drop(columns=["prob_sum", "pos_sum"]).reset_index()


def expected_calibration_error(table: pd.DataFrame) -> float:
    """ECE: the pixel-weighted mean gap between predicted probability and observed frequency."""
    filled = table[table["count"] > 0]
    weights = filled["count"] / filled["count"].sum()
    return float((weights * (filled["mean_prob"] - filled["frac_positive"]).abs()).sum())
