"""Helpers shared by the Hydra entry points in ``pipelines/``.

Importing this module (every entry point does) registers the config schemas
(:func:`segloss.config.register`), the ``segloss_folds`` resolver, and makes Hydra report a
composition error (an unknown key or group option, a wrong type) as one ``error:`` line with
exit status 2, as :func:`one_line_errors` does for a :class:`SeglossError`. :func:`stage`
turns an entry point's composed config into the typed settings, once.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import TypeVar

from omegaconf import DictConfig, OmegaConf

from segloss import config, hydra_private
from segloss.data.folds import register_resolver
from segloss.errors import SeglossError

T = TypeVar("T")

config.register()
# ``${segloss_folds:${cv.folds}}`` in conf/config.yaml's sweep: every entry point imports this.
register_resolver()


def one_line(exc: BaseException) -> str:
    """Hydra's multi-line composition error as one line: what failed, then why (the first
    line of the OmegaConf error: ``Key 'epochz' not in 'TrainConfig'``), and its
    ``full_key``; for an unknown group option, the options there are."""
    text = str(exc) + (f"\n{exc.__cause__}" if exc.__cause__ is not None else "")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    if "Available options" in text:
        # the options, less the schemas (base_<name>: segloss.config) and the search path
        skip = ("Config search", "provider=", "base_")
        options = [line for line in lines[1:] if not line.startswith(skip)]
        return f"{lines[0]}; {options[0]} {', '.join(options[1:])}" if options else lines[0]
    detail = ("full_key:", "reference_type=", "object_type=", "To append")
    said = [line.rstrip(".:") for line in lines if not line.startswith(detail)][:2]
    key = next((line for line in lines if line.startswith("full_key:")), "")
    return ": ".join(said) + (f" ({key})" if key else "")


def _composition_errors() -> tuple[type[BaseException], ...]:
    from hydra.errors import (
        ConfigCompositionException,
        MissingConfigException,
        OverrideParseException,
    )

    return ConfigCompositionException, MissingConfigException, OverrideParseException


def _one_line_composition_errors(func: Callable[[], T]) -> Callable[[], T]:
    """``func`` with a Hydra composition error as one ``error:`` line and exit status 2
    (``HYDRA_FULL_ERROR=1`` keeps Hydra's own report; anything else: Hydra's, unchanged)."""

    def guarded() -> T:
        try:
            return func()
        except _composition_errors() as exc:
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            print(f"error: {one_line(exc)}", file=sys.stderr)
            sys.exit(2)

    return guarded


hydra_private.wrap_run_and_report(_one_line_composition_errors)


def one_line_errors(fn: Callable[..., T]) -> Callable[..., T]:
    """``fn`` with a :class:`SeglossError` printed as ``error: <message>``, exit status 2.

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


def stage(fn: Callable[[config.Config], T]) -> Callable[[DictConfig], T]:
    """An entry point taking the typed settings: under ``@hydra.main``, the composed config
    is checked and built into :class:`segloss.config.Config` once (every range check), printed
    as a tree with ``print_config``, and ``fn(settings)`` runs with one-line errors."""

    @functools.wraps(fn)
    @one_line_errors
    def main(cfg: DictConfig) -> T:
        settings = config.validate(cfg)
        if settings.print_config:
            print_config(cfg)
        return fn(settings)

    return main


def print_config(cfg: DictConfig, title: str = "config") -> None:
    """Print the composed config as a tree (rich), as lightning-hydra-template does: one
    branch per top-level group, its settings as YAML. Interpolations are resolved where they
    can be (``${now:...}`` and the like stay as written)."""
    import rich
    import rich.syntax
    import rich.tree

    tree = rich.tree.Tree(title, style="bold")
    for key in cfg:
        try:
            value = OmegaConf.select(cfg, str(key), throw_on_resolution_failure=True)
        except Exception:  # an interpolation only Hydra's runtime resolves
            value = cfg._get_node(key)._value()
        if OmegaConf.is_config(value):
            text = OmegaConf.to_yaml(value, resolve=_resolvable(value))
        else:
            text = str(value)
        branch = tree.add(str(key), style="bold cyan")
        branch.add(rich.syntax.Syntax(text.rstrip(), "yaml", theme="ansi_dark"))
    rich.print(tree)


def _resolvable(node: DictConfig) -> bool:
    try:
        OmegaConf.to_container(node, resolve=True)
    except Exception:
        return False
    return True
