"""Reader for the Kaggle LGG ``kaggle_3m`` layout (real data and the synthetic set alike).

Layout: ``kaggle_3m/<PATIENT>/<PATIENT>_<n>.tif`` (RGB uint8: pre-contrast, FLAIR,
post-contrast) and ``<PATIENT>_<n>_mask.tif`` (greyscale uint8, values exactly {0, 255}).
Every pair is validated; any problem raises :class:`DataError` naming the file.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile

from segloss.errors import DataError, first_line

log = logging.getLogger(__name__)

SLICE_NAME = re.compile(r"^(?P<patient>.+)_(?P<number>\d+)(?P<mask>_mask)?\.tif$")


@dataclass(frozen=True)
class Patient:
    """One patient's slices in numeric order: images (N,H,W,3) uint8, masks (N,H,W) bool."""

    name: str
    slices: np.ndarray  # (N,) int, 1 = bottom of the head
    images: np.ndarray
    masks: np.ndarray
    files: tuple[Path, ...]  # the image file of each slice


def find_root(root: str | Path) -> Path:
    """The ``kaggle_3m`` folder, given it or its parent."""
    path = Path(root)
    if not path.is_dir():
        raise DataError(f"{path}: data root not found (expected a kaggle_3m folder or its parent)")
    return path / "kaggle_3m" if (path / "kaggle_3m").is_dir() else path


def patient_dirs(root: str | Path) -> list[Path]:
    """Patient folders under the data root, sorted by name; at least one."""
    base = find_root(root)
    dirs = sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not dirs:
        raise DataError(
            f"{base}: no patient folders (expected kaggle_3m/<PATIENT>/<PATIENT>_<n>.tif)"
        )
    return dirs


def slice_pairs(folder: Path) -> list[tuple[int, Path, Path]]:
    """``(number, image, mask)`` for every slice of a patient folder, in numeric order."""
    images: dict[int, Path] = {}
    masks: dict[int, Path] = {}
    for path in folder.iterdir():
        if path.suffix.lower() not in (".tif", ".tiff"):
            continue
        match = SLICE_NAME.match(path.name)
        if match is None or match["patient"] != folder.name:
            raise DataError(f"{path}: unexpected file name (expected {folder.name}_<n>[_mask].tif)")
        (masks if match["mask"] else images)[int(match["number"])] = path
    if unpaired := sorted(images.keys() - masks.keys()):
        path = images[unpaired[0]]
        raise DataError(f"{path}: image has no mask ({path.stem}_mask.tif missing)")
    if unpaired := sorted(masks.keys() - images.keys()):
        path = masks[unpaired[0]]
        raise DataError(f"{path}: mask has no image ({folder.name}_{unpaired[0]}.tif missing)")
    if not images:
        raise DataError(f"{folder}: patient folder holds no slices")
    return [(n, images[n], masks[n]) for n in sorted(images)]


class _Collect(logging.Handler):
    """Keeps tifffile's log records (it logs, not raises, for some damaged files)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def read_tiff(path: Path) -> np.ndarray:
    """Decode a TIFF; a truncated or unreadable file becomes a one-line DataError.

    A truncated file can make tifffile log "invalid offset to first page" and return an empty
    array instead of raising: that is an error too, with tifffile's message as the reason.
    """
    logger = logging.getLogger("tifffile")
    collect, propagate = _Collect(), logger.propagate
    logger.addHandler(collect)
    logger.propagate = False
    try:
        image = tifffile.imread(path)
    except Exception as exc:  # tifffile raises many types for damaged files
        raise DataError(f"{path}: unreadable TIFF ({first_line(exc)})") from exc
    finally:
        logger.removeHandler(collect)
        logger.propagate = propagate
    if image.size == 0:
        reason = collect.messages[0] if collect.messages else "no image data"
        raise DataError(f"{path}: unreadable TIFF, truncated or damaged ({reason})")
    for message in collect.messages:
        log.warning("%s: %s", path, message)
    return image


def read_pair(image_path: Path, mask_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One validated slice: image (H,W,3) uint8 and mask (H,W) bool (value > 127)."""
    image = read_tiff(image_path)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise DataError(
            f"{image_path}: expected an RGB uint8 image (H,W,3), got shape {image.shape} "
            f"dtype {image.dtype}"
        )
    mask = read_tiff(mask_path)
    if mask.ndim != 2 or mask.shape != image.shape[:2] or mask.dtype != np.uint8:
        raise DataError(
            f"{mask_path}: expected a uint8 greyscale mask of shape {image.shape[:2]}, got "
            f"shape {mask.shape} dtype {mask.dtype}"
        )
    values = np.unique(mask)
    if not np.isin(values, (0, 255)).all():
        bad = values[~np.isin(values, (0, 255))]
        raise DataError(f"{mask_path}: mask values must be 0 or 255, found {bad[:5].tolist()}")
    return image, mask > 127


def read_patient(folder: Path) -> Patient:
    """Read and validate every slice of one patient folder."""
    pairs = slice_pairs(folder)
    slices = [read_pair(image, mask) for _, image, mask in pairs]
    shapes = {image.shape for image, _ in slices}
    if len(shapes) > 1:
        raise DataError(f"{folder}: slices differ in size {sorted(shapes)}")
    return Patient(
        name=folder.name,
        slices=np.array([n for n, _, _ in pairs]),
        images=np.stack([image for image, _ in slices]),
        masks=np.stack([mask for _, mask in slices]),
        files=tuple(image for _, image, _ in pairs),
    )


def read_patients(root: str | Path) -> Iterator[Patient]:
    """Every patient under the root (a kaggle_3m folder or its parent), one at a time."""
    for folder in patient_dirs(root):
        yield read_patient(folder)
