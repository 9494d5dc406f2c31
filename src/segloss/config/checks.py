"""Helpers of the schema: value tests, the one-line error, and mapping -> dataclass.

Range checks live in each schema's ``__post_init__`` and raise :class:`ConfigError` with the
setting's name. OmegaConf does not run ``__post_init__`` at composition (it reads the fields
of the class), so :func:`from_mapping` builds the dataclass from a plain mapping, which runs
the checks; missing keys take the schema's defaults, unknown keys are an error. Not
``OmegaConf.to_object``, which also runs them: it raises on every ``???`` (``data.root`` of
``data=lgg`` is an error only in the stage that reads it), and the stored settings of a
checkpoint are plain mappings that must pass the same checks.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Mapping
from typing import TYPE_CHECKING, TypeVar

from omegaconf import MISSING

from segloss.errors import ConfigError

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T")


def is_int(value: object) -> bool:
    """A whole number (``True``/``False`` are not)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> bool:
    """An int or float (not a bool, not NaN)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and value == value


def is_set(value: object) -> bool:
    """Neither null, empty nor OmegaConf's ``???`` (MISSING)."""
    return value not in (None, "", MISSING)


def int_at_least(value: object, low: int) -> bool:
    return is_int(value) and value >= low


def positive(value: object) -> bool:
    """A finite number > 0."""
    return is_number(value) and 0 < value < math.inf


def require(ok: bool, message: str) -> None:
    """Raise :class:`ConfigError` with ``message`` (``<setting> ...: <what is wrong>``)."""
    if not ok:
        raise ConfigError(message)


def rule(prefix: str, value: object, ok: bool, expected: str) -> None:
    """``<prefix> must be <expected>, got <value!r>`` unless ``ok``."""
    require(ok, f"{prefix} must be {expected}, got {value!r}")


def from_mapping(cls: type[T], values: Mapping[str, object] | None, prefix: str) -> T:
    """``cls`` built from ``values`` (nested mappings become the nested schemas), every
    ``__post_init__`` check run; ``ConfigError`` for unknown keys, and for absent ones that
    have no default (``MISSING``: their value lives in conf/)."""
    values = dict(values or {})
    fields = dataclasses.fields(cls)
    names = [f.name for f in fields]
    if unknown := sorted(set(values) - set(names)):
        raise ConfigError(
            f"{prefix}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(names)}"
        )
    if absent := [f.name for f in fields if f.name not in values and f.default == MISSING]:
        raise ConfigError(f"{prefix}: setting(s) {', '.join(absent)} not set")
    hints = typing.get_type_hints(cls)
    for name, value in values.items():
        kind = hints[name]
        if dataclasses.is_dataclass(kind) and isinstance(value, Mapping):
            values[name] = from_mapping(kind, value, f"{prefix}.{name}")
    return cls(**values)


def plain(obj: DataclassInstance) -> dict[str, object]:
    """A schema instance as a plain dict (nested schemas too)."""
    return dataclasses.asdict(obj)
