"""The two private Hydra APIs segloss relies on, in one place; ``tests/test_hydra_private.py``
pins what is relied on, so a Hydra upgrade that changes them fails there first.

* ``hydra._internal.utils.run_and_report``: what ``@hydra.main`` runs composition and the job
  in. Hydra has no public hook to turn a composition error into one line and an exit status;
  :func:`wrap_run_and_report` wraps it.
* ``BasicSweeper.split_arguments``: the basic sweeper's expansion of parsed overrides into
  jobs (its order, its cartesian product). The sweep composes and checks every job before any
  starts and must list them exactly as the launcher will; :func:`split_sweep` calls it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from hydra.core.override_parser.types import Override

T = TypeVar("T")


def wrap_run_and_report(guard: Callable[[Callable[[], T]], Callable[[], T]]) -> None:
    """Make Hydra's ``run_and_report(func)`` run ``guard(func)`` instead (once per process)."""
    from hydra._internal import utils

    original = utils.run_and_report
    if getattr(original, "segloss", False):
        return

    def run_and_report(func: Callable[[], T]) -> T:
        return original(guard(func))

    run_and_report.segloss = True
    utils.run_and_report = run_and_report


def split_sweep(overrides: Sequence[Override]) -> list[list[str]]:
    """Every job's overrides, as the basic sweeper expands parsed ``overrides`` (no batching)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    return [list(job) for job in BasicSweeper.split_arguments(list(overrides), None)[0]]
