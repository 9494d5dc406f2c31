"""The import graph of src/segloss (docs/architecture.md): no circle, and no ground-floor
module importing from a floor above it. Read from the source with ``ast`` (every import
statement, in functions too), so a circle fails here before it fails at import time."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
# docs/architecture.md's floors: what the ground floor must never import
UPPER = (
    "segloss.training",
    "segloss.evaluation",
    "segloss.report",
    "segloss.sweep",
    "segloss.cli",
    "segloss.hydra_private",
)
GROUND = (
    "segloss.config",
    "segloss.data",
    "segloss.losses",
    "segloss.models",
    "segloss.metrics",
    "segloss.calibration",
    "segloss.scoring",
    "segloss.stacks",
    "segloss.stats",
    "segloss.tracking",
    "segloss.fingerprint",
    "segloss.processes",
    "segloss.io",
    "segloss.errors",
)


def _module(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module(p): p for p in (SRC / "segloss").rglob("*.py")}


def _imported(name: str) -> set[str]:
    """The segloss modules ``name`` imports (a name from a package counts as the package,
    unless it is a submodule)."""
    path = MODULES[name]
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            names = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names
            ]
        else:
            continue
        for target in names:  # "from pkg import name": the submodule, else the package
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target.startswith("segloss") and target != name:
                found.add(target)
    return found


GRAPH = {name: _imported(name) for name in MODULES}


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def test_the_graph_sees_known_imports():
    assert "segloss.stacks" in GRAPH["segloss.scoring"]
    assert "segloss.errors" in GRAPH["segloss.data.folder"]
    assert "segloss.tracking" in GRAPH["segloss.sweep.callback"]  # an import inside a function


def test_no_import_circle_in_segloss():
    try:
        graphlib.TopologicalSorter(GRAPH).prepare()
    except graphlib.CycleError as exc:
        pytest.fail(f"import circle: {' -> '.join(exc.args[1])}")


def test_the_ground_floor_imports_nothing_above_it():
    upward = {
        name: sorted(t for t in targets if _within(t, UPPER))
        for name, targets in GRAPH.items()
        if _within(name, GROUND)
    }
    assert {name: found for name, found in upward.items() if found} == {}


def test_tracking_sits_at_the_bottom():
    """segloss.tracking (the one package importing mlflow) takes tables and paths it is
    given; of segloss it imports only itself, the errors and the process checks (whether a
    run's process is alive)."""
    found = {
        target
        for name, targets in GRAPH.items()
        if _within(name, ("segloss.tracking",))
        for target in targets
        if not _within(target, ("segloss.tracking", "segloss.errors", "segloss.processes"))
    }
    assert found == set()


def test_no_private_name_is_imported_from_another_module():
    """``from segloss.x import _name`` across modules: a private name used as public."""
    found = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("segloss"):
                found += [f"{name}: {a.name}" for a in node.names if a.name.startswith("_")]
    assert found == []


def test_no_ground_floor_parameter_is_typed_any():
    """The building blocks take typed settings and values (``Config`` groups, dataclasses,
    arrays, ``Mapping[str, object]`` for tags and stored results), never ``Any``."""
    found = []
    for name, path in MODULES.items():
        if not _within(name, GROUND):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                args = node.args
                every = [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]
                found += [
                    f"{name}.{node.name}({arg.arg}: {ast.unparse(arg.annotation)})"
                    for arg in every
                    if arg is not None
                    and arg.annotation is not None
                    and "Any" in ast.unparse(arg.annotation)
                ]
    assert found == []
