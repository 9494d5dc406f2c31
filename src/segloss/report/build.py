"""Assemble the report from the evaluation outputs: compute, plot, render, write, log."""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from segloss.data.prepared import PreparedSplit, load_meta, load_tested
from segloss.errors import SeglossError
from segloss.evaluation import SUMMARY_METRICS, pool_calibration
from segloss.io import atomic_path, write_json, write_text
from segloss.report import figures, tables
from segloss.report.render import Block, Heading, Image, Table, Text, to_html, to_markdown
from segloss.report.verdict import PATIENT_METRICS, build_verdict, patient_scores
from segloss.report.wording import comparison_table, friedman_text, headline, variance_table

TITLE = "Does BCE+Dice beat BCE alone? Segmentation losses for brain-tumour MRI masks"
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


def _png(fig: Figure, dpi: int) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def _load_predictions(
    predictions_dir: Path, per_model: pd.DataFrame, test: PreparedSplit
) -> tuple[dict[str, np.ndarray], list[tuple[str, int]]]:
    """Each loss's lowest-seed predicted masks (every fold's file, put in the order of the
    tested slices), checked against the tested slices' ids."""
    first = per_model.sort_values("seed").drop_duplicates("loss")
    wanted = pd.MultiIndex.from_arrays([test.patients, test.slices])
    masks = {}
    for loss, seed in zip(first["loss"], first["seed"], strict=True):
        paths = sorted(predictions_dir.glob(f"{loss}_seed{seed}_fold*.npz")) or [
            predictions_dir / f"{loss}_seed{seed}.npz"
        ]
        if not paths[0].is_file():
            raise SeglossError(
                f"{paths[0]} not found: run the evaluate stage (`dvc repro evaluate`)"
            )
        saved = [np.load(path) for path in paths]
        ids = pd.MultiIndex.from_arrays(
            [
                np.concatenate([f["patient"] for f in saved]),
                np.concatenate([f["slice"] for f in saved]),
            ]
        )
        order = ids.get_indexer(wanted)
        if len(ids) != len(wanted) or (order < 0).any():
            raise SeglossError(
                f"{paths[0]} does not list the prepared test slices: rerun the evaluate stage"
            )
        masks[f"{loss} (seed {seed})"] = np.concatenate([f["masks"] for f in saved])[order]
    return masks, list(zip(first["loss"], first["seed"], strict=True))


def build_report(
    prepared_dir: str | os.PathLike,
    predictions_dir: str | os.PathLike,
    metrics_dir: str | os.PathLike,
    reports_dir: str | os.PathLike,
    settings: Mapping[str, Any],
    tracking_uri: str | None = None,
) -> dict[str, Path]:
    """Write ``report.md``, ``report.html``, ``figures/*.png`` and ``verdict.json`` under
    ``reports_dir``; log them to the sweep's MLflow parent run(s) when a URI is given."""
    data = tables.Tables.read(metrics_dir)
    losses = data.losses
    meta = load_meta(prepared_dir)
    test, native = load_tested(prepared_dir)  # every tested slice; masks at source size
    evaluated = np.isin(test.patients, data.per_image["patient"].astype(str).unique())
    if not evaluated.all():  # some folds not evaluated (yet): report the evaluated patients
        keep = np.flatnonzero(evaluated)
        test = PreparedSplit(
            np.asarray(test.images[keep]), test.masks[keep], test.patients[keep], test.slices[keep]
        )
        native = native[keep]
    dpi = int(settings.get("dpi", 110))
    fixed = float(data.per_model["threshold"].iloc[0])

    frames = {"per_image": data.per_image, "per_patient": data.per_patient}
    verdict = build_verdict(frames | {"per_model": data.per_model}, settings)
    regime = tables.training_regime(data.learning_curves)
    n_seeds = data.per_model.groupby("loss")["seed"].nunique().to_dict()
    verdict["headline"] = headline(
        verdict,
        str(meta.get("source", "unknown")),
        regime,
        n_seeds,
        float(settings["collapse_dice"]),
    )
    metric = settings["metric"]
    primary_scores = patient_scores(*PATIENT_METRICS[metric][:2], frames)
    imbalance, background = tables.data_card(prepared_dir)
    terciles = tables.size_terciles(data.per_image)
    bins = pool_calibration(data.calibration)
    ece = data.per_model.groupby("loss")["ece"].mean()
    predictions, shown = _load_predictions(Path(predictions_dir), data.per_model, test)
    rows = tables.overlay_slices(
        prepared_dir, int(settings["overlay_count"]), np.unique(test.patients)
    )
    wanted = pd.MultiIndex.from_arrays([test.patients, test.slices])
    slice_dice = {
        title: data.per_image.query("loss == @loss and seed == @seed")
        .set_index(["patient", "slice"])["dice"]
        .reindex(wanted)
        .to_numpy()
        for title, (loss, seed) in zip(predictions, shown, strict=True)
    }

    plots = {
        "metric_means.png": (
            figures.metric_means(data.per_model, losses),
            "Overlap metrics per loss: mean over seeds, bars = 95 % CI (t, over seeds).",
        ),
        "dice_distributions.png": (
            figures.dice_distributions(data.per_image, losses),
            "Per-slice Dice of every test slice and seed, tumour and tumour-free slices apart.",
        ),
        "learning_curves.png": (
            figures.learning_curves(data.learning_curves, losses),
            "Validation Dice per epoch: line = mean over seeds, band = range over seeds.",
        ),
        "false_positives.png": (
            figures.false_positives(data.per_model, data.per_image, losses),
            "Tumour-free test slices: share with any false-positive pixel (left) and how many.",
        ),
        "overlays.png": (
            figures.overlays(test, rows, predictions, slice_dice, native),
            "The same test slices for every loss: the smallest tumour, a tumour-free slice, "
            "then larger tumours (prediction in orange, per-slice Dice in the title).",
        ),
        "dice_by_size.png": (
            figures.dice_by_size(terciles, losses),
            "Dice per tumour-size tercile: under-segmentation of small tumours shows on the left.",
        ),
        "reliability.png": (
            figures.reliability(bins, ece, losses),
            "Reliability diagram over test pixels (bins pooled over seeds); below the diagonal "
            "= over-confident.",
        ),
        "threshold_sensitivity.png": (
            figures.threshold_sensitivity(data.thresholds, data.per_model, fixed, losses),
            f"Test per-patient Dice against the threshold; dashed = fixed {fixed:g}, "
            "dotted = each loss's best threshold on the validation split.",
        ),
    }
    if verdict["verdict"]:
        plots["paired.png"] = (
            figures.paired(primary_scores, settings["baseline"], settings["candidate"], metric),
            f"The paired comparison: per-patient {metric}, {settings['candidate']} against "
            f"{settings['baseline']}, one point per test patient (mean over seeds, bars = seed "
            "range); above the dashed y = x line the candidate is better for that patient.",
        )
    if "friedman" in verdict:
        plots["critical_difference.png"] = (
            figures.critical_difference(verdict["friedman"], float(settings["alpha"])),
            f"Critical-difference diagram on {metric}: mean rank over test patients (1 = best); "
            "losses joined by a bar are not separated by the Holm-corrected pairwise tests.",
        )
    images = {name: Image(name, caption, _png(fig, dpi)) for name, (fig, caption) in plots.items()}
    blocks = _blocks(
        data, meta, verdict, regime, imbalance, background, terciles, images, losses, fixed
    )

    out = Path(reports_dir)
    paths = {
        "report_md": out / "report.md",
        "report_html": out / "report.html",
        "figures": out / "figures",
        "verdict": out / "verdict.json",
    }
    with atomic_path(paths["figures"]) as tmp:
        tmp.mkdir()
        for image in images.values():
            (tmp / image.name).write_bytes(image.png)
    for key, render in (("report_md", to_markdown), ("report_html", to_html)):
        write_text(render(TITLE, blocks), paths[key])
    write_json(verdict, paths["verdict"])
    _log_to_parent_runs(tracking_uri, data.per_model, list(paths.values()), verdict)
    return paths


def _blocks(
    data: tables.Tables,
    meta: Mapping[str, Any],
    verdict: Mapping[str, Any],
    regime: Mapping[str, Any],
    imbalance: pd.DataFrame,
    background: pd.DataFrame,
    terciles: pd.DataFrame,
    images: Mapping[str, Image],
    losses: list[str],
    fixed: float,
) -> list[Block]:
    """The report's sections in reading order."""
    n_seeds = data.per_model.groupby("loss")["seed"].nunique()
    tercile_table = (
        terciles.groupby(["tercile", "loss"], observed=True)["dice"].mean().unstack("loss")
    )
    return [
        Heading("In one paragraph"),
        Text(verdict["headline"]),
        Heading("1. Data card"),
        Text(
            f"Source: {meta.get('source', 'unknown')}; image size {meta.get('image_size')} px; "
            f"patients per split: "
            + ", ".join(f"{k} {len(v)}" for k, v in meta.get("splits", {}).items())
            + ". Class imbalance per split:"
        ),
        Table(imbalance),
        Text(
            "An all-background prediction on our test set: pixel accuracy is near perfect while "
            "every overlap score that counts the tumour is zero, which is why accuracy is not "
            "reported as evidence below."
        ),
        Table(background),
        Heading("2. Every metric per loss"),
        Text(
            "mean ± std over seeds [95 % CI, t-interval over seeds]; seeds per loss: "
            + ", ".join(f"{loss} {n_seeds[loss]}" for loss in losses)
            + f"; threshold {fixed:g}. ↑ higher is better, ↓ lower is better."
        ),
        Table(tables.metric_table(data.per_model)),
        Text(METRIC_SENTENCE),
        Heading("3. Figures"),
        *(images[name] for name in ("metric_means.png", "dice_distributions.png")),
        *(images[name] for name in ("learning_curves.png", "false_positives.png")),
        images["overlays.png"],
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
        Heading("5. The verdict"),
        Text(verdict["headline"]),
        Text(METHOD.format(level=100 * verdict["ci_level"], margin=verdict["margin"])),
        *([images["paired.png"]] if "paired.png" in images else []),
        Table(comparison_table(verdict))
        if verdict["verdict"] or verdict["comparisons"]
        else Text(f"No comparison possible: {verdict['reason']}."),
        *(
            [
                Text(friedman_text(verdict["friedman"], verdict["metric"])),
                images["critical_difference.png"],
            ]
            if "friedman" in verdict
            else []
        ),
        Heading("Where the variance comes from", 3),
        Text(
            f"Shares of the variance of per-patient {verdict['metric']} (one value per patient "
            "and model) due to patients, seeds (training runs), folds (cross-validation only) "
            "and what is left (patient x seed interaction), per loss and for the difference "
            "the verdict tests. A large seed share means the answer depends on the training "
            "run: more seeds help, more patients do not."
        ),
        Table(variance_table(verdict)),
        Heading("6. Files"),
        Text(
            "verdict.json holds the headline comparison and every other one; figures/ the PNGs; "
            "metrics/ every table this report was built from (per-image, per-patient, "
            "per-model, thresholds, calibration, learning curves)."
        ),
    ]


def _log_to_parent_runs(
    tracking_uri: str | None,
    per_model: pd.DataFrame,
    paths: list[Path],
    verdict: Mapping[str, Any],
) -> None:
    """Log the report to every sweep (MLflow parent run) the models came from: the files
    under ``report/``, the verdict's headline numbers and each loss's mean test metrics as
    metrics (:func:`parent_metrics`), the outcome and the headline as tags (the headline is
    also the run's description)."""
    if tracking_uri is None:
        return
    from segloss import tracking  # imports mlflow: only when something is logged

    if not tracking.enabled(tracking_uri):
        return
    parents = per_model["mlflow_parent_run_id"].dropna().unique()
    if not len(parents):
        warnings.warn(
            "the checkpoints name no mlflow_parent_run_id: the report is not logged to MLflow",
            stacklevel=2,
        )
        return
    metrics = parent_metrics(verdict, per_model)
    tags = {
        "verdict": verdict.get("verdict") or "none",
        "verdict_comparison": f"{verdict.get('candidate')} vs {verdict.get('baseline')} "
        f"on {verdict.get('metric')}",
        "verdict_headline": verdict.get("headline", ""),
        "mlflow.note.content": verdict.get("headline", ""),
    }
    for run_id in parents:
        tracking.log_artifacts(tracking_uri, str(run_id), paths, artifact_path="report")
        tracking.log_metrics(tracking_uri, str(run_id), metrics)
        tracking.set_tags(tracking_uri, str(run_id), tags)


def parent_metrics(verdict: Mapping[str, Any], per_model: pd.DataFrame) -> dict[str, float]:
    """The numbers a sweep's parent run shows: ``verdict_mean_difference``, ``verdict_ci_low``,
    ``verdict_ci_high``, ``verdict_p_value``, ``verdict_margin`` (where defined), and
    ``<loss>/test_<metric>``, the mean over seeds of each test summary metric."""
    ci = verdict.get("ci") or [None, None]
    values = {
        "verdict_mean_difference": verdict.get("mean_difference"),
        "verdict_ci_low": ci[0],
        "verdict_ci_high": ci[1],
        "verdict_p_value": verdict.get("p_value"),
        "verdict_margin": verdict.get("margin"),
    }
    columns = [c for c in SUMMARY_METRICS if c in per_model]
    for loss, row in per_model.groupby("loss")[columns].mean().iterrows():
        values |= {f"{loss}/test_{name}": row[name] for name in columns}
    return {k: float(v) for k, v in values.items() if v is not None and np.isfinite(float(v))}
