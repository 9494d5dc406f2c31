"""The verdict: paired comparisons over test patients (segloss.stats) and the headline sentence."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from segloss.stats import paired_comparison

# Per-patient scores the comparisons use: (name, column, source table, higher is better).
# Dice and IoU are volume scores from pooled counts; HD95 and NSD are the patient's mean
# over its slices (empty/empty counts as perfect, one empty mask as the worst value).
PATIENT_METRICS = {
    "dice_per_patient": ("dice", "per_patient", True),
    "iou_per_patient": ("iou", "per_patient", True),
    "hd95": ("hd95", "per_image", False),
    "nsd": ("nsd", "per_image", True),
}
# Words in meta.json's ``source`` that mark real MRI; anything else counts as synthetic.
REAL_SOURCES = ("lgg", "kaggle", "tcga")
# Keys of verdict.json's top level, in order (stats' extra fields are kept after them).
TOP_LEVEL = (
    "baseline",
    "candidate",
    "metric",
    "mean_difference",
    "ci95",
    "p_value",
    "effect_size",
    "n_pairs",
    "n_seeds",
    "per_seed_differences",
    "verdict",
)


def patient_scores(metric: str, per_image: pd.DataFrame, per_patient: pd.DataFrame) -> pd.DataFrame:
    """``loss, seed, patient, value`` of one metric: the frame ``paired_comparison`` takes."""
    column, source, _ = PATIENT_METRICS[metric]
    if source == "per_patient":
        frame = per_patient[["loss", "seed", "patient", column]]
    else:
        frame = per_image.groupby(["loss", "seed", "patient"], as_index=False)[column].mean()
    return frame.rename(columns={column: "value"})


def build_verdict(
    per_image: pd.DataFrame, per_patient: pd.DataFrame, settings: Mapping[str, Any]
) -> dict[str, Any]:
    """verdict.json: the headline comparison, then every other (loss, metric) against baseline.

    Where the headline comparison is impossible (one loss only, or the baseline or candidate
    absent), its numbers are null and ``reason`` says why; other comparisons still run.
    """
    baseline, candidate, metric = settings["baseline"], settings["candidate"], settings["metric"]
    losses = list(dict.fromkeys(per_image["loss"]))
    options = {
        "alpha": float(settings["alpha"]),
        "n_boot": int(settings["n_boot"]),
        "seed": int(settings["bootstrap_seed"]),
    }

    def compare(loss: str, name: str) -> dict[str, Any]:
        scores = patient_scores(name, per_image, per_patient)
        higher = PATIENT_METRICS[name][2]
        return paired_comparison(
            scores, baseline, loss, metric=name, higher_is_better=higher, **options
        )

    others = [loss for loss in losses if loss != baseline] if baseline in losses else []
    comparisons = [
        compare(loss, name)
        for loss in others
        for name in PATIENT_METRICS
        if (loss, name) != (candidate, metric)
    ]
    if baseline in losses and candidate in losses and candidate != baseline:
        headline = compare(candidate, metric)
        ordered = {key: headline.pop(key) for key in TOP_LEVEL}
        return {**ordered, **headline, "comparisons": comparisons}

    if len(losses) < 2:
        reason = f"only one loss was evaluated ({', '.join(losses)}): no comparison possible"
    else:
        missing = [name for name in (baseline, candidate) if name not in losses]
        reason = (
            f"{' and '.join(missing)} not among the evaluated losses ({', '.join(losses)}): "
            f"no {candidate} vs {baseline} comparison possible"
        )
    return {
        "baseline": baseline,
        "candidate": candidate,
        "metric": metric,
        "mean_difference": None,
        "ci95": None,
        "p_value": None,
        "effect_size": None,
        "n_pairs": int(per_image["patient"].nunique()),
        "n_seeds": int(per_image.groupby("loss")["seed"].nunique().min()),
        "per_seed_differences": {},
        "verdict": None,
        "reason": reason,
        "comparisons": comparisons,
    }


def comparison_table(verdict: Mapping[str, Any]) -> pd.DataFrame:
    """Every comparison (headline first) as one row, with the per-seed differences."""
    rows = [verdict, *verdict["comparisons"]] if verdict["verdict"] else verdict["comparisons"]
    table = pd.DataFrame(
        [
            {
                "candidate vs baseline": f"{r['candidate']} vs {r['baseline']}",
                "metric": r["metric"] + ("" if r.get("higher_is_better", True) else " (↓)"),
                "mean difference": r["mean_difference"],
                "95 % CI": _interval(r["ci95"]),
                "p (Wilcoxon)": r["p_value"],
                "effect size (r)": r["effect_size"],
                "per-seed differences": ", ".join(
                    f"s{seed}: {_signed(value)}"
                    for seed, value in r["per_seed_differences"].items()
                ),
                "patients": r["n_pairs"],
                "seeds": r["n_seeds"],
                "verdict": r["verdict"],
            }
            for r in rows
        ]
    )
    return table.round(4)


def _signed(value: float | None) -> str:
    return "–" if value is None else f"{value:+.3f}"


def _interval(ci: list[float | None] | None) -> str:
    if not ci:
        return "–"
    return f"[{_signed(ci[0])}, {_signed(ci[1])}]"


def headline(verdict: Mapping[str, Any], source: str, regime: Mapping[str, Any]) -> str:
    """One paragraph: the outcome with its numbers, then the caveats a reader must weigh."""
    if regime.get("n_models"):
        epochs = (
            f"{regime['epochs_min']}"
            if regime["epochs_min"] == regime["epochs_max"]
            else f"{regime['epochs_min']}-{regime['epochs_max']}"
        )
        still = (
            f"validation Dice was still rising at the end for {regime['n_rising']} of "
            f"{regime['n_models']} models, so this compares early training, not converged models"
            if regime["n_rising"]
            else "validation Dice had levelled off for every model"
        )
        training = f"{epochs} epochs per model; {still}"
    else:
        training = "no learning curves were found"
    data = "real" if any(word in source.lower() for word in REAL_SOURCES) else "synthetic"
    caveats = (
        f"Caveats: {verdict['n_pairs']} test patients and {verdict['n_seeds']} seed(s) per loss; "
        f"{data} data (source: {source}); {training}."
    )
    if verdict["verdict"] is None:
        return f"No verdict: {verdict['reason']}. {caveats}"
    outcome = {
        "better": "beats",
        "worse": "is worse than",
        "no_difference": "shows no significant difference from",
    }[verdict["verdict"]]
    return (
        f"{verdict['candidate']} {outcome} {verdict['baseline']} on {verdict['metric']}: "
        f"mean difference {verdict['mean_difference']:+.3f} (95 % CI "
        f"{_interval(verdict['ci95'])}, Wilcoxon p = {verdict['p_value']:.3g}, "
        f"rank-biserial r = {verdict['effect_size']:+.2f}; per seed "
        + ", ".join(_signed(v) for v in verdict["per_seed_differences"].values())
        + f"). {caveats}"
    )
