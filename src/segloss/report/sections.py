"""The report's text: its title, fixed paragraphs, figure captions and sections in order."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from segloss.report import tables
from segloss.report.document import Json, Verdict
from segloss.report.render import Block, Heading, Image, Table, Text
from segloss.report.wording import (
    agreement_table,
    collapse_table,
    comparison_table,
    friedman_text,
    metric_trust,
    superiority_text,
    variance_table,
    verdicts_table,
)

TITLE = "Does BCE+Dice beat BCE alone? Segmentation losses for brain-tumour MRI masks"


def title(meta: Json) -> str:
    """The report's title: :data:`TITLE`, or for folder data the data set's folder name."""
    if meta.get("source") != "folder":
        return TITLE
    name = Path(str(meta.get("source_dir", "data"))).name
    return f"Does BCE+Dice beat BCE alone? Segmentation losses for the binary masks of {name}"


METRIC_SENTENCE = (
    "Why the Dice columns differ: per-slice Dice averages slices and scores an empty "
    "prediction on a tumour-free slice as a perfect 1, so a model that predicts little looks "
    "good; tumour-slices-only Dice removes those free points; per-patient Dice pools each "
    "patient's pixels into one volume score, so large tumours weigh more than single slices; "
    "pooled Dice does the same over the whole test set and is dominated by the biggest tumours. "
    "Resolution: every count, Dice and distance compares the prediction with the original mask "
    "at the source resolution (probabilities upsampled bilinearly, then thresholded); "
    "per_patient.csv's dice_train_res is the same model scored at the training size, a "
    "secondary figure. HD95 and NSD are per patient: surface distances pooled over all its "
    "slices (each slice's border in 2-D: the kaggle_3m slice spacing is unknown), in mm where "
    "the pixel spacing is known, else in native pixels, as the column names say; the NSD "
    "tolerance (eval.nsd_tolerance) is in the same unit."
)


METHOD = (
    "How to read it. Unit: the test patient, each patient's score averaged over seeds. Every "
    "model (seed) scores every test patient, so patients and seeds are crossed random "
    "factors: the {level:g} % CI of the mean difference (candidate - baseline) comes from "
    "their ANOVA variance components with a Satterthwaite t-interval (as for readers and "
    "cases in multi-reader studies); it keeps the seed-to-seed variance, which a bootstrap "
    "over patients, or over seeds nested in patients, averages away. Verdict against the "
    "margin fixed in advance (±{margin:g} for the primary metric, report.margin): better / "
    "worse when the CI lies entirely above / below 0, equivalent when it lies entirely inside "
    "±margin, otherwise inconclusive. Secondary figures: the Wilcoxon signed-rank p-value over "
    "patients and baycomp's Bayesian signed-rank test with the margin as the region of "
    "practical equivalence; both take each patient's seed mean as a fixed score, so they "
    "ignore the seed-to-seed variance and can look decisive where the interval is not. "
    "One primary comparison; every other row is secondary and carries "
    "a Holm-adjusted p-value. Sensitivity analyses (never the verdict): without collapsed "
    "seeds, and at each model's validation-best threshold. HD95 (↓) is better when lower."
)

# Figure captions, formatted with ``fixed`` (threshold), ``metric``, ``candidate``, ``baseline``.
CAPTIONS = {
    "metric_means.png": (
        "Overlap metrics per loss: mean over seeds, bars = 95 % CI (t, over seeds)."
    ),
    "dice_distributions.png": (
        "Per-slice Dice of every test slice and seed, tumour and tumour-free slices apart."
    ),
    "learning_curves.png": (
        "Validation Dice per epoch: line = mean over seeds, band = range over seeds."
    ),
    "false_positives.png": (
        "Tumour-free test slices: share with any false-positive pixel (left) and how many."
    ),
    "overlays.png": (
        "The same test slices for every loss: the smallest tumour, a tumour-free slice, "
        "then larger tumours (prediction in orange, per-slice Dice in the title)."
    ),
    "dice_by_size.png": (
        "Dice per tumour-size tercile: under-segmentation of small tumours shows on the left."
    ),
    "reliability.png": (
        "Reliability diagram over test pixels (bins pooled over seeds); below the diagonal "
        "= over-confident."
    ),
    "threshold_sensitivity.png": (
        "Test per-patient Dice against the threshold; dashed = fixed {fixed:g}, "
        "dotted = each loss's best threshold on the validation split."
    ),
    "paired.png": (
        "The paired comparison: per-patient {metric}, {candidate} against "
        "{baseline}, one point per test patient (mean over seeds, bars = seed "
        "range); above the dashed y = x line the candidate is better for that patient."
    ),
    "model_spread.png": (
        "What one training run gives: each dot is one model's per-patient Dice on its test "
        "patients; black bar = quartiles, tick = median, dotted line = the collapse threshold."
    ),
    "factor_spread.png": (
        "What one training run gives in each arm of the second factor: one dot per model "
        "(per-patient Dice), quartiles and median; dotted line = the collapse threshold."
    ),
    "critical_difference.png": (
        "Critical-difference diagram on {metric}: mean rank over test patients (1 = best); "
        "losses joined by a bar are not separated by the Holm-corrected pairwise tests."
    ),
}


def _data_card(meta: Json, card: Mapping[str, pd.DataFrame]) -> list[Block]:
    """Section 1: the prepare stage's data card (imbalance, an all-background prediction)."""
    return [
        Heading("1. Data card"),
        Text(
            f"Source: {meta.get('source', 'unknown')}; image size {meta.get('image_size')} px; "
            f"patients per split: "
            + ", ".join(f"{k} {len(v)}" for k, v in meta.get("splits", {}).items())
            + ". Class imbalance per split:"
        ),
        Table(card["imbalance"]),
        Text(
            "An all-background prediction on our test set: pixel accuracy is near perfect while "
            "every overlap score that counts the tumour is zero, which is why accuracy is not "
            "reported as evidence below."
        ),
        Table(card["background"]),
    ]


def _metrics_and_figures(
    data: tables.Tables, images: Mapping[str, Image], fixed: float
) -> list[Block]:
    """Sections 2 and 3: every metric per loss, and the overview figures."""
    n_seeds = data.per_model.groupby("loss")["seed"].nunique()
    return [
        Heading("2. Every metric per loss"),
        Text(
            "mean ± std over seeds [95 % CI, t-interval over seeds]; seeds per loss: "
            + ", ".join(f"{loss} {n_seeds[loss]}" for loss in data.losses)
            + f"; threshold {fixed:g}. ↑ higher is better, ↓ lower is better."
        ),
        Table(tables.metric_table(data.per_model)),
        Text(METRIC_SENTENCE),
        Heading("3. Figures"),
        *(images[name] for name in ("metric_means.png", "dice_distributions.png")),
        *(images[name] for name in ("learning_curves.png", "false_positives.png")),
        images["overlays.png"],
    ]


def _differences(
    data: tables.Tables, terciles: pd.DataFrame, images: Mapping[str, Image], fixed: float
) -> list[Block]:
    """Section 4: Dice by tumour size, calibration and threshold sensitivity."""
    tercile_table = (
        terciles.groupby(["tercile", "loss"], observed=True)["dice"].mean().unstack("loss")
    )
    return [
        Heading("4. Where the losses differ"),
        Heading("Dice by tumour size", 3),
        Table(tercile_table.reset_index()),
        images["dice_by_size.png"],
        Heading("Calibration and threshold sensitivity", 3),
        Text(
            "ECE: pixel-weighted mean gap between predicted probability and observed tumour "
            "frequency over equal-width bins. dice_at_fixed is per-patient test Dice at the "
            f"fixed threshold {fixed:g}; dice_at_best at the threshold that was best on the "
            "validation split (best_threshold). Popular notebooks silently use 0.3."
        ),
        Table(tables.threshold_table(data.per_model)),
        images["reliability.png"],
        images["threshold_sensitivity.png"],
    ]


def _verdict(verdict: Verdict, images: Mapping[str, Image]) -> list[Block]:
    """Section 5: the verdict, how to read it, the comparisons and the variance shares."""
    friedman = (
        [
            Text(friedman_text(verdict["friedman"], verdict["metric"], verdict["loss_variants"])),
            images["critical_difference.png"],
        ]
        if "friedman" in verdict
        else []
    )
    return [
        Heading("5. The verdict"),
        Text(verdict["headline"]),
        Text(METHOD.format(level=100 * verdict["ci_level"], margin=verdict["margin"])),
        *([images["paired.png"]] if "paired.png" in images else []),
        Table(comparison_table(verdict))
        if verdict["verdict"] or verdict["comparisons"]
        else Text(f"No comparison possible: {verdict['reason']}."),
        *friedman,
        Heading("Where the variance comes from", 3),
        Text(
            f"Shares of the variance of per-patient {verdict['metric']} (one value per patient "
            "and model) due to patients, seeds (training runs), folds (cross-validation only) "
            "and what is left (patient x seed interaction), per loss and for the difference "
            "the verdict tests. A large seed share means the answer depends on the training "
            "run: more seeds help, more patients do not."
        ),
        Table(variance_table(verdict)),
        *_risk(verdict, images),
    ]


def _risk(verdict: Verdict, images: Mapping[str, Image]) -> list[Block]:
    """Collapse rates, the single-run risk and the spread of single models."""
    level, threshold = verdict["ci_level"], verdict.get("collapse_dice")
    test = verdict.get("collapse_test")
    variants = verdict.get("loss_variants", {})
    rates = {tables.loss_label(k, variants.get(k)): v for k, v in verdict["collapse"].items()}
    return [
        Heading("Collapse and single-run risk", 3),
        Text(
            f"A model collapsed when its best validation per-patient Dice stayed below "
            f"{threshold:g} (report.collapse_dice): the all-background solution. Rates with "
            "exact (Clopper-Pearson) intervals"
            + (
                ""
                if test is None
                else f"; Fisher's exact test, {verdict['candidate']} vs {verdict['baseline']}: "
                f"p = {test['p_value']:.3g}"
            )
            + "."
        ),
        Table(collapse_table(rates, level)),
        *([Text(superiority_text(verdict))] if verdict["verdict"] else []),
        images["model_spread.png"],
    ]


def _metric_agreement(
    verdict: Verdict, card: Mapping[str, pd.DataFrame], n_models: int
) -> list[Block]:
    """Section 6: do the metrics rank this run's models alike, and which to trust."""
    return [
        Heading("6. Which metric to trust"),
        Text(metric_trust(verdict, n_models)),
        Table(verdicts_table(verdict)),
        Text(
            "Kendall's tau between the orders each pair of metrics gives the models (each "
            "metric turned so that higher is better: 1 = the same order, 0 = unrelated), and "
            "in brackets the share of model pairs the two order in opposite directions:"
        ),
        Table(agreement_table(verdict["metric_agreement"])),
        Text("Beside it, the constructed case: an all-background prediction on this test set."),
        Table(card["background"]),
    ]


def blocks(
    data: tables.Tables,
    meta: Json,
    verdict: Verdict,
    card: Mapping[str, pd.DataFrame],
    terciles: pd.DataFrame,
    images: Mapping[str, Image],
    fixed: float,
    factorial: list[Block] = (),
) -> list[Block]:
    """The report's sections in reading order (``factorial``: the section of a second
    factor, numbered 7)."""
    n_models = data.per_model.groupby(["loss", "seed"]).ngroups
    return [
        Heading("In one paragraph"),
        Text(verdict["headline"]),
        *_data_card(meta, card),
        *_metrics_and_figures(data, images, fixed),
        *_differences(data, terciles, images, fixed),
        *_verdict(verdict, images),
        *_metric_agreement(verdict, card, n_models),
        *factorial,
        Heading(f"{8 if factorial else 7}. Files"),
        Text(
            "verdict.json holds the headline comparison and every other one; figures/ the PNGs; "
            "metrics/ every table this report was built from (per-image, per-patient, "
            "per-model, thresholds, calibration, learning curves)."
        ),
    ]
