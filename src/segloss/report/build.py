"""Assemble the report from the earlier stages' outputs: compute, plot, render, write.

Reads only what the evaluate stage wrote (``reports/metrics/*.csv``, ``predictions/``) and
the prepared folder with its data card (``segloss.data.card``, written by the prepare stage).
Logs nothing: :func:`build_report` returns the written paths, the verdict and the per-model
table, and ``pipelines/report.py`` logs them to MLflow.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from segloss import stacks
from segloss.calibration import pool_calibration
from segloss.config import ReportConfig
from segloss.data import card
from segloss.data.prepared import PreparedSplit, load_meta, load_tested
from segloss.errors import SeglossError
from segloss.fingerprint import factor_columns, level_prefix
from segloss.io import atomic_path, write_json, write_text
from segloss.report import factorial, figures, sections, tables, wording
from segloss.report.document import Json, Verdict
from segloss.report.factorial import Factor
from segloss.report.render import Block, Image, to_html, to_markdown
from segloss.report.verdict import PATIENT_METRICS, build_verdict, patient_scores


@dataclass(frozen=True)
class BuiltReport:
    """What :func:`build_report` wrote (``paths``: report_md, report_html, figures, verdict)
    and what a caller logs: the verdict and the evaluate stage's ``per_model`` table."""

    paths: dict[str, Path]
    verdict: Verdict
    per_model: pd.DataFrame


def _png(fig: Figure, dpi: int) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def _tested(
    prepared_dir: str | os.PathLike, per_image: pd.DataFrame
) -> tuple[PreparedSplit, np.ndarray]:
    """The tested slices that were evaluated (every one, unless some folds were not
    evaluated yet) with their masks at the source size."""
    test, native = load_tested(prepared_dir)
    evaluated = np.isin(test.patients, per_image["patient"].astype(str).unique())
    if evaluated.all():
        return test, native
    keep = np.flatnonzero(evaluated)
    subset = PreparedSplit(
        np.asarray(test.images[keep]), test.masks[keep], test.patients[keep], test.slices[keep]
    )
    return subset, native[keep]


def _load_predictions(
    predictions_dir: Path, per_model: pd.DataFrame, test: PreparedSplit, prefix: str
) -> tuple[dict[str, np.ndarray], list[tuple[str, int]]]:
    """Each loss's lowest-seed predicted masks (every fold's file, put in the order of the
    tested slices), checked against the tested slices' ids, titled with the loss's variant.
    ``prefix``: a second factor's level (``foreground_``) the files' names start with."""
    first = per_model.sort_values("seed").drop_duplicates("loss")
    variants = tables.loss_variants(per_model)
    wanted = pd.MultiIndex.from_arrays([test.patients, test.slices])
    masks = {}
    for loss, seed in zip(first["loss"], first["seed"], strict=True):
        name = f"{prefix}{loss}_seed{seed}"
        paths = sorted(predictions_dir.glob(f"{name}_fold*.npz")) or [
            predictions_dir / f"{name}.npz"
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
        masks[f"{tables.loss_label(loss, variants[loss])}, seed {seed}"] = stacks.stack(
            [stacks.from_npz(f) for f in saved]
        )[order]
    return masks, list(zip(first["loss"], first["seed"], strict=True))


def _overlays(
    data: tables.Tables,
    test: PreparedSplit,
    native: np.ndarray,
    prepared_dir: str | os.PathLike,
    predictions_dir: str | os.PathLike,
    count: int,
    prefix: str,
    rgb: bool,
) -> Figure:
    """The same test slices with every loss's lowest-seed prediction and per-slice Dice
    (``rgb``: colour photographs, drawn as they are; MRI shows its FLAIR channel)."""
    predictions, shown = _load_predictions(Path(predictions_dir), data.per_model, test, prefix)
    rows = tables.overlay_slices(prepared_dir, count, np.unique(test.patients))
    wanted = pd.MultiIndex.from_arrays([test.patients, test.slices])
    slice_dice = {
        title: data.per_image.query("loss == @loss and seed == @seed")
        .set_index(["patient", "slice"])["dice"]
        .reindex(wanted)
        .to_numpy()
        for title, (loss, seed) in zip(predictions, shown, strict=True)
    }
    return figures.overlays(test, rows, predictions, slice_dice, native, rgb=rgb)


def _figures(
    data: tables.Tables,
    verdict: Verdict,
    settings: ReportConfig,
    terciles: pd.DataFrame,
    overlays: Callable[[], Figure],
) -> dict[str, Figure]:
    """Every figure by file name, drawn in the report's order (the paired comparison only
    with a verdict, the critical-difference diagram only with a Friedman test). ``data`` is
    :meth:`~segloss.report.tables.Tables.labelled`: legends name each loss's variant."""
    losses, per_model = data.losses, data.per_model
    fixed = float(per_model["threshold"].iloc[0])
    ece = per_model.groupby("loss")["ece"].mean()
    plots = {
        "metric_means.png": figures.metric_means(per_model, losses),
        "dice_distributions.png": figures.dice_distributions(data.per_image, losses),
        "learning_curves.png": figures.learning_curves(data.learning_curves, losses),
        "false_positives.png": figures.false_positives(per_model, data.per_image, losses),
        "overlays.png": overlays(),
        "model_spread.png": figures.model_spread(
            per_model.assign(group=per_model["loss"], value=per_model["dice_per_patient"]),
            losses,
            settings.collapse_dice,
        ),
        "dice_by_size.png": figures.dice_by_size(terciles, losses),
        "reliability.png": figures.reliability(pool_calibration(data.calibration), ece, losses),
        "threshold_sensitivity.png": figures.threshold_sensitivity(
            data.thresholds, per_model, fixed, losses
        ),
    }
    metric = settings.metric
    if verdict["verdict"]:
        frames = {"per_image": data.per_image, "per_patient": data.per_patient}
        scores = patient_scores(*PATIENT_METRICS[metric][:2], frames)
        baseline, candidate = (
            wording.named(verdict, "baseline"),
            wording.named(verdict, "candidate"),
        )
        plots["paired.png"] = figures.paired(scores, baseline, candidate, metric)
    if "friedman" in verdict:
        labels = {
            loss: tables.loss_label(loss, variant)
            for loss, variant in verdict["loss_variants"].items()
        }
        plots["critical_difference.png"] = figures.critical_difference(
            verdict["friedman"], settings.alpha, labels
        )
    return plots


def _verdict(data: tables.Tables, meta: Json, settings: ReportConfig) -> Verdict:
    """The verdict with its headline sentence."""
    frames = {"per_image": data.per_image, "per_patient": data.per_patient}
    verdict = build_verdict(frames | {"per_model": data.per_model}, settings)
    headline = wording.headline(
        verdict,
        str(meta.get("source", "unknown")),
        tables.training_regime(data.learning_curves),
        data.per_model.groupby("loss")["seed"].nunique().to_dict(),
        settings.collapse_dice,
    )
    return verdict | {"headline": headline}


def _write(
    reports_dir: str | os.PathLike,
    images: Mapping[str, Image],
    blocks: list[Block],
    verdict: Verdict,
    title: str,
) -> dict[str, Path]:
    """Write ``figures/``, ``report.md``, ``report.html`` and ``verdict.json``."""
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
        write_text(render(title, blocks), paths[key])
    write_json(verdict, paths["verdict"])
    return paths


def build_report(
    prepared_dir: str | os.PathLike,
    predictions_dir: str | os.PathLike,
    metrics_dir: str | os.PathLike,
    reports_dir: str | os.PathLike,
    settings: ReportConfig,
    factor: Factor | None = None,
) -> BuiltReport:
    """Write ``report.md``, ``report.html``, ``figures/*.png`` and ``verdict.json`` under
    ``reports_dir``. With a second ``factor`` the main sections show its reference level
    and section 7 compares the levels (:mod:`segloss.report.factorial`)."""
    data = tables.Tables.read(metrics_dir)
    everything, levels = data, None
    if factor is None and (found := factor_columns(data.per_model.columns)):
        raise SeglossError(
            f"{Path(metrics_dir) / 'per_model.csv'} has a second factor's column "
            f"{found[0]!r}: run the report with the sweep's factor (e.g. "
            f"factor=train.{found[0]}, or its experiment)"
        )
    if factor is not None:
        # before anything is written
        levels = factorial.arms(data.per_model, factor, Path(metrics_dir) / "per_model.csv")
        data = factorial.at_level(data, factor.column, factor.reference)
    meta = load_meta(prepared_dir)
    data_card = card.read_tables(prepared_dir)
    test, native = _tested(prepared_dir, data.per_image)  # masks at the source size
    verdict = _verdict(data, meta, settings)
    extra_blocks = []
    if factor is not None:
        verdict["interaction"] = factorial.factorial_verdict(everything, factor, levels, settings)
        verdict["headline"] += " " + factorial.headline(verdict["interaction"], factor)
    shown = data.labelled()  # figures and tables name each loss with its variant
    terciles = tables.size_terciles(shown.per_image)
    count = settings.overlay_count
    prefix = level_prefix(None if factor is None else factor.reference)
    rgb = meta.get("source") == "folder"
    overlays = partial(
        _overlays, data, test, native, prepared_dir, predictions_dir, count, prefix, rgb
    )
    fixed = float(data.per_model["threshold"].iloc[0])
    fields = {
        "fixed": fixed,
        "metric": settings.metric,
        "candidate": wording.named(verdict, "candidate"),
        "baseline": wording.named(verdict, "baseline"),
    }
    dpi = settings.dpi
    drawn = _figures(shown, verdict, settings, terciles, overlays)
    if factor is not None:
        drawn["factor_spread.png"] = factorial.spread(
            everything.labelled().per_model, factor, levels, settings.collapse_dice
        )
    images = {
        name: Image(name, sections.CAPTIONS[name].format(**fields), _png(fig, dpi))
        for name, fig in drawn.items()
    }
    if factor is not None:
        extra_blocks = factorial.blocks(verdict["interaction"], data.per_model, factor, images)
    blocks = sections.blocks(shown, meta, verdict, data_card, terciles, images, fixed, extra_blocks)
    paths = _write(reports_dir, images, blocks, verdict, sections.title(meta))
    return BuiltReport(paths, verdict, data.per_model)
