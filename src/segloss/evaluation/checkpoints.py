"""The trained models to evaluate: found under ``models/``, loaded, matched to the data.

``models/<loss>/seed<k>/model.pt`` (``.../seed<k>/fold<f>/model.pt`` with cross-validation,
``models/<setting>_<value>/<loss>/...`` with a second factor, config ``factor``);
every checkpoint is checked against the prepared data before any prediction, so a model
trained on other data fails the stage before anything is written.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from segloss.config import Config, validate
from segloss.data.prepared import fold_splits
from segloss.errors import SeglossError
from segloss.fingerprint import level_folder, level_of, level_prefix
from segloss.models import load_checkpoint

_SEED_DIR = re.compile(r"seed(\d+)")
_FOLD_DIR = re.compile(r"fold(\d+)")


@dataclass(frozen=True)
class Checkpoint:
    """One trained model's place in the sweep."""

    loss: str
    seed: int
    path: Path
    fold: int | None = None
    level: str | None = None  # the value of the second factor's setting

    @property
    def name(self) -> str:
        name = f"{self.loss}_seed{self.seed}" + ("" if self.fold is None else f"_fold{self.fold}")
        return level_prefix(self.level) + name


def find_checkpoints(
    models_dir: str | os.PathLike, folds: bool = False, factor: str | None = None
) -> list[Checkpoint]:
    """Every ``<models_dir>/<loss>/seed<k>/model.pt`` (``.../seed<k>/fold<f>/model.pt`` with
    ``folds``; under ``<models_dir>/<factor>_<value>/`` with a second factor's setting name
    ``factor``), sorted; none at all is an error."""
    root = Path(models_dir)
    found = []
    pattern = ("" if factor is None else f"{level_folder(factor, '*')}/") + (
        "*/seed*/fold*/model.pt" if folds else "*/seed*/model.pt"
    )
    for path in sorted(root.glob(pattern)):
        seed_dir = path.parent.parent if folds else path.parent
        seed, fold = _SEED_DIR.fullmatch(seed_dir.name), _FOLD_DIR.fullmatch(path.parent.name)
        level = None if factor is None else level_of(factor, seed_dir.parent.parent.name)
        if seed and (fold or not folds):
            found.append(
                Checkpoint(
                    seed_dir.parent.name,
                    int(seed.group(1)),
                    path,
                    int(fold.group(1)) if folds else None,
                    level,
                )
            )
    if not found:
        where = f"{root}/" + ("" if factor is None else f"{level_folder(factor, '<value>')}/")
        where += "<loss>/seed<k>/" + ("fold<f>/" if folds else "")
        raise SeglossError(
            f"no trained models in {root}/ (expected {where}model.pt): "
            "run the train stage first (`dvc repro train` or `python pipelines/train.py -m`)"
        )
    return found


def check_matches_data(checkpoint_data: Mapping, meta: Mapping, model_path: Path) -> None:
    """Raise if a model was trained on other data than the prepared folder holds now."""
    differences = []
    for key in ("image_size", "data_hash"):
        if checkpoint_data.get(key) != meta.get(key):
            differences.append(
                f"{key} {checkpoint_data.get(key)!r} (model) vs {meta.get(key)!r} (prepared data)"
            )
    try:
        data_splits = fold_splits(meta, checkpoint_data.get("fold"))
    except SeglossError as exc:
        raise SeglossError(f"{model_path} does not match the prepared data: {exc}") from None
    model_splits = checkpoint_data.get("splits") or {}
    for split in sorted(set(model_splits) | set(data_splits)):
        if sorted(model_splits.get(split, [])) != sorted(data_splits.get(split, [])):
            differences.append(f"the {split} split's patients differ")
    if differences:
        raise SeglossError(
            f"{model_path} does not match the prepared data: {'; '.join(differences)}; "
            "retrain it on this data (`dvc repro train`) or prepare the data it was trained on"
        )


@dataclass(frozen=True)
class Loaded:
    """A trained model ready to score: its place, weights, checkpoint facts and settings."""

    checkpoint: Checkpoint
    model: torch.nn.Module
    state: dict[str, object]  # the checkpoint's dict without the weights (run ids, data, ...)
    settings: Config  # what it was trained with, read back through the schema


def load_models(checkpoints: list[Checkpoint], meta: Mapping, device: torch.device) -> list[Loaded]:
    """Load every checkpoint and check it against the data and the schema, then order them
    fold by fold (so one fold's data is in memory at a time)."""
    loaded = []
    for ckpt in checkpoints:
        model, state = load_checkpoint(ckpt.path, device=device)
        check_matches_data(state.get("data", {}), meta, ckpt.path)
        try:
            settings = validate(state["config"])
        except SeglossError as exc:
            raise SeglossError(
                f"{ckpt.path}: its stored settings do not fit this version's config ({exc}); "
                "retrain it (`dvc repro train`)"
            ) from None
        facts = {k: v for k, v in state.items() if k != "state_dict"}
        loaded.append(Loaded(ckpt, model, facts, settings))
    loaded.sort(key=lambda item: -1 if item.checkpoint.fold is None else item.checkpoint.fold)
    return loaded
