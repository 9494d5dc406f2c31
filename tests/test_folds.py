"""Patient-level k-fold cross-validation: fold assignment, prepared folds, sweep and paths."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import compose, cv_config, data_config, settings, stage_command

from segloss.data import kaggle
from segloss.data.folds import assign_folds, check_cv, fold_roles, sweep_values
from segloss.data.preparation import prepare
from segloss.data.prepared import fold_splits, load_meta, load_native, load_split
from segloss.errors import ConfigError, SeglossError
from segloss.training import output_dir

REPO = Path(__file__).resolve().parents[1]
CV = {"folds": 1, "val_fraction": 0.2, "fold": None}
LGG_REAL = REPO.parent / "shared" / "data" / "lgg_real"


def burdens(n: int, free: int = 0) -> dict[str, float]:
    """``n`` patients with distinct tumour burdens, the last ``free`` of them tumour-free."""
    return {f"P{i:02d}": (0.0 if i >= n - free else 0.001 * (i + 1)) for i in range(n)}


@pytest.mark.parametrize(("n", "k", "free"), [(10, 5, 0), (23, 5, 3), (7, 2, 1), (6, 6, 0)])
def test_every_patient_is_tested_exactly_once_and_roles_never_overlap(n, k, free):
    burden = burdens(n, free)
    folds = fold_roles(burden, k, seed=3, val_fraction=0.2)
    assert len(folds) == k
    tested = [p for fold in folds for p in fold["test"]]
    assert sorted(tested) == sorted(burden)  # each patient once
    sizes = [len(fold["test"]) for fold in folds]
    assert max(sizes) - min(sizes) <= 1
    for fold in folds:
        train, val, test = (set(fold[r]) for r in ("train", "val", "test"))
        assert not (train & val or train & test or val & test)
        assert train | val | test == set(burden)
        assert val and train


def test_folds_are_stratified_by_tumour_burden():
    """Every run of K patients of neighbouring burden lands in K different folds."""
    burden = burdens(25)
    k = 5
    fold = assign_folds(burden, k, seed=0)
    ranked = sorted(burden, key=lambda p: -burden[p])
    for start in range(0, 25, k):
        assert sorted(fold[p] for p in ranked[start : start + k]) == list(range(k))


def test_validation_patients_span_the_burden_range():
    burden = burdens(30)
    roles = fold_roles(burden, 3, seed=0, val_fraction=0.2)[0]
    rest = sorted(roles["train"] + roles["val"], key=lambda p: -burden[p])
    # 20 patients outside the test fold, 4 validate: one from each block of 5 by burden
    assert len(roles["val"]) == 4
    blocks = [set(rest[i : i + 5]) for i in range(0, 20, 5)]
    assert [len(b & set(roles["val"])) for b in blocks] == [1, 1, 1, 1]


def test_folds_are_seeded():
    burden = burdens(20, 2)
    assert fold_roles(burden, 4, 7, 0.2) == fold_roles(burden, 4, 7, 0.2)
    assert assign_folds(burden, 4, 7) != assign_folds(burden, 4, 8)


@pytest.mark.parametrize(
    ("cv", "n", "message"),
    [
        ({"folds": 0}, 10, "cv.folds=0 must be an integer >= 1"),
        ({"folds": 2.5}, 10, "cv.folds=2.5 must be an integer"),
        ({"folds": 11}, 10, "cv.folds=11 is more than the 10 patients"),
        ({"folds": 2}, 2, "leaves fewer than 2 patients"),
        ({"folds": 3, "val_fraction": 1.0}, 10, "cv.val_fraction=1.0 must be a number in (0, 1)"),
        ({"fold": -1}, 10, "cv.fold=-1 must be an integer >= 0 or null"),
    ],
)
def test_bad_cv_settings_are_one_line_errors(cv, n, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_cv(cv_config(CV | cv), n)


def test_sweep_values_follow_cv_folds():
    assert sweep_values(1) == "null"
    assert sweep_values(3) == "0,1,2"


def test_the_default_sweep_covers_every_fold():
    from omegaconf import OmegaConf

    import segloss.cli  # noqa: F401  (registers the resolver, as every entry point does)

    for folds, expected in ((1, "null"), (4, "0,1,2,3")):
        cfg = compose(f"cv.folds={folds}", hydra=True)
        params = OmegaConf.to_container(cfg.hydra.sweeper.params, resolve=True)
        assert params["cv.fold"] == expected
    cfg = compose("experiment=lgg_cv", "data.root=x")
    assert cfg.cv.folds == 3 and cfg.data.source == "lgg"


def test_fold_models_have_their_own_folder():
    job = ("paths.models=m", "loss=dice", "seed=2", "cv.folds=4")
    assert output_dir(settings(*job, "cv.fold=3")) == Path("m/dice/seed2/fold3")
    assert output_dir(settings(*job, "cv.fold=null")) == Path("m/dice/seed2")


def test_a_second_factors_levels_have_their_own_folder():
    job = ("paths.models=m", "loss=bce", "seed=1", "cv.folds=2", "cv.fold=0")
    job += ("train.sampling=uniform", "train.init_output_bias=true")
    found = output_dir(settings(*job, "factor=train.sampling"))
    assert found == Path("m/sampling_uniform/bce/seed1/fold0")
    found = output_dir(settings(*job, "factor=train.init_output_bias"))
    assert found == Path("m/init_output_bias_true/bce/seed1/fold0")
    assert output_dir(settings(*job, "factor=null")) == Path("m/bce/seed1/fold0")


def test_the_sampling_experiment_crosses_sampling_with_the_loss():
    from omegaconf import OmegaConf

    import segloss.cli  # noqa: F401  (registers the resolver, as every entry point does)

    cfg = compose("experiment=lgg_sampling", "data.root=x", hydra=True)
    params = OmegaConf.to_container(cfg.hydra.sweeper.params, resolve=True)
    assert params == {
        "loss": "bce,bce_dice",
        "seed": "0,1,2,3,4",
        "cv.fold": "0,1,2",
        "train.sampling": "uniform,foreground",
    }
    assert settings("experiment=lgg_sampling", "data.root=x").factor == "train.sampling"
    assert cfg.cv.folds == 3
    for bad in ("train.nope", "data.image_size", "train.augment", "seed"):
        with pytest.raises(ConfigError, match=r"^factor "):
            settings(f"factor={bad}")


@pytest.fixture(scope="module")
def cv_prepared(tmp_path_factory) -> tuple[Path, Path]:
    """Six synthetic patients at 32 px, prepared at 16 px with 3 folds."""
    tmp = tmp_path_factory.mktemp("cv")
    data = {
        "source": "synthetic",
        "root": str(tmp / "synthetic"),
        "n_patients": 6,
        "n_slices": [4, 5],
        "tiff_size": 32,
        "image_size": 16,
        "seed": 0,
        "split": {"train": 0.6, "val": 0.15, "test": 0.25},
    }
    cv = {"folds": 3, "val_fraction": 0.25, "fold": None}
    result = prepare(data_config(data), tmp / "prepared", tmp / "reports", cv_config(cv))
    return result.prepared, result.source_dir


def test_prepared_folds_split_the_pool_by_patient(cv_prepared):
    prepared, source = cv_prepared
    meta = load_meta(prepared)
    assert meta["cv"]["folds"] == 3 and len(meta["folds"]) == 3
    assert meta["native_size"] == [32, 32]
    assert meta["pixel_spacing_mm"] == pytest.approx(256.0 / 32)  # FOV 256 mm over 32 px
    originals = {p.name: p for p in map(kaggle.read_patient, kaggle.patient_dirs(source))}
    seen = []
    for fold in range(3):
        roles = fold_splits(meta, fold)
        for role in ("train", "val", "test"):
            split = load_split(prepared, role, fold=fold)
            assert sorted(set(split.patients)) == roles[role]
            assert split.images.shape[1:] == (16, 16, 3)
        test = load_split(prepared, "test", fold=fold)
        native = load_native(prepared, "test", fold=fold)
        assert native.shape == (len(test), 32, 32) and native.dtype == bool
        for i, (patient, number) in enumerate(zip(test.patients, test.slices, strict=True)):
            original = originals[patient]
            np.testing.assert_array_equal(
                native[i], original.masks[list(original.slices).index(number)]
            )
        seen += list(dict.fromkeys(test.patients))
    assert sorted(seen) == sorted(originals)


def test_a_fold_is_required_on_folds_and_refused_without(cv_prepared, tiny_prepared):
    prepared, _ = cv_prepared
    with pytest.raises(SeglossError, match="has 3 folds; choose 0..2"):
        load_split(prepared, "train")
    with pytest.raises(SeglossError, match="has 3 folds"):
        load_split(prepared, "train", fold=3)
    with pytest.raises(SeglossError, match="no folds"):
        load_split(tiny_prepared, "train", fold=0)


def test_cv_folds_above_the_patients_fail_before_writing(tmp_path):
    result = subprocess.run(
        [
            *stage_command("prepare"),
            "data.n_patients=4",
            "cv.folds=5",
            f"data.root={tmp_path / 'synthetic'}",
            f"paths.prepared={tmp_path / 'prepared'}",
            f"paths.reports={tmp_path / 'reports'}",
            f"hydra.run.dir={tmp_path / 'hydra'}",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "error: cv.folds=5 is more than the 4 patients (groups of images)"
    )
    assert not (tmp_path / "prepared").exists() and not (tmp_path / "synthetic").exists()


@pytest.fixture(scope="module")
def real_three(tmp_path_factory) -> Path:
    """Three real kaggle_3m patients unpacked into a temporary folder."""
    archives = sorted((LGG_REAL / "archives").glob("*.tar.xz"))[:3]
    if len(archives) < 3 or shutil.which("tar") is None:
        pytest.skip(f"real LGG archives not found at {LGG_REAL} (only present beside the repo)")
    out = tmp_path_factory.mktemp("lgg_real")
    for archive in archives:
        subprocess.run(["tar", "-xJf", str(archive), "-C", str(out)], check=True)
    return out


def test_real_patients_each_tested_once_at_native_size(real_three, tmp_path):
    data = {"source": "lgg", "root": str(real_three), "image_size": 32, "seed": 0}
    data |= {"download": False, "cache": str(tmp_path / "cache")}
    cv = {"folds": 3, "val_fraction": 0.2, "fold": None}
    prepared = prepare(
        data_config(data), tmp_path / "prepared", tmp_path / "reports", cv_config(cv)
    ).prepared
    meta = load_meta(prepared)
    assert meta["native_size"] == [256, 256] and meta["pixel_spacing_mm"] is None
    tested = [p for f in range(3) for p in fold_splits(meta, f)["test"]]
    assert sorted(tested) == sorted(p.name for p in (real_three / "kaggle_3m").iterdir())
    native = load_native(prepared, "test", fold=0)
    assert native.shape[1:] == (256, 256)


def test_each_fold_trains_and_evaluation_pools_out_of_fold(tmp_path, repo_root):
    """Two folds of six blob patients: a model per fold, its own folder, a fold tag and param
    in MLflow, and evaluation scoring every patient once, by its own fold's model."""
    import mlflow
    import pandas as pd
    from conftest import make_blob_split

    from segloss.data.prepared import write_prepared
    from segloss.evaluation import evaluate
    from segloss.sweep.tracked import train  # training with its MLflow run

    patients = [f"P{i}" for i in range(6)]
    pool = make_blob_split(np.random.default_rng(0), patients, 4, 32)
    burden = {p: float(pool.masks[pool.patients == p].mean()) for p in patients}
    meta = {"source": "blobs", "cv": {"folds": 2}, "folds": fold_roles(burden, 2, 0, 0.25)}
    prepared = write_prepared(tmp_path / "prepared", {"all": pool}, meta)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    for fold in (0, 1):
        overrides = [
            f"paths.prepared={prepared}",
            f"paths.models={tmp_path / 'models'}",
            f"tracking.uri={uri}",
            "tracking.log_model=false",
            "train.epochs=1",
            "train.num_threads=1",
            "cv.folds=2",
            f"cv.fold={fold}",
        ]
        job = settings(*overrides)
        summary = train(job)
        assert summary.fold == fold
        assert summary.model_path == str(
            tmp_path / "models/bce_dice/seed0" / f"fold{fold}/model.pt"
        )
        run = mlflow.MlflowClient(uri).get_run(summary.mlflow_run_id)
        assert run.data.tags["fold"] == str(fold) and run.data.params["cv.fold"] == str(fold)
        state = torch.load(summary.model_path, weights_only=False)
        assert state["data"]["fold"] == fold
        assert state["data"]["splits"] == load_meta(prepared)["folds"][fold]
    small = dataclasses.replace(job.eval, batch_size=8, num_threads=1)
    out = evaluate(
        prepared, tmp_path / "models", tmp_path / "pred", tmp_path / "m", tmp_path / "p", small
    )
    per_patient = pd.read_csv(out["per_patient"])
    assert sorted(per_patient["patient"]) == patients  # each patient once, out of fold
    folds = load_meta(prepared)["folds"]
    for _, row in per_patient.iterrows():
        assert row["patient"] in folds[row["fold"]]["test"]
    assert sorted(p.name for p in (tmp_path / "pred").iterdir()) == [
        "bce_dice_seed0_fold0.npz",
        "bce_dice_seed0_fold1.npz",
    ]


def test_pruning_keeps_the_folds_of_the_sweep(tmp_path):
    from segloss.sweep import prune_models

    for path in ("bce/seed0/fold0", "bce/seed0/fold1", "bce/seed0/fold2", "bce/seed1/fold0"):
        (tmp_path / path).mkdir(parents=True)
        (tmp_path / path / "model.pt").write_bytes(b"x")
    job = (f"paths.models={tmp_path}", "loss=bce", "seed=0", "cv.folds=3")
    jobs = [settings(*job, f"cv.fold={f}") for f in (0, 1)]
    removed = prune_models(jobs)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in removed) == [
        "bce/seed0/fold2",
        "bce/seed1",
    ]
    assert (tmp_path / "bce/seed0/fold0/model.pt").is_file()
    assert (tmp_path / "bce/seed0/fold1/model.pt").is_file()


def test_pruning_keeps_the_levels_of_the_sweep(tmp_path):
    from segloss.sweep import prune_models

    for path in (
        "sampling_uniform/bce/seed0/fold0",
        "sampling_uniform/bce/seed0/fold1",
        "sampling_foreground/bce/seed0/fold0",
        "bce/seed0/fold0",
    ):
        (tmp_path / path).mkdir(parents=True)
        (tmp_path / path / "model.pt").write_bytes(b"x")
    job = settings(
        f"paths.models={tmp_path}", "loss=bce", "seed=0", "cv.folds=2", "cv.fold=0",
        "factor=train.sampling", "train.sampling=uniform",
    )  # fmt: skip
    removed = prune_models([job])
    assert sorted(p.relative_to(tmp_path).as_posix() for p in removed) == [
        "bce/seed0",
        "sampling_foreground/bce/seed0",
        "sampling_uniform/bce/seed0/fold1",
    ]
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == [
        "sampling_uniform",
        "sampling_uniform/bce",
        "sampling_uniform/bce/seed0",
        "sampling_uniform/bce/seed0/fold0",
        "sampling_uniform/bce/seed0/fold0/model.pt",
    ]
