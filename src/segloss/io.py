"""Atomic writes: every output is built under a temporary sibling name and renamed into place.

Readers (and DVC) never see a half-written file or folder, and a failure (bad input, Ctrl-C)
leaves the previous output, or none, instead of a partial one.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` (file or folder) and move it onto ``path`` on success.

    The temporary name keeps ``path``'s suffix, so writers that append one (``np.savez``) agree.
    Nothing is created: the caller writes a file or makes a folder at the yielded path.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".tmp-{os.getpid()}-{final.name}")
    try:
        yield tmp
        if tmp.is_dir() and final.is_dir():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp)
        else:
            tmp.unlink(missing_ok=True)


def write_text(text: str, path: str | os.PathLike) -> None:
    """Write a text file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_csv(frame: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write a frame as CSV atomically (no index)."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def write_json(data: object, path: str | os.PathLike) -> None:
    """Write JSON atomically (indented, NaN as null)."""
    write_text(json.dumps(json_safe(data), indent=2) + "\n", path)


def json_safe(value: object) -> object:
    """NaN/inf -> None and numpy scalars -> Python, recursively (JSON has no NaN)."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value
