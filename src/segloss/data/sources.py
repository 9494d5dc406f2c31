"""Where the real LGG data comes from: a folder, the Kaggle zip, or a kagglehub download.

``data.root`` may be

* a ``kaggle_3m`` folder, or any folder holding one or more ``kaggle_3m`` copies up to two
  levels down (the unpacked Kaggle download holds ``kaggle_3m/`` and an identical second copy
  under ``lgg-mri-segmentation/kaggle_3m/``);
* the Kaggle zip itself (``archive.zip``): its ``kaggle_3m`` members are unpacked once into
  ``data.cache/<zip name>-<key>/`` (key from the zip's size and modification time), written
  atomically, and reused after that.

A patient found in several copies is read once when its files are byte-identical; copies that
differ are an error naming both paths. ``data.csv`` and README files are not slices (only
``<PATIENT>/*.tif`` files are read). ``data.download=true`` fetches the set with ``kagglehub``
into kagglehub's cache and uses that; without network or credentials it fails with one line
that says how to download by hand.
"""

from __future__ import annotations

import filecmp
import hashlib
import zipfile
from pathlib import Path, PurePosixPath

from segloss.errors import DataError, first_line
from segloss.io import atomic_path

KAGGLE_DATASET = "mateuszbuda/lgg-mri-segmentation"
KAGGLE_URL = f"https://www.kaggle.com/datasets/{KAGGLE_DATASET}"
BY_HAND = (
    f"download it by hand from {KAGGLE_URL} (archive.zip) and pass "
    "data.root=<archive.zip or the folder it unpacks to>"
)


def download(dataset: str = KAGGLE_DATASET) -> Path:
    """Fetch the set with kagglehub (its own cache); any failure is one DataError line."""
    try:
        import kagglehub

        return Path(kagglehub.dataset_download(dataset))
    except Exception as exc:  # no network, no credentials, missing package: all one message
        raise DataError(
            f"data.download: kagglehub could not fetch {dataset} ({type(exc).__name__}: "
            f"{first_line(exc)[:200]}); {BY_HAND}"
        ) from None


def _zip_members(archive: zipfile.ZipFile, path: Path) -> list[zipfile.ZipInfo]:
    """The ``.../kaggle_3m/<PATIENT>/<file>.tif`` members; none at all: not the LGG set."""
    members = []
    for info in archive.infolist():
        parts = PurePosixPath(info.filename).parts
        if info.is_dir() or ".." in parts or info.filename.startswith("/"):
            continue
        if len(parts) >= 3 and parts[-3] == "kaggle_3m" and parts[-1].lower().endswith(".tif"):
            members.append(info)
    if not members:
        raise DataError(
            f"{path}: not the Kaggle LGG set (no kaggle_3m/<PATIENT>/*.tif inside); {BY_HAND}"
        )
    return members


def unpack_zip(path: Path, cache: Path) -> Path:
    """Unpack the zip's kaggle_3m members into the cache once (atomically); the folder."""
    stat = path.stat()
    key = hashlib.sha256(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    out = Path(cache) / f"{path.stem}-{key.hexdigest()[:12]}"
    if out.is_dir():
        return out
    try:
        with zipfile.ZipFile(path) as archive:
            members = _zip_members(archive, path)
            with atomic_path(out) as tmp:
                tmp.mkdir()
                for info in members:
                    archive.extract(info, tmp)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError) as exc:
        raise DataError(
            f"{path}: corrupt or unreadable zip ({first_line(exc)}); {BY_HAND}"
        ) from None
    return out


def kaggle_roots(root: Path) -> list[Path]:
    """Every ``kaggle_3m`` copy under ``root`` (itself, or up to two levels down), sorted."""
    if root.name == "kaggle_3m":
        return [root]
    found = sorted(p for pattern in ("kaggle_3m", "*/kaggle_3m") for p in root.glob(pattern))
    return [p for p in found if p.is_dir()] or [root]


def _same_files(a: Path, b: Path) -> bool:
    names_a = sorted(p.name for p in a.iterdir() if p.is_file())
    names_b = sorted(p.name for p in b.iterdir() if p.is_file())
    return names_a == names_b and all(
        filecmp.cmp(a / name, b / name, shallow=False) for name in names_a
    )


def patient_folders(root: str | Path) -> list[Path]:
    """One folder per patient, sorted by name, over every ``kaggle_3m`` copy under ``root``.

    A patient in several copies must have byte-identical files (read once, from the first
    copy); otherwise DataError naming both folders.
    """
    base = Path(root)
    if not base.is_dir():
        raise DataError(f"{base}: data root not found (expected a kaggle_3m folder or its parent)")
    chosen: dict[str, Path] = {}
    for copy in kaggle_roots(base):
        for folder in sorted(p for p in copy.iterdir() if p.is_dir()):
            if folder.name.startswith("."):
                continue
            first = chosen.setdefault(folder.name, folder)
            if first != folder and not _same_files(first, folder):
                raise DataError(
                    f"{folder}: patient {folder.name} also in {first} with different files; "
                    "keep one copy"
                )
    if not chosen:
        raise DataError(
            f"{base}: no patient folders (expected kaggle_3m/<PATIENT>/<PATIENT>_<n>.tif)"
        )
    return [chosen[name] for name in sorted(chosen)]


def resolve_root(root: str | Path, cache: str | Path, *, fetch: bool) -> Path:
    """The folder to read: downloaded (``fetch``: ``data.download``), unpacked from a zip
    into ``cache`` (``data.cache``), or ``root`` (``data.root``) as it is."""
    folder = download() if fetch else Path(str(root))
    if folder.is_file():
        if not zipfile.is_zipfile(folder):
            raise DataError(f"{folder}: not a zip archive nor a folder; {BY_HAND}")
        folder = unpack_zip(folder, Path(str(cache)))
    if not folder.exists():
        raise DataError(
            f"{folder}: data root not found (expected a kaggle_3m folder or its parent)"
        )
    return folder
