"""Reader for any folder of 2-D images with binary masks (``data=folder`` and its presets).

Images and masks are found by glob patterns under the data root; an image finds its mask by
a shared id that a regular expression (named group ``id``) takes from each file's stem. An
optional CSV gives each image a ``group`` (the patient: the unit of splits, folds and
statistics; default: each image is its own group) and a ``stratum`` (for stratified splits).
Each group becomes one :class:`segloss.data.kaggle.Patient` (its images in id order, index =
``slice``), so preparation, scoring and the report treat both layouts alike.

Images: RGB or grey (grey repeated to three channels), 8-bit, PNG / JPEG / TIFF / BMP. Masks:
foreground = value above ``mask_threshold``, or, without one, any non-zero value of a mask
with at most two values. 3-D volumes and multi-class masks are out of scope (one error line).
Every problem is a :class:`DataError` naming the file or setting.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from segloss.data.kaggle import Patient, read_tiff
from segloss.errors import ConfigError, DataError, first_line

SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


@dataclass(frozen=True)
class Layout:
    """Where a folder data set's files are and how they pair (the ``data`` settings)."""

    root: Path
    images: str  # glob under root
    masks: str  # glob under root
    image_id: str  # regex with a group ``id``, matched against the image file's stem
    mask_id: str  # the same for masks
    table: str | None  # CSV under root (or absolute) with per-image group / stratum
    table_id: str  # its column of ids
    table_group: str | None  # its column of groups (None: each image its own group)
    table_stratum: str | None  # its column of strata
    mask_threshold: float | None  # foreground above it; None: any non-zero (<= 2 values)


def _pattern(setting: str, value: str) -> re.Pattern:
    try:
        pattern = re.compile(value)
    except re.error as exc:
        raise ConfigError(f"{setting}={value!r}: not a regular expression ({exc})") from None
    if "id" not in pattern.groupindex:
        raise ConfigError(f"{setting}={value!r}: needs a named group (?P<id>...)")
    return pattern


def _some(names: list[str]) -> str:
    """The first three names and the count, for an error line."""
    shown = ", ".join(names[:3])
    return f"{shown} and {len(names) - 3} more ({len(names)})" if len(names) > 3 else shown


def find_files(root: Path, glob: str, regex: str, setting: str) -> dict[str, Path]:
    """``id -> file`` of the image files ``glob`` selects; each stem must match ``regex``
    (an nnU-Net case with a second channel file, ``_0001``, fails here)."""
    pattern = _pattern(f"data.{setting}_id", regex)
    files = sorted(p for p in root.glob(glob) if p.is_file() and p.suffix.lower() in SUFFIXES)
    if odd := [str(p) for p in files if pattern.fullmatch(p.stem) is None]:
        raise DataError(
            f"{root}: files match data.{setting}s={glob!r} but not data.{setting}_id={regex!r}: "
            f"{_some(odd)}"
        )
    found: dict[str, Path] = {}
    for path in files:
        if (key := pattern.fullmatch(path.stem)["id"]) in found:
            raise DataError(f"{path}: id {key!r} also names {found[key]} (data.{setting}_id)")
        found[key] = path
    if not found:
        raise DataError(
            f"{root}: no {setting}s match data.{setting}s={glob!r} with data.{setting}_id="
            f"{regex!r} (file types {', '.join(SUFFIXES)})"
        )
    return found


def pairs(layout: Layout) -> dict[str, tuple[Path, Path]]:
    """``id -> (image, mask)``; DataError for images without masks or the reverse."""
    if not layout.root.is_dir():
        raise DataError(f"{layout.root}: data root not found (data.root)")
    images = find_files(layout.root, layout.images, layout.image_id, "image")
    masks = find_files(layout.root, layout.masks, layout.mask_id, "mask")
    if lonely := sorted(images.keys() - masks.keys()):
        names = [str(images[k]) for k in lonely]
        raise DataError(f"{layout.root}: images without a mask: {_some(names)}")
    if lonely := sorted(masks.keys() - images.keys()):
        names = [str(masks[k]) for k in lonely]
        raise DataError(f"{layout.root}: masks without an image: {_some(names)}")
    return {key: (images[key], masks[key]) for key in sorted(images)}


# PIL modes converted on reading: images to RGB or grey; masks keep palette indices (a
# palette mask's values are its classes, not the palette's colours)
IMAGE_MODES = {"P": "RGB", "PA": "RGB", "RGBA": "RGB", "LA": "L", "CMYK": "RGB", "YCbCr": "RGB"}
MASK_MODES = {"1": "L", "LA": "L", "RGBA": "RGB", "CMYK": "RGB", "YCbCr": "RGB"}


def read_array(path: Path, modes: dict[str, str]) -> np.ndarray:
    """Decode an image file, converting the PIL ``modes`` given; an unreadable or truncated
    file is a one-line DataError."""
    if path.suffix.lower() in (".tif", ".tiff"):
        return read_tiff(path)
    try:
        with Image.open(path) as image:
            image.load()  # decodes now: a truncated file fails here, not later
            if image.mode in modes:
                image = image.convert(modes[image.mode])
            return np.asarray(image)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise DataError(f"{path}: unreadable image ({first_line(exc)})") from None


def read_image(path: Path) -> np.ndarray:
    """(H,W,3) uint8: RGB as it is, grey repeated to three channels."""
    image = read_array(path, IMAGE_MODES)
    if image.ndim == 3 and image.shape[2] == 4:
        image = image[..., :3]
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3:
        raise DataError(
            f"{path}: expected a 2-D RGB or grey image, got shape {image.shape} "
            "(3-D volumes are out of scope)"
        )
    if image.dtype != np.uint8:
        raise DataError(f"{path}: expected 8-bit pixels, got {image.dtype}; convert to 8-bit")
    return image


def read_mask(path: Path, shape: tuple[int, ...], threshold: float | None) -> np.ndarray:
    """(H,W) bool: value above ``threshold``, or non-zero in a mask of at most two values."""
    mask = read_array(path, MASK_MODES)
    if mask.ndim == 3 and (mask == mask[..., :1]).all():
        mask = mask[..., 0]  # a grey mask saved as RGB
    if mask.ndim != 2:
        raise DataError(
            f"{path}: expected a single-channel 2-D mask, got shape {mask.shape} "
            "(3-D volumes and colour-coded classes are out of scope)"
        )
    if mask.shape != shape:
        raise DataError(
            f"{path}: mask is {mask.shape[0]}x{mask.shape[1]}, its image "
            f"{shape[0]}x{shape[1]}; a mask must have its image's size"
        )
    if threshold is not None:
        return mask > threshold
    values = np.unique(mask)
    if len(values) > 2:
        raise DataError(
            f"{path}: mask has {len(values)} values {values[:5].tolist()}...: multi-class masks "
            "are out of scope; set data.mask_threshold for a binary mask saved with shades"
        )
    return mask > 0


def read_table(layout: Layout, ids: list[str]) -> pd.DataFrame:
    """Per image: ``group`` and ``stratum`` (from the CSV where configured)."""
    frame = pd.DataFrame({"id": ids, "group": ids, "stratum": ""})
    if layout.table is None:
        return frame
    path = Path(layout.table)
    path = path if path.is_absolute() else layout.root / path
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: unreadable CSV ({first_line(exc)}) (data.table)") from None
    columns = {
        "table_id": layout.table_id,
        "table_group": layout.table_group,
        "table_stratum": layout.table_stratum,
    }
    for setting, column in columns.items():
        if column is not None and column not in table.columns:
            raise DataError(
                f"{path}: no column {column!r} (data.{setting}; columns: "
                f"{', '.join(table.columns)})"
            )
    table = table.drop_duplicates().set_index(layout.table_id)
    if table.index.duplicated().any():
        twice = sorted(set(table.index[table.index.duplicated()]))
        raise DataError(f"{path}: ids listed twice with different values: {_some(twice)}")
    if missing := sorted(set(ids) - set(table.index)):
        raise DataError(f"{path}: images not listed: {_some(missing)}")
    if unknown := sorted(set(table.index) - set(ids)):
        raise DataError(f"{path}: ids with no image: {_some(unknown)}")
    if layout.table_group is not None:
        frame["group"] = table.loc[ids, layout.table_group].to_numpy()
    if layout.table_stratum is not None:
        frame["stratum"] = table.loc[ids, layout.table_stratum].to_numpy()
    if (blank := frame.loc[frame["group"] == "", "id"]).any():
        raise DataError(f"{path}: no group for {_some(sorted(blank))} (data.table_group)")
    return frame


def read_groups(layout: Layout) -> tuple[list[Patient], dict[str, str]]:
    """Every group as a :class:`Patient` (images in id order) and each group's stratum."""
    found = pairs(layout)
    table = read_table(layout, list(found))
    strata: dict[str, str] = {}
    patients = []
    for group, rows in table.groupby("group", sort=True):
        images, masks, files = [], [], []
        for key in rows["id"]:
            image_path, mask_path = found[key]
            image = read_image(image_path)
            masks.append(read_mask(mask_path, image.shape[:2], layout.mask_threshold))
            images.append(image)
            files.append(image_path)
        if len({image.shape for image in images}) > 1:
            raise DataError(
                f"{files[0]}: the images of group {group!r} differ in size "
                f"{sorted({image.shape[:2] for image in images})}; a group's images must share "
                "one size (its surface distances pool them)"
            )
        if len(set(rows["stratum"])) > 1:
            raise DataError(f"{files[0]}: the images of group {group!r} lie in several strata")
        strata[str(group)] = str(rows["stratum"].iloc[0])
        patients.append(
            Patient(
                name=str(group),
                slices=np.arange(len(images)),
                images=np.stack(images),
                masks=np.stack(masks),
                files=tuple(files),
            )
        )
    return patients, strata
