"""Data statistics (calibration against real LGG data) and the data card, computed once by the
prepare stage: ``data_card.md`` for people and ``<prepared>/card/`` for the report.

The card makes the class-imbalance argument on our own data: an all-background prediction
scores a high pixel accuracy on the test split, next to a Dice and IoU of 0.
``<prepared>/card/imbalance.csv`` (per split: patients, slices, share of slices with tumour,
tumour pixels) and ``background.csv`` (what an all-background mask scores on every tested
slice at the source resolution) are the report's data-card tables (:func:`write_tables`,
:func:`read_tables`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage

from segloss import stacks
from segloss.data.kaggle import Patient
from segloss.data.prepared import SPLITS, load_manifest, load_tested
from segloss.errors import SeglossError
from segloss.io import atomic_path
from segloss.metrics import mean_per_image, per_image, per_patient, pooled

FLAIR = 1  # channel index in (pre-contrast, FLAIR, post-contrast)
RING = 0.03  # width of the tissue ring around a lesion, as a fraction of the image width
TABLES = ("imbalance", "background")  # <prepared>/card/<name>.csv


def slice_table(patient: Patient) -> pd.DataFrame:
    """One row per slice at native resolution: tumour pixels and FLAIR lesion/surround means.

    The surround is a ring of brain (FLAIR above a tenth of the patient's 99th percentile)
    around the lesion: mostly white matter, for real data with no tissue labels as well.
    """
    flair = patient.images[..., FLAIR].astype(np.float32)
    masks = patient.masks
    width = max(1, round(RING * masks.shape[2]))
    ring = ndimage.maximum_filter(masks, size=(1, 2 * width + 1, 2 * width + 1)) & ~masks
    brain = flair > 0.1 * np.percentile(flair[flair > 0], 99) if flair.any() else flair > 0
    ring &= brain
    tumour = masks.sum(axis=(1, 2))
    with np.errstate(invalid="ignore"):
        lesion_mean = (flair * masks).sum(axis=(1, 2)) / tumour
        ring_mean = (flair * ring).sum(axis=(1, 2)) / ring.sum(axis=(1, 2))
    return pd.DataFrame(
        {
            "patient": patient.name,
            "slice": patient.slices,
            "pixels": masks.shape[1] * masks.shape[2],
            "tumour_pixels": tumour,
            "flair_lesion": lesion_mean,
            "flair_surround": ring_mean,
        }
    )


def calibration(slices: pd.DataFrame) -> dict[str, float]:
    """The statistics the synthetic data is calibrated on (real kaggle_3m: about 1.3 %, 40 %)."""
    positive = slices[slices["tumour_pixels"] > 0]
    ratio = (positive["flair_lesion"] / positive["flair_surround"]).dropna()
    return {
        "patients": int(slices["patient"].nunique()),
        "slices": len(slices),
        "tumour_pixel_fraction": float(slices["tumour_pixels"].sum() / slices["pixels"].sum()),
        "positive_slice_fraction": len(positive) / max(1, len(slices)),
        "tumour_fraction_in_positive": float(
            (positive["tumour_pixels"] / positive["pixels"]).mean()
        ),
        "flair_lesion_to_surround": float(ratio.median()),
        "flair_lesion_brighter": float((ratio > 1).mean()),
    }


def background_baseline(masks: np.ndarray) -> dict[str, float]:
    """Scores of an all-background prediction, pooled over the given (test) masks."""
    # An all-background prediction has no surface: its NSD is 0 or 1 at any tolerance.
    frame = per_image(np.zeros_like(masks, dtype=bool), masks.astype(bool), nsd_tolerance=0.0)
    total = pooled(frame).iloc[0]
    return {
        "pixel_accuracy": float(
            (total["tp"] + total["tn"]) / total[["tp", "fp", "fn", "tn"]].sum()
        ),
        "dice": float(total["dice"]),
        "iou": float(total["iou"]),
        "mean_slice_dice": float(frame["dice"].mean()),
    }


def _split_rows(manifest: pd.DataFrame) -> pd.DataFrame:
    """Per split (per fold's test patients with cross-validation) and over all: patients,
    slices, tumour pixels % and positive slices % at the prepared size."""
    rows = []
    folds = sorted(manifest["fold"].dropna().unique()) if "fold" in manifest else []
    groups = [f"test of fold {int(f)}" for f in folds] if folds else list(SPLITS)
    for name in (*groups, "all"):
        if name == "all":
            part = manifest
        elif folds:
            part = manifest[manifest["fold"] == int(name.rsplit(" ", 1)[1])]
        else:
            part = manifest[manifest["split"] == name]
        pixels = (part["height"] * part["width"]).sum()
        rows.append(
            {
                "split": name,
                "patients": part["patient"].nunique(),
                "slices": len(part),
                "tumour pixels %": 100 * part["tumour_pixels"].sum() / max(1, pixels),
                "positive slices %": 100 * (part["tumour_pixels"] > 0).mean(),
            }
        )
    return pd.DataFrame(rows)


def _calibration_rows(stats: dict[str, float], source: str) -> str:
    """The native-resolution statistics; against real kaggle_3m for the MRI sources."""
    if source == "folder":
        return f"""| statistic | value |
|---|---|
| foreground pixels, % of all pixels | {100 * stats["tumour_pixel_fraction"]:.2f} |
| images with foreground, % | {100 * stats["positive_slice_fraction"]:.1f} |
| foreground % within those images (mean) | {100 * stats["tumour_fraction_in_positive"]:.2f} |"""
    return f"""| statistic | value | real kaggle_3m |
|---|---|---|
| tumour pixels, % of all pixels | {100 * stats["tumour_pixel_fraction"]:.2f} | about 1.3 |
| slices with tumour, % | {100 * stats["positive_slice_fraction"]:.1f} | 35-45 |
| tumour % within positive slices | {100 * stats["tumour_fraction_in_positive"]:.2f} | 1-6 |
| FLAIR lesion / surrounding brain (median) | {stats["flair_lesion_to_surround"]:.2f} | > 1 |
| FLAIR lesion brighter, % of tumour slices | {100 * stats["flair_lesion_brighter"]:.0f} | most |"""


def render_card(
    manifest: pd.DataFrame, stats: dict[str, float], baseline: dict[str, float], meta: dict
) -> str:
    """The data card as markdown (for folder data in its own words: groups, foreground)."""
    table = _split_rows(manifest).to_markdown(index=False, floatfmt=".2f")
    size = meta["image_size"]
    sizes = manifest[["native_height", "native_width"]].drop_duplicates()
    native = (
        f"{sizes.iloc[0, 0]}x{sizes.iloc[0, 1]}"
        if len(sizes) == 1
        else f"{len(sizes)} sizes, {manifest['native_height'].min()}-"
        f"{manifest['native_height'].max()} x {manifest['native_width'].min()}-"
        f"{manifest['native_width'].max()} (each scored at its own size)"
    )
    mri = meta["source"] != "folder"
    unit, item, thing = (
        ("patients", "slices", "tumour") if mri else ("groups", "images", "foreground")
    )
    strata = f"{meta['stratified_by']}, then " if meta.get("stratified_by") else ""
    legend = "" if mri else '\nIn the tables "patients" are the groups and "tumour" the foreground.'
    return f"""# Data card

Source: **{meta["source"]}** (`{meta["source_dir"]}`), {stats["patients"]} {unit},
{stats["slices"]} {item} at {native}; prepared at {size}x{size}, split by {unit[:-1]}
(seed {meta["seed"]}, stratified by {strata}{thing} burden).
Data hash `{meta["data_hash"]}`.{legend}

## Splits (prepared size)

{table}

## Calibration (native resolution)

{_calibration_rows(stats, meta["source"])}

## Why pixel accuracy misleads: an all-background prediction on the test split

| metric (pooled over the test split) | all-background prediction |
|---|---|
| pixel accuracy | {100 * baseline["pixel_accuracy"]:.2f} % |
| Dice | {baseline["dice"]:.3f} |
| IoU | {baseline["iou"]:.3f} |

Predicting no {thing} at all is right for {100 * baseline["pixel_accuracy"]:.1f} % of the
pixels yet finds none of the {thing}. (Averaged per {item[:-1]} instead, each {thing}-free
{item[:-1]} it leaves empty counting as a perfect 1, its Dice would be
{baseline["mean_slice_dice"]:.2f}: per-{item[:-1]} means need the same care.)

Normalisation: {meta["normalisation"]}
"""


def imbalance_table(manifest: pd.DataFrame) -> pd.DataFrame:
    """Class imbalance per split of the manifest (prepared size)."""
    pixels = manifest["height"] * manifest["width"]
    imbalance = (
        manifest.assign(pixels=pixels, tumour=manifest["tumour_pixels"] > 0)
        .groupby("split", sort=False)
        .agg(
            patients=("patient", "nunique"),
            slices=("slice", "size"),
            tumour_slices=("tumour", "mean"),
            tumour_pixels=("tumour_pixels", "sum"),
            pixels=("pixels", "sum"),
        )
    )
    imbalance["tumour_pixels"] = imbalance["tumour_pixels"] / imbalance.pop("pixels")
    imbalance = imbalance.rename(
        columns={"tumour_slices": "share of slices with tumour", "tumour_pixels": "tumour pixels"}
    )
    return imbalance.reset_index()


def background_table(native: np.ndarray, patients: np.ndarray) -> pd.DataFrame:
    """What an all-background mask scores on the given slices' masks (one row); ``native``
    is a :mod:`segloss.stacks` stack (images may differ in size)."""
    frame = stacks.frame_by_block(
        lambda target: per_image(np.zeros(target.shape, bool), target, nsd_tolerance=0.0), native
    )  # an all-background mask has no surface: NSD is 0 or 1 at any tolerance
    frame = frame.assign(patient=patients)
    return pd.DataFrame(
        {
            "pixel accuracy (per slice)": [mean_per_image(frame, "pixel_accuracy")],
            "Dice per slice (empty/empty = 1)": [mean_per_image(frame, "dice")],
            "Dice, tumour slices": [mean_per_image(frame, "dice", tumour_only=True)],
            "IoU per slice": [mean_per_image(frame, "iou")],
            "Dice per patient": [per_patient(frame)["dice"].mean()],
            "Dice pooled": [pooled(frame)["dice"].iloc[0]],
        }
    )


def write_tables(prepared_dir: str | os.PathLike) -> Path:
    """Write the report's data-card tables to ``<prepared_dir>/card/`` (atomically): the
    imbalance per split and the all-background scores on every tested slice at the source
    resolution."""
    test, native = load_tested(prepared_dir)
    tables = {
        "imbalance": imbalance_table(load_manifest(prepared_dir)),
        "background": background_table(native, test.patients),
    }
    out = Path(prepared_dir) / "card"
    with atomic_path(out) as tmp:
        tmp.mkdir()
        for name in TABLES:
            tables[name].to_csv(tmp / f"{name}.csv", index=False)
    return out


def read_tables(prepared_dir: str | os.PathLike) -> dict[str, pd.DataFrame]:
    """The data-card tables the prepare stage wrote (:func:`write_tables`)."""
    folder = Path(prepared_dir) / "card"
    if not all((folder / f"{name}.csv").is_file() for name in TABLES):
        raise SeglossError(
            f"{folder}/ has no data card: run the prepare stage (`dvc repro prepare` or "
            "`python pipelines/prepare.py`)"
        )
    return {name: pd.read_csv(folder / f"{name}.csv") for name in TABLES}
