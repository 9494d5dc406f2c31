"""The prepared data set: the contract between the `prepare` stage and everything after it.

Layout of a prepared folder (default ``data/prepared/``)::

    images_<split>.npy   uint8 (N, H, W, 3)  channels pre-contrast, FLAIR, post-contrast,
                         each scaled to 0..255 as documented in ``meta.json["normalisation"]``
    masks_<split>.npy    uint8 (N, H, W)     values {0, 1}
    native_<split>.npy   uint8, flat: every mask at its source resolution, bit-packed, each
                         starting on a byte (:func:`segloss.stacks.pack`); each slice's size
                         is in the manifest (``native_height``, ``native_width``): images of
                         one data set may differ in size. Read with :func:`load_native`.
    manifest.csv         one row per slice: patient,slice,split,tumour_pixels,height,width,
                         index,native_height,native_width (``index`` is the row of that slice
                         in the split's arrays; height/width the prepared size)
    meta.json            source, image_size, splits (patients per split), data_hash, ...

With cross-validation (``meta.json["cv"]["folds"] >= 2``) the arrays hold one pool, split
``all``, and ``meta.json["folds"]`` lists each fold's train/val/test patients;
``load_split(dir, role, fold=f)`` picks fold ``f``'s rows of the pool (and the manifest has a
``fold`` column: the fold that tests the patient).

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

from segloss.config.data import SPLITS
from segloss.errors import DataError, SeglossError, first_line
from segloss.io import atomic_path
from segloss.stacks import pack, shapes, unpack

POOL = "all"  # the one split of a cross-validated folder
MANIFEST_COLUMNS = [
    "patient",
    "slice",
    "split",
    "tumour_pixels",
    "height",
    "width",
    "index",
    "native_height",
    "native_width",
]
NATIVE_SIZE = ["native_height", "native_width"]


@dataclass(frozen=True)
class PreparedSplit:
    """One split: images (N,H,W,3) uint8, masks (N,H,W) uint8 {0,1}, and each slice's id."""

    images: np.ndarray
    masks: np.ndarray
    patients: np.ndarray  # (N,) str
    slices: np.ndarray  # (N,) int
    native: np.ndarray | None = None  # the masks at the source size: a segloss.stacks stack

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


def n_folds(meta: Mapping) -> int:
    """Cross-validation folds of a prepared folder (1: a single train/val/test split)."""
    return int((meta.get("cv") or {}).get("folds", 1))


def fold_splits(meta: Mapping, fold: int | None) -> dict[str, list[str]]:
    """Patients per role (train/val/test) of ``fold``, or of the single split (fold None)."""
    folds = n_folds(meta)
    if folds < 2:
        if fold is not None:
            raise SeglossError(
                f"cv.fold={fold}, but the prepared data has no folds: prepare it with "
                "cv.folds=K (K >= 2) or leave cv.fold unset"
            )
        return dict(meta.get("splits") or {})
    if fold is None or not 0 <= int(fold) < folds:
        raise SeglossError(
            f"cv.fold={fold!r}: the prepared data has {folds} folds; choose 0..{folds - 1}"
        )
    return dict(meta["folds"][int(fold)])


def _load_array(path: Path, mmap: bool) -> np.ndarray:
    if not path.is_file():
        raise _missing(path)
    try:
        return np.load(path, mmap_mode="r" if mmap else None)
    except (ValueError, OSError, EOFError) as exc:
        raise _damaged(path, f"unreadable array ({first_line(exc)})") from None


def _rows(root: Path, split: str, fold: int | None) -> tuple[pd.DataFrame, str, pd.DataFrame]:
    """The manifest rows of a split (sorted by index), the array file's split name, and the
    whole manifest (read once)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    manifest = load_manifest(root)
    meta = load_meta(root) if fold is not None or (manifest["split"] == POOL).any() else {}
    if n_folds(meta) < 2:
        fold_splits(meta, fold)  # a fold on a folder without folds is an error
        return manifest.query("split == @split").sort_values("index"), split, manifest
    members = set(fold_splits(meta, fold)[split])
    pool = manifest[(manifest["split"] == POOL) & manifest["patient"].isin(members)]
    return pool.sort_values("index"), POOL, manifest


def load_split(
    prepared_dir: str | os.PathLike, split: str, *, mmap: bool = True, fold: int | None = None
) -> PreparedSplit:
    """Load one split (of fold ``fold`` where the folder is cross-validated).

    Arrays are memory-mapped unless ``mmap=False``; a fold's rows of the pool are a copy.
    """
    root = Path(prepared_dir)
    rows, name, manifest = _rows(root, split, fold)
    arrays = {kind: _load_array(root / f"{kind}_{name}.npy", mmap) for kind in ("images", "masks")}
    expected = len(rows) if name == split else int((manifest["split"] == POOL).sum())
    if len(arrays["images"]) != expected:
        raise SeglossError(
            f"{root / f'images_{name}.npy'}: {len(arrays['images'])} slices but manifest.csv "
            f"lists {expected} for split {name!r}; rerun the prepare stage"
        )
    if name != split:
        index = rows["index"].to_numpy()
        arrays = {kind: np.asarray(a[index]) for kind, a in arrays.items()}
    return PreparedSplit(
        images=arrays["images"],
        masks=arrays["masks"],
        patients=rows["patient"].to_numpy(dtype=str),
        slices=rows["slice"].to_numpy(dtype=int),
    )


def _unpack_native(root: Path, name: str, rows: pd.DataFrame, manifest: pd.DataFrame) -> np.ndarray:
    """The native masks of ``rows`` (rows of ``manifest`` in the array file of ``name``)."""
    path = root / f"native_{name}.npy"
    every = manifest.query("split == @name").sort_values("index")
    try:
        return unpack(_load_array(path, mmap=True), every[NATIVE_SIZE], rows["index"].to_numpy())
    except ValueError as exc:
        raise _damaged(path, str(exc)) from None


def load_native(
    prepared_dir: str | os.PathLike, split: str, *, fold: int | None = None
) -> np.ndarray:
    """A split's masks at the source resolution: a :mod:`segloss.stacks` stack of bool masks
    (one ``(N, H0, W0)`` array when every image has the same size)."""
    root = Path(prepared_dir)
    rows, name, manifest = _rows(root, split, fold)
    return _unpack_native(root, name, rows, manifest)


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
        sizes, native_sizes = set(), set()
        for name in splits:
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
            native = masks.astype(bool) if part.native is None else part.native
            if len(native) != len(masks):
                raise ValueError(f"split {name!r}: {len(native)} native masks, {len(masks)} slices")
            native_size = shapes(native)
            native_sizes.update(map(tuple, native_size.tolist()))
            bits = pack(native)
            np.save(tmp / f"native_{name}.npy", bits)
            digest.update(bits.tobytes())
            patients_per_split[name] = sorted(set(map(str, part.patients)))
            for i, (patient, slice_) in enumerate(zip(part.patients, part.slices, strict=True)):
                rows.append(
                    (str(patient), int(slice_), name, int(masks[i].sum()), *masks.shape[1:3], i)
                    + tuple(int(v) for v in native_size[i])
                )
        manifest = pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
        if meta.get("folds"):
            test_fold = {p: f for f, roles in enumerate(meta["folds"]) for p in roles["test"]}
            manifest["fold"] = manifest["patient"].map(test_fold)
            digest.update(json.dumps(meta["folds"], sort_keys=True).encode())
        manifest.to_csv(tmp / "manifest.csv", index=False)
        full_meta = {
            **dict(meta),
            # one [H0, W0] where every image has the same source size, else null
            "native_size": list(native_sizes.pop()) if len(native_sizes) == 1 else None,
            "image_size": int(max(sizes)) if sizes else None,
            "splits": patients_per_split,
            "data_hash": digest.hexdigest()[:16],
        }
        (tmp / "meta.json").write_text(json.dumps(full_meta, indent=2) + "\n")
    return out


def load_tested(prepared_dir: str | os.PathLike) -> tuple[PreparedSplit, np.ndarray]:
    """Every tested slice with its masks at the source resolution (a stack of bool masks).

    Without folds: the test split; with folds: the whole pool (every patient is tested once),
    in the arrays' order.
    """
    root = Path(prepared_dir)
    if n_folds(load_meta(root)) < 2:
        return load_split(root, "test"), load_native(root, "test")
    manifest = load_manifest(root)
    rows = manifest.query("split == @POOL").sort_values("index")
    arrays = {k: _load_array(root / f"{k}_{POOL}.npy", True) for k in ("images", "masks")}
    split = PreparedSplit(
        arrays["images"],
        arrays["masks"],
        rows["patient"].to_numpy(dtype=str),
        rows["slice"].to_numpy(dtype=int),
    )
    return split, _unpack_native(root, POOL, rows, manifest)
