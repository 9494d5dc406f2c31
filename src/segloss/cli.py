"""Helpers shared by the Hydra entry points in ``pipelines/``."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import TypeVar

from segloss.errors import SeglossError

T = TypeVar("T")


def one_line_errors(fn: Callable[..., T]) -> Callable[..., T]:
    """Print a :class:`SeglossError` as ``error: <message>`` and exit with status 2.

    Apply it under ``@hydra.main`` so Hydra's long traceback is kept for real bugs only.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except SeglossError as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)

    return wrapper
