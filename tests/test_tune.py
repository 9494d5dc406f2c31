"""pipelines/tune.py on the tiny data: a real tuning sweep, the pick, and experiment=tuned."""

from __future__ import annotations

import subprocess

import pandas as pd
import pytest
from helpers import compose, stage_command
from omegaconf import OmegaConf

from segloss.errors import SeglossError
from segloss.tuning import best_rates

pytestmark = pytest.mark.slow


def test_best_rate_per_loss_and_a_missing_grid_point_is_an_error():
    runs = pd.DataFrame(
        [
            ("bce", 1e-3, 0, 0.5), ("bce", 1e-3, 1, 0.7), ("bce", 3e-3, 0, 0.65),
            ("bce", 3e-3, 1, 0.5), ("dice", 1e-3, 0, 0.2), ("dice", 3e-3, 0, 0.4),
        ],
        columns=["loss", "lr", "seed", "best_val_dice"],
    )  # fmt: skip
    assert best_rates(runs, ["bce", "dice"], [1e-3, 3e-3]) == {"bce": 1e-3, "dice": 3e-3}
    with pytest.raises(SeglossError, match="no run of loss dice at lr 0.01"):
        best_rates(runs, ["dice"], [1e-3, 1e-2])


def test_tuning_sweep_picks_a_rate_per_loss_and_experiment_tuned_uses_it(
    repo_root, tiny_prepared, tmp_path
):
    out = tmp_path / "conf" / "tuned" / "lr.yaml"
    cmd = [
        *stage_command("tune"),
        f"paths.prepared={tiny_prepared}",
        f"paths.reports={tmp_path / 'reports'}",
        f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
        "train.epochs=1",
        "tune.grid=[1e-3,1e-1]",
        "tune.losses=[bce,dice]",
        f"tune.models={tmp_path / 'tuning'}",
        f"tune.out={out}",
        f"hydra.run.dir={tmp_path / 'run'}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
    ]
    proc = subprocess.run(cmd, cwd=repo_root, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = pd.read_csv(tmp_path / "reports" / "tuning.csv")
    assert sorted(map(tuple, runs[["loss", "lr"]].to_numpy())) == [
        ("bce", 1e-3), ("bce", 1e-1), ("dice", 1e-3), ("dice", 1e-1)
    ]  # fmt: skip
    assert set(runs["seed"]) == {0}  # tune.seeds: only the tuning seeds ran
    chosen = OmegaConf.to_container(OmegaConf.load(out))
    expected = runs.loc[runs.groupby("loss")["best_val_dice"].idxmax()].set_index("loss")["lr"]
    assert chosen == expected.to_dict()
    # experiment=tuned resolves each loss's train.lr from that file.
    for loss in ("bce", "dice"):
        searchpath = f"hydra.searchpath=[file://{tmp_path / 'conf'}]"
        cfg = compose("experiment=tuned", f"loss={loss}", searchpath)
        assert cfg.train.lr == chosen[loss]
