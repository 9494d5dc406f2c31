"""`dvc exp run --temp` runs the stage in a temporary copy of the repository; the default
tracking store (conf/tracking/mlflow.yaml) must still be the repository's own mlflow.db."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import runs

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _run(cmd: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{' '.join(cmd)}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def test_dvc_exp_run_temp_logs_into_the_repositorys_mlflow_db(tiny_prepared, tmp_path):
    if not (REPO / ".venv" / "bin" / "dvc").is_file():
        pytest.skip("needs the project's .venv")
    root = tmp_path / "repo"
    shutil.copytree(REPO / "conf", root / "conf")
    (root / "pipelines").mkdir()
    shutil.copy2(REPO / "pipelines" / "train.py", root / "pipelines" / "train.py")
    # One stage that trains one tiny model with the default tracking settings (no
    # tracking.uri override): where its run lands is what this test checks.
    (root / "dvc.yaml").write_text(
        "stages:\n"
        "  train:\n"
        "    cmd: >-\n"
        f"      python pipelines/train.py loss=bce seed=0 paths.prepared={tiny_prepared}\n"
        "      train.epochs=1 train.num_threads=1 tracking.log_model=false\n"
        "    deps:\n"
        "      - pipelines/train.py\n"
        "    params:\n"
        "      - conf/train/default.yaml:\n"
        "    outs:\n"
        "      - models\n"
    )
    (root / ".gitignore").write_text("mlflow.db\nmlflow.db.lock\nmlartifacts/\noutputs/\n")
    env = os.environ | {
        "PATH": f"{REPO / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}",
        "DVC_NO_ANALYTICS": "1",
        "OMP_NUM_THREADS": "1",
    }
    env.pop("DVC_ROOT", None)
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com"]
    _run(["git", "init", "-q"], root, env)
    _run(["dvc", "init", "-q"], root, env)
    _run(["git", "add", "-A"], root, env)
    _run([*git, "commit", "-qm", "tiny"], root, env)
    done = _run(
        ["dvc", "exp", "run", "--temp", "-S", "conf/train/default.yaml:lr=0.002"], root, env
    )
    db = root / "mlflow.db"
    assert db.is_file(), done.stdout[-2000:]
    (run,) = runs(f"sqlite:///{db}")
    assert (run.name, run.status, run.params["train.lr"]) == (
        "bce (pixel) seed0",
        "FINISHED",
        "0.002",
    )
    # nothing was written where the copy ran, and the workspace itself was not trained in
    assert not list((root / ".dvc" / "tmp").glob("**/mlflow.db"))
    assert not (root / "models").exists()
