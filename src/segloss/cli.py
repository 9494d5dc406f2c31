"""Helpers shared by the Hydra entry points in ``pipelines/``."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from segloss.data.folds import register_resolver
from segloss.errors import SeglossError

T = TypeVar("T")

# ``${segloss_folds:${cv.folds}}`` in conf/config.yaml's sweep: every entry point imports this.
register_resolver()


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


def print_config(cfg: Any, title: str = "config") -> None:
    """Print the composed config as a tree (rich), as lightning-hydra-template does: one
    branch per top-level group, its settings as YAML. Interpolations are resolved where they
    can be (``${now:...}`` and the like stay as written)."""
    import rich
    import rich.syntax
    import rich.tree
    from omegaconf import OmegaConf

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


def _resolvable(node: Any) -> bool:
    from omegaconf import OmegaConf

    try:
        OmegaConf.to_container(node, resolve=True)
    except Exception:
        return False
    return True
