"""The DVC train stage is incremental: `dvc repro train` in a tiny copy of the repository.

Only prepare and train run here (not evaluate/report), so a model's file times tell which
models a rerun trained.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from test_pipeline import LOSSES, _run, _set, tiny_copy

pytestmark = pytest.mark.slow


def _model_stamps(root: Path) -> dict[str, int]:
    models = root / "models"
    return {
        str(p.relative_to(models)): p.stat().st_mtime_ns for p in models.glob("*/seed*/model.pt")
    }


def test_train_stage_is_incremental_and_holds_exactly_the_sweep(tmp_path):
    """Editing one loss's config retrains that loss's models only; a train dep that changes
    no model reruns the stage in seconds and rewrites nothing; a loss dropped from the sweep
    loses its models; a half-written temporary file of a killed job is removed."""
    root, env = tiny_copy(tmp_path)
    _run(["dvc", "repro", "train"], root, env)
    before = _model_stamps(root)
    assert set(before) == {f"{loss}/seed0/model.pt" for loss in LOSSES}

    _set(root / "conf/loss/bce.yaml", {"pos_weight": 2.0})
    _run(["dvc", "repro", "train"], root, env)
    after = _model_stamps(root)
    assert {k for k in before if after[k] != before[k]} == {"bce/seed0/model.pt"}

    with (root / "src/segloss/sweep/progress.py").open("a") as f:  # a dep, not part of any model
        f.write("\n# edited\n")
    assert "train" in json.loads(_run(["dvc", "status", "--json"], root, env))
    tic = time.perf_counter()
    out = _run(["dvc", "repro", "train"], root, env)
    seconds = time.perf_counter() - tic
    assert _model_stamps(root) == after
    print(f"no-op train stage: {seconds:.1f} s for {len(LOSSES)} reused models")
    assert seconds < 60, out  # ~10-15 s here; generous for a loaded CI machine

    leftover = root / "models" / "bce" / "seed0" / ".tmp-999999-model.pt"  # a dead PID
    leftover.write_bytes(b"half")
    _set(root / "conf/config.yaml", {"hydra": {"sweeper": {"params": {"loss": "bce"}}}})
    _run(["dvc", "repro", "train"], root, env)
    assert _model_stamps(root) == {"bce/seed0/model.pt": after["bce/seed0/model.pt"]}
    assert not (root / "models" / "bce_dice").exists() and not leftover.exists()
