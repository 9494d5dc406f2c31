"""The verdict: one primary comparison, Holm-corrected secondaries, sensitivity analyses.

Primary: ``candidate`` vs ``baseline`` on the headline metric (segloss.stats, crossed
patients x models). Secondary, Holm-corrected as one family: every other loss against the
baseline on every metric, and the candidate on the other metrics. Sensitivity analyses,
labelled as such and never the verdict: without collapsed seeds, and at each model's
validation-best threshold.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict

import pandas as pd

from segloss.config import ReportConfig
from segloss.report.document import Comparison, Json, Verdict
from segloss.report.tables import METRICS, loss_variants
from segloss.stats import (
    Rate,
    crossed_verdict,
    fisher_test,
    friedman,
    holm,
    loss_variance,
    metric_agreement,
    paired_comparison,
    rate,
)

# Per-patient scores the comparisons use: (name, column, source table, higher is better).
# Dice and IoU are volume scores from pooled counts; HD95 and NSD are the patient's mean
# over its slices (empty/empty counts as perfect, one empty mask as the worst value).
PATIENT_METRICS = {
    "dice_per_patient": ("dice", "per_patient", True),
    "iou_per_patient": ("iou", "per_patient", True),
    "hd95": ("hd95", "per_image", False),
    "nsd": ("nsd", "per_image", True),
}
# The headline at each model's validation-best threshold (a sensitivity analysis).
AT_BEST = ("dice_at_best", "per_patient", True)
# The metrics whose agreement the report measures on the run's own models (per_model.csv;
# hd95 and nsd: the columns named with their unit).
AGREEMENT_METRICS = (
    "pixel_accuracy",
    "dice_per_image",
    "dice_tumour_slices",
    "dice_per_patient",
    "dice_pooled",
    "iou",
    "hd95",
    "nsd",
)
# Words in meta.json's ``source`` that mark real images (MRI, or a folder data set of the
# user's); anything else counts as synthetic.
REAL_SOURCES = ("lgg", "kaggle", "tcga", "folder")


HIGHER_IS_BETTER = {name: up for name, _, up in METRICS}


def with_unit(base: str, columns: Iterable[str]) -> str | None:
    """The column of ``columns`` that is metric ``base`` named with its distance unit
    (``hd95_px``, ``nsd_2mm``), else ``base`` itself; None where neither is there."""
    columns = list(columns)
    named = [c for c in columns if re.fullmatch(rf"{base}_[\d.]*(mm|px)", c)]
    return named[0] if named else (base if base in columns else None)


def patient_metrics(tables: Mapping[str, pd.DataFrame]) -> dict[str, tuple[str, str, bool]]:
    """:data:`PATIENT_METRICS` with HD95 and NSD as ``per_patient``'s volume columns named with
    their unit (``hd95_mm``/``hd95_px``, ``nsd_2mm``/``nsd_2px``) where the tables have them."""
    specs = dict(PATIENT_METRICS)
    for base in ("hd95", "nsd"):
        named = with_unit(base, tables["per_patient"])
        if named not in (None, base):
            del specs[base]
            specs[named] = (named, "per_patient", base != "hd95")
    return specs


def patient_scores(
    column: str, source: str, tables: Mapping[str, pd.DataFrame], by: Sequence[str] = ()
) -> pd.DataFrame:
    """``loss, seed, [fold,] patient, value`` of one column: the frame ``paired_comparison``
    takes (with cross-validation, ``fold``: a model is the pair fold, seed); ``by``: more id
    columns kept in front (a second factor's)."""
    keys = [*by, "loss", "seed", *(["fold"] if "fold" in tables[source] else []), "patient"]
    if source == "per_patient":
        frame = tables["per_patient"][[*keys, column]]
    else:
        frame = tables["per_image"].groupby(keys, as_index=False)[column].mean()
    return frame.rename(columns={column: "value"})


def collapsed_seeds(per_model: pd.DataFrame, threshold: float) -> dict[str, list[int]]:
    """Per loss, the seeds whose best validation per-patient Dice stayed below ``threshold``
    (with cross-validation: in any fold; a seed is listed once)."""
    low = per_model[per_model["best_val_dice"] < threshold]
    return {
        loss: sorted({int(s) for s in low.loc[low["loss"] == loss, "seed"]})
        for loss in dict.fromkeys(per_model["loss"])
    }


def collapse_rates(per_model: pd.DataFrame, threshold: float, level: float) -> dict[str, Rate]:
    """Per loss: its collapse rate, a model collapsed when its best validation per-patient
    Dice stayed below ``threshold``; the interval exact (Clopper-Pearson) at ``level``."""
    low = per_model["best_val_dice"] < threshold
    return {
        loss: rate(int(low[group.index].sum()), len(group), level)
        for loss, group in per_model.groupby("loss", sort=False)
    }


def agreement(per_model: pd.DataFrame) -> list[Json]:
    """:func:`segloss.stats.metric_agreement` over the models of ``per_model``: with
    cross-validation a model is a (loss, seed) with its metrics averaged over folds, so
    every ranked model saw every fold's patients."""
    columns = {}
    for name in AGREEMENT_METRICS:
        if (found := with_unit(name, per_model)) is not None:
            columns[found] = HIGHER_IS_BETTER[name]
    models = per_model.groupby(["loss", "seed"], sort=False)[list(columns)].mean()
    return metric_agreement(models, columns)


def metric_verdicts(
    tables: Mapping[str, pd.DataFrame],
    settings: ReportConfig,
    candidates: Sequence[str],
    margins: Mapping[str, float],
) -> dict[str, dict[str, Json]]:
    """Per candidate loss, its comparison with the baseline on every metric of
    :data:`AGREEMENT_METRICS` that has a per-patient value (each patient's slices averaged;
    tumour slices only for ``dice_tumour_slices``; pooled Dice pools the whole test set, so it
    is ranked, not compared): ``{mean_difference, ci, verdict}`` against the metric's margin
    (``margins``, else ``report.margin``). Not part of the Holm family: it shows which
    answers change with the metric, it does not add claims."""
    specs = patient_metrics(tables)
    scored = {
        "pixel_accuracy": ("pixel_accuracy", "per_image", True),
        "dice_per_image": ("dice", "per_image", True),
        "dice_tumour_slices": ("dice", "per_image", True),
        "dice_per_patient": specs["dice_per_patient"],
        "iou": ("iou", "per_image", True),
    }
    scored |= {name: spec for name, spec in specs.items() if name.startswith(("hd95", "nsd"))}
    scored = {n: spec for n, spec in scored.items() if spec[0] in tables[spec[1]]}
    per_image = tables["per_image"]
    if "gt_pixels" in per_image:
        tumour = {"per_image": per_image[per_image["gt_pixels"] > 0]}
    else:
        scored.pop("dice_tumour_slices", None)
    out: dict[str, dict[str, Json]] = {}
    for loss in candidates:
        for name, (column, source, higher) in scored.items():
            frames = tables | tumour if name == "dice_tumour_slices" else tables
            margin = margins.get(name, settings.margin)
            r = crossed_verdict(
                patient_scores(column, source, frames),
                settings.baseline,
                loss,
                higher_is_better=higher,
                alpha=settings.alpha,
                margin=float(margin),
            )
            out.setdefault(loss, {})[name] = {
                k: getattr(r, k) for k in ("mean_difference", "ci", "margin", "verdict")
            }
    return out


def build_verdict(tables: Mapping[str, pd.DataFrame], settings: ReportConfig) -> Verdict:
    """verdict.json from the evaluation tables (``per_image``, ``per_patient``, ``per_model``).

    Where the primary comparison is impossible (one loss only, or the baseline or candidate
    absent), its numbers are null and ``reason`` says why; the other comparisons still run.
    """
    baseline, candidate, metric = settings.baseline, settings.candidate, settings.metric
    losses = list(dict.fromkeys(tables["per_model"]["loss"]))
    variants = loss_variants(tables["per_model"])
    collapsed = collapsed_seeds(tables["per_model"], settings.collapse_dice)
    specs = patient_metrics(tables)
    margins = {**settings.margins, metric: settings.margin}
    margins |= {name: margins[name.split("_")[0]] for name in specs if name not in margins}

    def compare(loss: str, name: str, spec=None, drop=()) -> Comparison:
        column, source, higher = spec or specs[name]
        variant = {"baseline": variants.get(baseline), "candidate": variants.get(loss)}
        compared = paired_comparison(
            patient_scores(column, source, tables),
            baseline,
            loss,
            metric=name,
            higher_is_better=higher,
            alpha=settings.alpha,
            margin=float(margins[name]),
            seed=settings.seed,
            drop_seeds=drop,
        )
        return {"variant": variant} | asdict(compared)

    def with_sensitivity(loss: str, name: str) -> Comparison:
        result = compare(loss, name)
        drop = sorted(set(collapsed[baseline]) | set(collapsed[loss]))
        without = None
        if drop and set(result["per_seed_differences"]) - set(drop):
            without = compare(loss, name, drop=drop) | {"dropped_seeds": drop}
        counts = {k: len(v) for k, v in collapsed.items()}
        return result | {"collapsed_seeds": counts, "without_collapsed": without}

    has_primary = baseline in losses and candidate in losses and candidate != baseline
    others = [loss for loss in losses if loss != baseline] if baseline in losses else []
    secondary = [
        with_sensitivity(loss, name)
        for loss in others
        for name in specs
        if (loss, name) != (candidate, metric)
    ]
    adjusted = holm([c["p_value"] for c in secondary])
    comparisons = [c | {"p_holm": q} for c, q in zip(secondary, adjusted, strict=True)]

    score_table = patient_scores(*PATIENT_METRICS[metric][:2], tables)
    level = 1 - settings.alpha
    rates = collapse_rates(tables["per_model"], settings.collapse_dice, level)
    extra = _overview(score_table, tables["per_model"], losses) | {
        "loss_variants": variants,
        "comparisons": comparisons,
        "collapse": {loss: asdict(r) for loss, r in rates.items()},
        "collapse_dice": settings.collapse_dice,
        "collapse_test": fisher_test(rates[baseline], rates[candidate]) if has_primary else None,
        "metric_agreement": agreement(tables["per_model"]),
    }
    if len(losses) >= 3:
        extra["friedman"] = friedman(score_table, losses, PATIENT_METRICS[metric][2])

    if has_primary:
        primary = with_sensitivity(candidate, metric)
        if metric == "dice_per_patient":
            primary = primary | {"at_best_threshold": compare(candidate, "dice_at_best", AT_BEST)}
        verdict = primary | extra
    else:
        verdict = _without_primary(tables, settings, losses, collapsed, variants) | extra
    by_metric = metric_verdicts(tables, settings, others, margins)
    return verdict | {"verdicts_by_metric": by_metric}


def _overview(scores: pd.DataFrame, per_model: pd.DataFrame, losses: list[str]) -> dict:
    """Per loss: the variance components of the primary metric's ``scores``, and the
    learning rates."""
    return {
        "variance_by_loss": {loss: loss_variance(scores, loss) for loss in losses},
        "learning_rates": _learning_rates(per_model),
    }


def _without_primary(
    tables: Mapping[str, pd.DataFrame],
    settings: ReportConfig,
    losses: list[str],
    collapsed: Mapping[str, list[int]],
    variants: Mapping[str, str | None],
) -> Comparison:
    """The primary comparison's fields, null, with the ``reason`` it is impossible."""
    baseline, candidate, metric = settings.baseline, settings.candidate, settings.metric
    if len(losses) < 2:
        reason = f"only one loss was evaluated ({', '.join(losses)}): no comparison possible"
    else:
        missing = [name for name in (baseline, candidate) if name not in losses]
        reason = (
            f"{' and '.join(missing)} not among the evaluated losses ({', '.join(losses)}): "
            f"no {candidate} vs {baseline} comparison possible"
        )
    per_model = tables["per_model"]
    return {
        "variant": {"baseline": variants.get(baseline), "candidate": variants.get(candidate)},
        "baseline": baseline,
        "candidate": candidate,
        "metric": metric,
        "higher_is_better": PATIENT_METRICS[metric][2],
        "mean_difference": None,
        "ci": None,
        "ci_level": 1 - settings.alpha,
        "margin": settings.margin,
        "verdict": None,
        "p_value": None,
        "p_holm": None,
        "superiority": None,
        "collapsed_seeds": {k: len(v) for k, v in collapsed.items()},
        "without_collapsed": None,
        "n_pairs": int(tables["per_patient"]["patient"].nunique()),
        "n_seeds": int(per_model.groupby("loss")["seed"].nunique().min()),
        "reason": reason,
    }


def _learning_rates(per_model: pd.DataFrame) -> dict[str, list[float]]:
    """The learning rates each loss's models were trained with (the report says if shared)."""
    if "lr" not in per_model:
        return {}
    return {
        loss: sorted({float(v) for v in group.dropna()})
        for loss, group in per_model.groupby("loss", sort=False)["lr"]
    }
