"""The prepare stage: source -> normalise -> resize -> patient split -> prepared arrays -> card.

Takes the typed ``data`` and ``cv`` settings (:mod:`segloss.config`) and the output paths.
Every input file is read and validated before anything is written, and the prepared folder
is written atomically, so a bad input leaves no partial ``data/prepared``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from segloss import config, stacks
from segloss.data import card, folder, kaggle, sources, synthetic
from segloss.data.folds import check_cv, fold_roles
from segloss.data.prepared import (
    POOL,
    SPLITS,
    PreparedSplit,
    load_manifest,
    load_meta,
    write_prepared,
)
from segloss.data.split import split_counts, split_patients
from segloss.errors import ConfigError
from segloss.io import write_text

NORMALISATION = (
    "per patient and channel: percentiles {low:g} and {high:g} of the patient's non-zero "
    "voxels in that channel (native resolution) mapped linearly to 0..255 and clipped; then "
    "area-resized to {size}x{size}. Masks: area-resized, then > 0.5."
)


@dataclass(frozen=True)
class PrepareResult:
    """What the prepare stage produced, for the entry point to report."""

    prepared: Path
    card: Path
    source_dir: Path
    generated: bool  # synthetic data generated now (False: reused, or real data)
    calibration: dict[str, float]
    seconds: dict[str, float]


def _check_size(size: int, native: int, source: str) -> None:
    """Area resizing only shrinks: ``data.image_size`` above the scans' size is an error (and
    a huge one would otherwise fail deep inside the allocator)."""
    if size > native:
        raise ConfigError(
            f"data.image_size={size} is larger than the scans ({native} pixels, {source}); "
            f"choose at most {native}"
        )


def synthetic_settings(data: config.SyntheticData) -> synthetic.SyntheticSettings:
    """The generator's settings from the (validated) ``data`` settings."""
    return synthetic.SyntheticSettings(
        n_patients=data.n_patients,
        seed=data.seed,
        size=data.tiff_size,
        n_slices=(int(data.n_slices[0]), int(data.n_slices[1])),
    )


def percentile_window(channel: np.ndarray, low: float, high: float) -> tuple[int, int]:
    """Percentiles ``low`` and ``high`` (inverted CDF) of the non-zero values of a uint8 array."""
    counts = np.bincount(channel.ravel(), minlength=256)
    counts[0] = 0
    if not counts.any():
        return 0, 255
    cdf = np.cumsum(counts) / counts.sum()
    lo, hi = (int(np.searchsorted(cdf, q / 100)) for q in (low, high))
    return lo, max(hi, lo + 1)


def normalise(images: np.ndarray, low: float, high: float) -> torch.Tensor:
    """(N,H,W,3) uint8 -> (N,3,H,W) float 0..1: one patient's percentile window per channel.

    Applied as a 256-entry lookup table per channel (the input is uint8): fast and exact.
    """
    levels = np.arange(256, dtype=np.float32)
    channels = []
    for c in range(3):
        lo, hi = percentile_window(images[..., c], low, high)
        lut = np.clip((levels - lo) / (hi - lo), 0.0, 1.0)
        channels.append(lut[images[..., c]])
    return torch.from_numpy(np.stack(channels, axis=1))


def resize(images: torch.Tensor, masks: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Area-resize a patient: images to uint8 (N,size,size,3), masks to exactly {0, 1}."""
    small = F.interpolate(images, size=(size, size), mode="area")
    pixels = (small * 255).round_().to(torch.uint8).permute(0, 2, 3, 1).contiguous()
    m = torch.from_numpy(masks).float()[:, None]
    small_masks = (F.interpolate(m, size=(size, size), mode="area")[:, 0] > 0.5).to(torch.uint8)
    return pixels.numpy(), small_masks.numpy()


def _split(patients: Mapping, members: list[str]) -> PreparedSplit:
    """The prepared arrays of ``members`` (each patient: slices, images, masks, native masks);
    the native masks keep each patient's source size."""
    return PreparedSplit(
        images=np.concatenate([patients[p][1] for p in members]),
        masks=np.concatenate([patients[p][2] for p in members]),
        patients=np.concatenate([[p] * len(patients[p][0]) for p in members]),
        slices=np.concatenate([patients[p][0] for p in members]),
        native=stacks.stack([patients[p][3] for p in members]),
    )


def _source(data: config.DataConfig, cv: config.CvConfig) -> tuple[Path, bool, float | None]:
    """``(folder to read, generated now, mm per native pixel or None)`` for ``data``."""
    download = isinstance(data, config.LggData) and data.download
    if not config.is_set(data.root) and not download:
        where = (
            "<the folder the data.images and data.masks globs start from>"
            if isinstance(data, config.FolderData)
            else "<kaggle_3m folder, its parent or the Kaggle zip> (or data.download=true)"
        )
        raise ConfigError(f"data.root is not set: pass data.root={where}")
    if isinstance(data, config.FolderData):
        return Path(data.root), False, None
    if isinstance(data, config.LggData):
        return sources.resolve_root(data.root, data.cache, fetch=data.download), False, None
    settings = synthetic_settings(data)
    _check_size(data.image_size, settings.size, f"data.tiff_size={settings.size}")
    if cv.folds < 2:
        split_counts(settings.n_patients, config.plain(data.split))  # before a long generation
    check_cv(cv, settings.n_patients)
    source_dir, generated = synthetic.generate(data.root, settings)
    return source_dir, generated, synthetic.FOV_MM / settings.size


def folder_layout(data: config.FolderData) -> folder.Layout:
    """The folder reader's layout from the (validated) ``data`` settings of the same names."""
    names = [f.name for f in fields(folder.Layout) if f.name != "root"]
    return folder.Layout(root=Path(data.root), **{name: getattr(data, name) for name in names})


def _patients(
    data: config.DataConfig, source_dir: Path
) -> tuple[Iterable[kaggle.Patient], dict[str, str] | None]:
    """The source's patients (one at a time for kaggle_3m) and their strata (folder data with
    a stratum column; None: stratify by burden alone)."""
    if isinstance(data, config.FolderData):
        patients, strata = folder.read_groups(folder_layout(data))
        return patients, strata if data.table_stratum is not None else None
    return map(kaggle.read_patient, sources.patient_folders(source_dir)), None


def _read(
    patients: Iterable[kaggle.Patient], size: int, norm: config.Normalise
) -> tuple[dict, pd.DataFrame]:
    """Every patient normalised and resized (``name -> (slices, images, masks, native
    masks)``) and the per-slice card table."""
    prepared, tables = {}, []
    for patient in patients:
        _check_size(size, min(patient.images.shape[1:3]), str(patient.files[0]))
        tables.append(card.slice_table(patient))
        pixels = normalise(patient.images, float(norm.low), float(norm.high))
        small = resize(pixels, patient.masks, size)
        prepared[patient.name] = (patient.slices, *small, patient.masks)
    return prepared, pd.concat(tables, ignore_index=True)


def prepare(
    data: config.DataConfig,
    prepared_dir: str | Path,
    reports_dir: str | Path,
    cv: config.CvConfig,
) -> PrepareResult:
    """Run the whole stage for the ``data`` settings and the ``cv`` settings (folds)."""
    started = time.perf_counter()
    folds, val_fraction = cv.folds, cv.val_fraction
    size, seed = data.image_size, data.seed
    fractions, norm = config.plain(data.split), data.normalise
    source_dir, generated, spacing = _source(data, cv)
    generation = time.perf_counter() - started
    found, strata = _patients(data, source_dir)
    patients, slices = _read(found, size, norm)
    stats = card.calibration(slices)
    burden = (
        slices.groupby("patient")["tumour_pixels"].sum() / slices.groupby("patient")["pixels"].sum()
    ).to_dict()
    meta = {
        "source": data.source,
        "source_dir": str(
            source_dir if isinstance(data, config.FolderData) else kaggle.find_root(source_dir)
        ),
        "seed": seed,
        "split_fractions": fractions,
        "normalisation": NORMALISATION.format(size=size, **config.plain(norm)),
        "calibration": stats,
        # mm per native pixel where the source knows it (synthetic), else null
        "pixel_spacing_mm": spacing,
        "cv": {"folds": folds, "seed": seed, "val_fraction": val_fraction},
    }
    if folds >= 2:
        check_cv(cv, len(patients))
        meta["folds"] = fold_roles(burden, folds, seed, val_fraction, strata)
        splits = {POOL: _split(patients, sorted(patients))}
        test_masks = splits[POOL].masks
    else:
        assignment = split_patients(burden, fractions, seed, strata)
        splits = {
            name: _split(patients, [p for p in sorted(patients) if assignment[p] == name])
            for name in SPLITS
        }
        test_masks = splits["test"].masks
    if strata is not None:
        meta["stratified_by"], meta["strata"] = data.table_stratum, strata
    if isinstance(data, config.SyntheticData):
        settings = synthetic_settings(data)
        meta["generator"] = {**asdict(settings), "key": settings.key()}
    prepared = write_prepared(prepared_dir, splits, meta)
    baseline = card.background_baseline(test_masks)
    text = card.render_card(load_manifest(prepared), stats, baseline, load_meta(prepared))
    card_path = Path(reports_dir) / "data_card.md"
    write_text(text, card_path)
    return PrepareResult(
        prepared=prepared,
        card=card_path,
        source_dir=Path(meta["source_dir"]),
        generated=generated,
        calibration=stats,
        seconds={"generate": generation, "total": time.perf_counter() - started},
    )
