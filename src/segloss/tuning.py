"""Learning rate per loss from a tuning sweep: read the runs, pick the best rate per loss.

The tuning sweep (pipelines/tune.py) writes ``<models>/lr_<rate>/<loss>/seed<k>/history.csv``;
a rate is scored by the best validation per-patient Dice of its runs, averaged over the
tuning seeds. Only validation scores are read: the test split plays no part.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from segloss.errors import SeglossError

PREFIX = "lr_"


def tuning_runs(models_dir: str | os.PathLike) -> pd.DataFrame:
    """``loss, lr, seed, best_val_dice, best_epoch`` of every tuning run under ``models_dir``."""
    rows = []
    for history in sorted(Path(models_dir).glob(f"{PREFIX}*/*/seed*/history.csv")):
        seed_dir, loss_dir, rate_dir = history.parent, history.parent.parent, history.parents[2]
        curve = pd.read_csv(history)
        if curve.empty:
            continue
        best = curve["val_dice"].idxmax()
        rows.append(
            {
                "loss": loss_dir.name,
                "lr": float(rate_dir.name[len(PREFIX) :]),
                "seed": int(seed_dir.name[len("seed") :]),
                "best_val_dice": float(curve.loc[best, "val_dice"]),
                "best_epoch": int(curve.loc[best, "epoch"]),
            }
        )
    if not rows:
        raise SeglossError(f"{models_dir}: no tuning runs found (lr_<rate>/<loss>/seed<k>/)")
    return pd.DataFrame(rows)


def best_rates(runs: pd.DataFrame, losses: list[str], grid: list[float]) -> dict[str, float]:
    """Per loss, the rate of ``grid`` with the highest mean best validation Dice over seeds.

    Every (loss, rate) of the grid must have a run: a missing one would bias the choice.
    """
    scores = runs.groupby(["loss", "lr"])["best_val_dice"].mean()
    chosen = {}
    for loss in losses:
        missing = [rate for rate in grid if (loss, float(rate)) not in scores.index]
        if missing:
            raise SeglossError(
                f"tuning sweep: no run of loss {loss} at lr {', '.join(map(str, missing))}"
            )
        chosen[loss] = float(scores[loss].loc[[float(r) for r in grid]].idxmax())
    return chosen
