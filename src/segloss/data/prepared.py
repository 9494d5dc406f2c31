"""The prepared data set: the contract between the `prepare` stage and everything after it.

Layout of a prepared folder (default ``data/prepared/``)::

    images_<split>.npy   uint8 (N, H, W, 3)  channels pre-contrast, FLAIR, post-contrast,
                         each scaled to 0..255 as documented in ``meta.json["normalisation"]``
    masks_<split>.npy    uint8 (N, H, W)     values {0, 1}
    manifest.csv         one row per slice: patient,slice,split,tumour_pixels,height,width,index
                         (``index`` is the row of that slice in the split's arrays)
    meta.json            source, image_size, splits (patients per split), data_hash, ...

Images are stored channels-last so that ``torch.from_numpy(a).permute(0, 3, 1, 2)`` is an
NCHW view with channels_last strides, which is the fast layout for convolutions on CPU.
Arrays are memory-mapped on load: training reads them without decoding any TIFF.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from segloss.errors import DataError, SeglossError
from segloss.io import atomic_path

SPLITS = ("train", "val", "test")
MANIFEST_COLUMNS = ["patient", "slice", "split", "tumour_pixels", "height", "width", "index"]


@dataclass(frozen=True)
class PreparedSplit:
    """One split: images (N,H,W,3) uint8, masks (N,H,W) uint8 {0,1}, and each slice's id."""

    images: np.ndarray
    masks: np.ndarray
    patients: np.ndarray  # (N,) str
    slices: np.ndarray  # (N,) int

    def __post_init__(self) -> None:
        n = len(self.images)
        if not (len(self.masks) == len(self.patients) == len(self.slices) == n):
            raise ValueError("PreparedSplit: images, masks, patients and slices differ in length")

    def __len__(self) -> int:
        return len(self.images)


class MissingPreparedData(SeglossError, FileNotFoundError):
    """Raised when the prepared data set is absent: the prepare stage has not run."""


def _missing(path: Path) -> MissingPreparedData:
    return MissingPreparedData(
        f"{path} not found: run the prepare stage first "
        "(`dvc repro prepare` or `python pipelines/prepare.py`)"
    )


def _damaged(path: Path, what: str) -> DataError:
    return DataError(f"{path}: {what}; rerun the prepare stage (`dvc repro prepare`)")


def first_line(exc: BaseException) -> str:
    """An exception's first line."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def load_meta(prepared_dir: str | os.PathLike) -> dict:
    """Read ``meta.json`` of a prepared folder."""
    path = Path(prepared_dir) / "meta.json"
    if not path.is_file():
        raise _missing(path)
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _damaged(path, f"not valid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise _damaged(path, f"expected a JSON object, got {type(meta).__name__}")
    return meta


def load_manifest(prepared_dir: str | os.PathLike) -> pd.DataFrame:
    """Read ``manifest.csv`` (patient ids as strings)."""
    path = Path(prepared_dir) / "manifest.csv"
    if not path.is_file():
        raise _missing(path)
    try:
        manifest = pd.read_csv(path, dtype={"patient": str})
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise _damaged(path, f"unreadable CSV ({first_line(exc)})") from None
    if missing := [c for c in MANIFEST_COLUMNS if c not in manifest.columns]:
        raise _damaged(path, f"columns {', '.join(missing)} missing")
    return manifest


def load_split(prepared_dir: str | os.PathLike, split: str, *, mmap: bool = True) -> PreparedSplit:
    """Load one split; arrays are memory-mapped unless ``mmap=False``."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    root = Path(prepared_dir)
    rows = load_manifest(root).query("split == @split").sort_values("index")
    arrays = {}
    for kind in ("images", "masks"):
        path = root / f"{kind}_{split}.npy"
        if not path.is_file():
            raise _missing(path)
        try:
            arrays[kind] = np.load(path, mmap_mode="r" if mmap else None)
        except (ValueError, OSError, EOFError) as exc:
            raise _damaged(path, f"unreadable array ({first_line(exc)})") from None
    if len(arrays["images"]) != len(rows):
        raise SeglossError(
            f"{root / f'images_{split}.npy'}: {len(arrays['images'])} slices but manifest.csv "
            f"lists {len(rows)} for split {split!r}; rerun the prepare stage"
        )
    return PreparedSplit(
        images=arrays["images"],
        masks=arrays["masks"],
        patients=rows["patient"].to_numpy(dtype=str),
        slices=rows["slice"].to_numpy(dtype=int),
    )


def write_prepared(
    out_dir: str | os.PathLike, splits: Mapping[str, PreparedSplit], meta: Mapping
) -> Path:
    """Write a prepared folder atomically: build it in a temporary sibling, then rename.

    ``meta`` is completed with ``image_size``, ``splits`` (patients per split) and ``data_hash``
    (a SHA-256 over every array, so a model can be matched to the data it was trained on).
    """
    out = Path(out_dir)
    with atomic_path(out) as tmp:
        tmp.mkdir()
        digest = hashlib.sha256()
        rows = []
        patients_per_split = {}
        sizes = set()
        for name in SPLITS:
            part = splits[name]
            images = np.ascontiguousarray(part.images, dtype=np.uint8)
            masks = np.ascontiguousarray(part.masks, dtype=np.uint8)
            if images.ndim != 4 or images.shape[3] != 3 or masks.shape != images.shape[:3]:
                raise ValueError(
                    f"split {name!r}: images must be (N,H,W,3) and masks (N,H,W), got "
                    f"{images.shape} and {masks.shape}"
                )
            if masks.size and masks.max() > 1:
                raise ValueError(f"split {name!r}: masks must hold only 0 and 1")
            sizes.update(images.shape[1:3])
            np.save(tmp / f"images_{name}.npy", images)
            np.save(tmp / f"masks_{name}.npy", masks)
            digest.update(name.encode())
            digest.update(images.tobytes())
            digest.update(masks.tobytes())
            patients_per_split[name] = sorted(set(map(str, part.patients)))
            for i, (patient, slice_) in enumerate(zip(part.patients, part.slices, strict=True)):
                rows.append(
                    (str(patient), int(slice_), name, int(masks[i].sum()), *masks.shape[1:3], i)
                )
        manifest = pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
        manifest.to_csv(tmp / "manifest.csv", index=False)
        full_meta = {
            **dict(meta),
            "image_size": int(max(sizes)) if sizes else None,
            "splits": patients_per_split,
            "data_hash": digest.hexdigest()[:16],
        }
        (tmp / "meta.json").write_text(json.dumps(full_meta, indent=2) + "\n")
    return out
