"""Stacks of 2-D masks or probability maps that may differ in size from image to image.

Ground floor, beside :mod:`segloss.metrics`. Native-resolution scoring compares each image
with its own mask at its own size, so the native masks of a data set with images of several
sizes cannot be one ``(N, H, W)`` array. A *stack* is either that array (every image the same
size: the common case, and the fast path everywhere) or a 1-D object array whose items are
the 2-D arrays. Both index alike (``stack[i]``, ``stack[rows]``, ``len``); what needs a
regular array works per :func:`blocks` (the rows of one size at a time) and puts the rows
back in order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd


def stack(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """2-D arrays (or stacks) as one stack: ``(N,H,W)`` when they share a size, else ragged."""
    items = [a for part in arrays for a in (part if np.ndim(part) != 2 else [part])]
    if len({a.shape for a in items}) <= 1:
        return np.stack(items) if items else np.zeros((0, 0, 0), bool)
    ragged = np.empty(len(items), dtype=object)
    ragged[:] = items
    return ragged


def is_ragged(masks: np.ndarray) -> bool:
    """True for a stack of several sizes (an object array of 2-D arrays)."""
    return masks.dtype == object


def blocks(masks: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(rows, (n,H,W) array)`` for each distinct size, in order of first appearance."""
    if not is_ragged(masks):
        yield np.arange(len(masks)), masks
        return
    shapes = [a.shape for a in masks]
    for shape in dict.fromkeys(shapes):
        rows = np.flatnonzero([s == shape for s in shapes])
        yield rows, np.stack(list(masks[rows]))


def regular(masks: np.ndarray, what: str) -> np.ndarray:
    """The stack as one ``(N,H,W)`` array; ValueError naming ``what`` if sizes differ."""
    if not is_ragged(masks):
        return masks
    sizes = sorted({a.shape for a in masks})
    if len(sizes) > 1:
        raise ValueError(f"{what}: images differ in size {sizes}")
    return np.stack(list(masks))


def apply(fn: Callable[[np.ndarray], np.ndarray], masks: np.ndarray) -> np.ndarray:
    """``fn`` (element-wise, e.g. a threshold) applied to a stack, keeping its layout."""
    return stack([fn(a) for a in masks]) if is_ragged(masks) else fn(masks)


def frame_by_block(
    fn: Callable[..., pd.DataFrame], first: np.ndarray, *others: np.ndarray
) -> pd.DataFrame:
    """``fn(block, *blocks)`` per size, one row per image, concatenated in the stack's order.

    ``others`` are stacks of the same images (targets of the predictions in ``first``).
    """
    if not is_ragged(first):
        return fn(first, *others)
    parts = []
    for rows, block in blocks(first):
        rest = [regular(s[rows], "frame_by_block") for s in others]
        parts.append(fn(block, *rest).set_axis(rows))
    return pd.concat(parts).sort_index().reset_index(drop=True)


def ravel(masks: np.ndarray) -> np.ndarray:
    """Every pixel of the stack, image after image, as one flat array."""
    if not is_ragged(masks):
        return masks.ravel()
    return np.concatenate([a.ravel() for a in masks]) if len(masks) else np.zeros(0)


def shapes(masks: np.ndarray) -> np.ndarray:
    """``(N, 2)`` int: each image's height and width."""
    if not is_ragged(masks):
        return np.tile(np.array(masks.shape[1:3], dtype=np.int64), (len(masks), 1))
    return np.array([a.shape for a in masks], dtype=np.int64).reshape(-1, 2)


def to_npz(masks: np.ndarray) -> dict[str, np.ndarray]:
    """Arrays to save a mask stack with: ``masks`` (N,H,W), or ``bits`` and ``sizes``."""
    if not is_ragged(masks):
        return {"masks": masks}
    return {"bits": pack(masks), "sizes": shapes(masks)}


def from_npz(arrays: Mapping[str, np.ndarray]) -> np.ndarray:
    """The stack :func:`to_npz` saved (``arrays``: the loaded npz file)."""
    return arrays["masks"] if "masks" in arrays else unpack(arrays["bits"], arrays["sizes"])


def pack(masks: np.ndarray) -> np.ndarray:
    """Boolean masks bit-packed into one flat uint8 array, each image starting on a byte."""
    if not len(masks):
        return np.zeros(0, np.uint8)
    return np.concatenate([np.packbits(np.asarray(m, bool).ravel()) for m in masks])


def unpack(bits: np.ndarray, sizes: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """The masks :func:`pack` packed, given each image's ``(height, width)`` (``sizes``);
    only ``rows`` of them when given."""
    sizes = np.asarray(sizes, dtype=np.int64).reshape(-1, 2)
    nbytes = -(-(sizes[:, 0] * sizes[:, 1]) // 8)
    starts = np.concatenate([[0], np.cumsum(nbytes)])
    if starts[-1] != len(bits):
        raise ValueError(f"{len(bits)} packed bytes, expected {starts[-1]} for {len(sizes)} masks")
    rows = np.arange(len(sizes)) if rows is None else np.asarray(rows, dtype=np.int64)
    masks = []
    for i in rows:
        h, w = int(sizes[i, 0]), int(sizes[i, 1])
        flat = np.unpackbits(bits[starts[i] : starts[i + 1]], count=h * w)
        masks.append(flat.reshape(h, w).astype(bool))
    return stack(masks) if masks else np.zeros((0, 0, 0), bool)
