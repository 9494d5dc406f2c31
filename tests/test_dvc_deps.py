"""dvc.yaml lists, for every stage, all the code and config the stage reads.

The code a stage runs is derived from its entry point's imports (every ``segloss`` module it
reaches, read with :mod:`ast`, lazy imports inside functions included), so a new import
cannot escape ``deps``. The config it reads is derived the same way: the ``cfg.<group>``
attributes its entry point touches, or every group for an entry point that hands the whole
config on (the train stage, less the groups :data:`segloss.training.NOT_FINGERPRINTED` keeps
out of a model); each group's file that the default composition selects (every swept
``loss``) must be a dep or a params file of the stage.
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest
import yaml
from helpers import compose

from segloss.training import NOT_FINGERPRINTED

REPO = Path(__file__).resolve().parents[1]
STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def _imports(tree: ast.AST) -> list[str]:
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
            names += [f"{node.module}.{a.name}" for a in node.names]
    return [n for n in names if n.split(".")[0] == "segloss"]


def _module_file(name: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(name)
    except (ModuleNotFoundError, ValueError):  # `from segloss.x import function`
        return None
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    return Path(spec.origin).resolve()


def code_files(script: Path) -> set[Path]:
    """The entry point and every segloss source file it reaches, with package __init__s."""
    seen: set[Path] = {script.resolve()}
    todo = _imports(ast.parse(script.read_text()))
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__
            path = _module_file(".".join(parts[:i]))
            if path is not None and path not in seen:
                seen.add(path)
                todo += _imports(ast.parse(path.read_text()))
    return seen


def config_groups(script: Path) -> set[str] | None:
    """Top-level config keys the entry point reads as ``settings.<key>``; None for all of them
    (it hands the whole ``settings`` to a function of its own, as train.py's ``_train``)."""
    tree = ast.parse(script.read_text())
    local = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
    keys = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "settings"
        ):
            keys.add(node.attr)
        if (
            isinstance(node, ast.Call)
            and getattr(node.func, "id", "") in local
            and any(isinstance(arg, ast.Name) and arg.id == "settings" for arg in node.args)
        ):
            return None
    return keys


def _covered(path: Path, stage: dict) -> bool:
    declared = [REPO / d for d in stage.get("deps", [])]
    for entry in stage.get("params", []):
        declared.append(REPO / (next(iter(entry)) if isinstance(entry, dict) else entry))
    return any(path == d or d in path.parents for d in declared)


def _script(stage: dict) -> Path:
    words = stage["cmd"].split()
    return REPO / next(w for w in words if w.startswith("pipelines/") and w.endswith(".py"))


@pytest.fixture(scope="module")
def composed():
    return compose(hydra=True)


@pytest.mark.parametrize("name", sorted(STAGES))
def test_every_module_a_stage_runs_is_a_dep(name):
    stage = STAGES[name]
    missing = sorted(
        str(p.relative_to(REPO)) for p in code_files(_script(stage)) if not _covered(p, stage)
    )
    assert not missing, f"stage {name} runs code it does not depend on: {missing}"


@pytest.mark.parametrize("name", sorted(STAGES))
def test_every_config_file_a_stage_reads_is_a_dep_or_params(name, composed):
    stage = STAGES[name]
    choices = dict(composed.hydra.runtime.choices)
    groups = config_groups(_script(stage))
    if groups is None:  # the whole config: every group that can change the outputs
        groups = {g for g in choices if "/" not in g and g != "hydra"} - set(NOT_FINGERPRINTED)
    needed = [REPO / "conf" / "config.yaml"]
    for group in sorted(groups):
        if group not in choices or choices[group] is None:
            continue  # paths, seed: keys of config.yaml itself; experiment: none by default
        selected = {choices[group]}
        if group == "loss" and name == "train":
            selected |= set(str(composed.hydra.sweeper.params.loss).split(","))
        needed += [REPO / "conf" / group / f"{choice}.yaml" for choice in sorted(selected)]
    missing = sorted(str(p.relative_to(REPO)) for p in needed if not _covered(p, stage))
    assert not missing, f"stage {name} reads config it does not depend on: {missing}"


def test_the_derivation_sees_lazy_imports_and_packages():
    """The checks above cannot pass vacuously: the derived sets hold what we know is there."""
    evaluate = {str(p.relative_to(REPO)) for p in code_files(REPO / "pipelines/evaluate.py")}
    assert "src/segloss/tracking/__init__.py" in evaluate  # imported inside a function
    assert "src/segloss/data/prepared.py" in evaluate and "src/segloss/__init__.py" in evaluate
    assert config_groups(REPO / "pipelines/evaluate.py") >= {"eval", "paths", "tracking"}
    assert config_groups(REPO / "pipelines/train.py") is None
