"""What segloss relies on in Hydra's private APIs (segloss.hydra_private): a Hydra upgrade
that changes either fails here first."""

from __future__ import annotations

import inspect

import hydra
from hydra._internal import utils
from hydra.core.override_parser.overrides_parser import OverridesParser

from segloss import hydra_private


def test_hydra_main_runs_composition_inside_run_and_report():
    # @hydra.main -> _run_hydra, which composes inside run_and_report(lambda: ...)
    assert "_run_hydra" in inspect.getsource(hydra.main)
    assert "run_and_report(" in inspect.getsource(utils._run_hydra)


def test_wrapped_run_and_report_runs_the_guard_around_the_function():
    import segloss.cli  # noqa: F401  (installs the wrapper on import)

    assert getattr(utils.run_and_report, "segloss", False)
    calls = []
    hydra_private.wrap_run_and_report(lambda f: calls.append("again") or f)  # once only
    assert utils.run_and_report(lambda: 42) == 42 and calls == []


def test_split_sweep_is_the_basic_sweepers_cartesian_product_in_order():
    parsed = OverridesParser.create().parse_overrides(["loss=bce,dice", "seed=0,1", "x=1"])
    assert hydra_private.split_sweep(parsed) == [
        ["loss=bce", "seed=0", "x=1"],
        ["loss=bce", "seed=1", "x=1"],
        ["loss=dice", "seed=0", "x=1"],
        ["loss=dice", "seed=1", "x=1"],
    ]
