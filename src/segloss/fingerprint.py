"""What a trained model depends on, and whether a model on disk is still up to date.

Ground floor (no torch, no mlflow): the train stage's jobs call :func:`quick_reuse` before
importing the training code, so a rerun that changes no model costs a Hydra start-up per
worker, not a torch and MLflow import per job.

A model's fingerprint: the resolved config less :data:`NOT_FINGERPRINTED` and
``train.reuse``, the prepared data's hash (``meta.json``) and the training code's version
(:func:`code_version`: the source of every module :mod:`segloss.training` imports). Beside
``model.pt`` the train stage writes ``fingerprint.json`` (the fingerprint's hash, the
SHA-256 of that ``model.pt`` and the run summary); the model's checkpoint holds the
fingerprint itself, which decides when the stamp is missing or stale.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from segloss.config import Config, plain

Json = dict[str, object]  # a JSON object: meta.json, fingerprint.json, a serialised result

# Config keys that do not change the trained weights: left out of the fingerprint, so logging
# elsewhere or evaluating differently reuses a model (``data``: covered by the data hash).
# ``factor`` names the sweep's second factor; the factor's setting itself is fingerprinted.
NOT_FINGERPRINTED = (
    "tracking",
    "paths",
    "eval",
    "report",
    "data",
    "tune",
    "print_config",
    "factor",
)
STAMP = "fingerprint.json"


@dataclass(frozen=True)
class TrainSummary:
    """What one training job produced (a Hydra job's return value); ``fingerprint.json``
    keeps it less ``seconds`` and ``reused``."""

    loss: str
    seed: int
    fold: int | None
    best_epoch: int
    best_val_dice: float
    epochs_run: int
    model_path: str
    mlflow_run_id: str | None
    seconds: float = 0.0
    reused: bool = False

    def stamped(self) -> Json:
        """The summary as ``fingerprint.json`` holds it."""
        kept = dataclasses.asdict(self)
        return {k: v for k, v in kept.items() if k not in ("seconds", "reused")}


def _source(name: str) -> Path | None:
    """The file of module ``segloss.<...>`` found on disk (``a/b.py`` or ``a/b/__init__.py``),
    without importing anything (``find_spec("segloss.models.x")`` would import torch)."""
    root = Path(__file__).resolve().parent  # the segloss package
    parts = name.split(".")[1:]
    for path in (root.joinpath(*parts).with_suffix(".py"), root.joinpath(*parts, "__init__.py")):
        if parts and path.is_file():
            return path
    return root / "__init__.py" if not parts else None


def code_modules(root: str = "segloss.training") -> list[str]:
    """``root`` and every ``segloss`` module it imports, transitively, read from the source
    with :mod:`ast` (nothing is imported)."""
    seen: set[str] = set()
    todo = [root]
    while todo:
        name = todo.pop()
        if name in seen or (path := _source(name)) is None:
            continue
        seen.add(name)
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # packages run first
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                todo += [a.name for a in node.names if a.name.split(".")[0] == "segloss"]
            elif (
                isinstance(node, ast.ImportFrom)
                and node.level == 0
                and (node.module or "").split(".")[0] == "segloss"
            ):
                todo.append(node.module)
                todo += [f"{node.module}.{a.name}" for a in node.names]  # submodules
    return sorted(seen)


@functools.cache
def code_version() -> str:
    """SHA-256 (16 hex digits) of the source of every module that training runs."""
    digest = hashlib.sha256()
    for name in code_modules():
        digest.update(name.encode())
        digest.update(_source(name).read_bytes())
    return digest.hexdigest()[:16]


def fingerprint(settings: Config, meta: Mapping[str, object]) -> Json:
    """The settings (less :data:`NOT_FINGERPRINTED` and ``train.reuse``), the prepared data's
    hash and the training code's version."""
    config = {k: v for k, v in plain(settings).items() if k not in NOT_FINGERPRINTED}
    config["train"] = {k: v for k, v in config["train"].items() if k != "reuse"}
    return {"config": config, "data_hash": meta.get("data_hash"), "code_version": code_version()}


def fingerprint_hash(fp: Mapping[str, object]) -> str:
    return hashlib.sha256(json.dumps(fp, sort_keys=True, default=str).encode()).hexdigest()[:16]


def factor_setting(key: str) -> str:
    """The setting a second factor's key names, which is also its column in every table:
    ``train.sampling`` -> ``sampling``."""
    return key.rsplit(".", 1)[-1]


def level_folder(setting: str, value: str) -> str:
    """The folder of one level's models under ``paths.models``: ``sampling_uniform``."""
    return f"{setting}_{value}"


def level_of(setting: str, folder: str) -> str:
    """The level a :func:`level_folder` name holds."""
    return folder.removeprefix(f"{setting}_")


def level_prefix(value: str | None) -> str:
    """What a level's prediction files start with: ``uniform_`` (nothing without a factor)."""
    return "" if value is None else f"{value}_"


def factor_level(settings: Config) -> tuple[str, str] | None:
    """The job's level of the sweep's second factor (config ``factor``, e.g. ``train.sampling``)
    as ``(setting, value)``: ``("sampling", "uniform")``; None without a second factor."""
    if not settings.factor:
        return None
    group, setting = settings.factor.split(".")
    value = getattr(getattr(settings, group), setting)
    return setting, str(value).lower() if isinstance(value, bool) else str(value)


def factor_columns(columns: Iterable[str]) -> list[str]:
    """The id columns a second factor adds to the evaluation tables (``sampling``): every
    column before ``loss``."""
    columns = list(columns)
    return columns[: columns.index("loss")] if "loss" in columns else []


def output_dir(settings: Config) -> Path:
    """``<paths.models>/<loss>/seed<k>``, and ``/fold<f>`` with cross-validation; under
    ``<paths.models>/<setting>_<value>/`` with a second factor (:func:`factor_level`)."""
    out = Path(settings.paths.models)
    if (level := factor_level(settings)) is not None:
        out /= level_folder(*level)
    out = out / settings.loss.name / f"seed{settings.seed}"
    fold = settings.cv.fold
    return out if fold is None else out / f"fold{fold}"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_stamp(out: Path, fp_hash: str, summary: TrainSummary) -> None:
    """Write ``out/fingerprint.json`` for the ``model.pt`` now in ``out`` (atomically)."""
    from segloss.io import write_json

    model = out / "model.pt"
    stamp = {
        "fingerprint_hash": fp_hash,
        "model_sha256": _sha256(model),
        "summary": summary.stamped(),
    }
    write_json(stamp, out / STAMP)


def quick_reuse(settings: Config) -> TrainSummary | None:
    """The summary of an up-to-date model for ``settings``, decided from ``fingerprint.json`` and
    ``meta.json`` alone; None when that cannot tell (the training code then checks the
    checkpoint itself, or trains). ``model.pt`` must hash to what the stamp recorded, so a
    stamp left beside another model is never believed."""
    if not settings.train.reuse:
        return None
    out = output_dir(settings)
    try:
        meta = json.loads((Path(settings.paths.prepared) / "meta.json").read_text())
        stamp = json.loads((out / STAMP).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or not isinstance(stamp, dict):
        return None
    model, history = out / "model.pt", out / "history.csv"
    if not (model.is_file() and history.is_file()):
        return None
    if stamp.get("fingerprint_hash") != fingerprint_hash(fingerprint(settings, meta)):
        return None
    if stamp.get("model_sha256") != _sha256(model):
        return None
    try:
        summary = TrainSummary(**stamp.get("summary", {}))
    except TypeError:  # a stamp of another version: the checkpoint decides
        return None
    return dataclasses.replace(summary, model_path=str(model), reused=True)
