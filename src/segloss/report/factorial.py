"""A second factor crossed with the loss (config ``factor``, e.g. ``train.sampling``): which
arms the sweep holds, the reference arm's tables, and the factorial comparison.

The report's main sections describe the reference arm (the factor's configured value, the
recipe); the factorial section compares the candidate's edge over the baseline between the
two arms (:func:`segloss.stats.interaction`), with each arm's collapse rates and single-run
risk.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from segloss.config import ReportConfig
from segloss.errors import SeglossError
from segloss.fingerprint import factor_setting
from segloss.report import figures
from segloss.report.document import Json
from segloss.report.render import Block, Heading, Image, Table, Text
from segloss.report.tables import Tables, loss_label, loss_variants
from segloss.report.verdict import PATIENT_METRICS, collapse_rates, patient_scores
from segloss.report.wording import collapse_table, interval
from segloss.stats import fisher_test, interaction


@dataclass(frozen=True)
class Factor:
    """The config's ``factor`` (``train.sampling``) and the level the main sections show."""

    key: str
    reference: str

    @property
    def column(self) -> str:
        """Its column in the evaluation tables: the setting's name (``sampling``)."""
        return factor_setting(self.key)


def arms(per_model: pd.DataFrame, factor: Factor, path: Path) -> list[str]:
    """The two levels, the other first and the reference last; an error naming ``path``
    (the per-model table) and what is missing where the sweep cannot be paired (no column,
    not two levels, an empty cell)."""
    column = factor.column
    if column not in per_model:
        raise SeglossError(
            f"{path} has no {column!r} column: the models were evaluated without "
            f"factor={factor.key}; rerun the evaluate stage with it"
        )
    levels = list(dict.fromkeys(per_model[column].astype(str)))
    losses = list(dict.fromkeys(per_model["loss"]))
    have = set(zip(per_model[column].astype(str), per_model["loss"], strict=True))
    missing = [
        f"{column}={lv} x loss={loss}" for lv in levels for loss in losses if (lv, loss) not in have
    ]
    if factor.reference not in levels:
        missing.append(f"{column}={factor.reference} (the configured level)")
    if missing:
        raise SeglossError(
            f"{path}: the sweep over {factor.key} cannot be paired: no models for "
            + ", ".join(missing)
        )
    if len(levels) != 2:
        raise SeglossError(
            f"{path}: the factorial report compares two levels of {factor.key}, "
            f"found {len(levels)} ({', '.join(levels)})"
        )
    return [lv for lv in levels if lv != factor.reference] + [factor.reference]


def at_level(data: Tables, column: str, level: str) -> Tables:
    """The tables of one arm, without the factor's column."""
    return Tables(
        **{
            name: frame[frame[column].astype(str) == level]
            .drop(columns=column)
            .reset_index(drop=True)
            for name, frame in vars(data).items()
        }
    )


def factorial_verdict(
    data: Tables, factor: Factor, levels: list[str], settings: ReportConfig
) -> Json:
    """verdict.json's ``interaction``: the candidate - baseline difference per level and
    their difference, each arm's collapse rates (with Fisher's test) and single-run risk."""
    baseline, candidate, metric = settings.baseline, settings.candidate, settings.metric
    column, source, higher = PATIENT_METRICS[metric]
    frames = {"per_image": data.per_image, "per_patient": data.per_patient}
    scores = patient_scores(column, source, frames, by=[factor.column])
    alpha, margin = settings.alpha, settings.margin
    result = asdict(
        interaction(
            scores,
            factor.column,
            levels,
            baseline,
            candidate,
            higher_is_better=higher,
            alpha=alpha,
            margin=margin,
        )
    )
    per_level = {}
    for level in levels:
        per_model = at_level(data, factor.column, level).per_model
        rates = collapse_rates(per_model, settings.collapse_dice, 1 - alpha)
        per_level[level] = result["per_level"][level] | {
            "collapse": {loss: asdict(r) for loss, r in rates.items()},
            "collapse_test": fisher_test(rates[baseline], rates[candidate]),
        }
    return result | {"factor": factor.key, "metric": metric, "per_level": per_level}


def spread(per_model: pd.DataFrame, factor: Factor, levels: list[str], threshold: float) -> Figure:
    """Per-model Dice per (level, loss): :func:`segloss.report.figures.model_spread`."""
    level = per_model[factor.column].astype(str)
    groups = level + ", " + per_model["loss"]
    order = [f"{lv}, {loss}" for lv in levels for loss in dict.fromkeys(per_model["loss"])]
    values = per_model.assign(group=groups, value=per_model["dice_per_patient"])
    return figures.model_spread(values, order, threshold)


def headline(result: Json, factor: Factor) -> str:
    """The factorial result in one sentence, for the headline paragraph."""
    first, second = result["levels"]
    return (
        f"These numbers are the {factor.column}={factor.reference} arm. Across "
        f"{factor.column} ({first} vs {second}), the edge changes by {result['difference']:+.3f} "
        f"{interval(result['ci'])}: {result['verdict']}, "
        f"{_meaning(result, first, second, factor.column)} (section 7)."
    )


def _meaning(r: Json, first: str, second: str, name: str) -> str:
    match r["verdict"]:
        case "better":
            return f"the edge is larger with {name}={first} than with {name}={second}"
        case "worse":
            return f"the edge is smaller with {name}={first} than with {name}={second}"
        case "equivalent":
            return f"the edge is the same under both levels, within ±{r['margin']:g}"
        case _:
            return f"the data cannot tell whether the edge changes between {first} and {second}"


def blocks(
    result: Json, per_model: pd.DataFrame, factor: Factor, images: Mapping[str, Image]
) -> list[Block]:
    """Section 7: the factorial comparison in a sentence, a table per level and the spread."""
    variants = loss_variants(per_model)
    names = {loss: loss_label(loss, variants.get(loss)) for loss in variants}
    first, second = result["levels"]
    rows = []
    for level in result["levels"]:
        r = result["per_level"][level]
        s = r["superiority"]
        rows.append(
            {
                factor.column: level,
                "mean difference": r["mean_difference"],
                f"{100 * result['ci_level']:g} % CI": interval(r["ci"]),
                "verdict": r["verdict"],
                "P(one candidate run beats one baseline run)": "–"
                if s["estimate"] is None
                else f"{s['estimate']:.2f} "
                + ("" if s["ci"] is None else f"[{s['ci'][0]:.2f}, {s['ci'][1]:.2f}]"),
                "collapse p (Fisher)": r["collapse_test"]["p_value"],
            }
        )
    rows.append(
        {
            factor.column: f"interaction ({first} - {second})",
            "mean difference": result["difference"],
            f"{100 * result['ci_level']:g} % CI": interval(result["ci"]),
            "verdict": result["verdict"],
            "P(one candidate run beats one baseline run)": "",
            "collapse p (Fisher)": None,
        }
    )
    rates = {
        f"{factor.column}={level}, {names.get(loss, loss)}": rate
        for level in result["levels"]
        for loss, rate in result["per_level"][level]["collapse"].items()
    }
    per_level = result["per_level"]
    text = (
        f"The second factor, {factor.key}: the same sweep trained under {first} and {second}. "
        f"The candidate's edge on {result['metric']} is {per_level[first]['mean_difference']:+.3f} "
        f"{interval(per_level[first]['ci'])} ({per_level[first]['verdict']}) with {first} and "
        f"{per_level[second]['mean_difference']:+.3f} {interval(per_level[second]['ci'])} "
        f"({per_level[second]['verdict']}) with {second}; their difference, the interaction, is "
        f"{result['difference']:+.3f} {interval(result['ci'])}: {result['verdict']}, "
        f"{_meaning(result, first, second, factor.column)}. Each level's interval is the crossed "
        "one of section 5; the interaction's interval pairs the two levels' models seed by seed "
        "within a fold (their models are independent, their patients shared) and keeps both "
        "levels' seed variance. The main sections above show "
        f"{factor.column}={factor.reference} only."
    )
    return [
        Heading(f"7. A second factor: {factor.key}"),
        Text(text),
        Table(pd.DataFrame(rows).round(4)),
        Table(collapse_table(rates, result["ci_level"])),
        images["factor_spread.png"],
    ]
