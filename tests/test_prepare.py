"""The prepare stage end to end: synthetic and real sources, outputs, card, and bad input."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import tifffile
from helpers import cv_config, data_config, stage_command
from test_data_kaggle import write_fake_patient

from segloss.data.preparation import normalise, prepare, resize
from segloss.data.prepared import SPLITS, load_manifest, load_meta, load_split
from segloss.errors import ConfigError, DataError

REPO = Path(__file__).resolve().parents[1]
SPLIT = {"train": 0.6, "val": 0.15, "test": 0.25}
CV = {"folds": 1, "val_fraction": 0.2, "fold": None}
LGG = {"source": "lgg", "download": False, "cache": "unused", "seed": 0, "split": SPLIT}


def synthetic_cfg(cache: Path, **overrides) -> dict:
    cfg = {
        "source": "synthetic",
        "root": str(cache),
        "n_patients": 5,
        "n_slices": [20, 22],
        "tiff_size": 64,
        "image_size": 32,
        "seed": 0,
        "split": SPLIT,
        "normalise": {"low": 1, "high": 99},
    }
    return cfg | overrides


@pytest.fixture(scope="module")
def prepared_synthetic(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("prep")
    result = prepare(
        data_config(synthetic_cfg(base / "cache")),
        base / "prepared",
        base / "reports",
        cv_config(CV),
    )
    assert result.generated and result.prepared == base / "prepared"
    return base


def test_prepared_arrays_manifest_and_meta(prepared_synthetic: Path):
    prepared = prepared_synthetic / "prepared"
    manifest = load_manifest(prepared)
    meta = load_meta(prepared)
    assert meta["source"] == "synthetic" and meta["image_size"] == 32
    assert "percentiles 1 and 99" in meta["normalisation"]
    assert meta["generator"]["n_patients"] == 5
    owners = manifest.groupby("patient")["split"].nunique()
    assert (owners == 1).all()  # no patient in two splits
    assert manifest.groupby("split")["patient"].nunique().to_dict() == {
        "train": 3,
        "val": 1,
        "test": 1,
    }
    for name in SPLITS:
        part = load_split(prepared, name)
        assert part.images.dtype == np.uint8 and part.images.shape[1:] == (32, 32, 3)
        assert set(np.unique(part.masks)) <= {0, 1}
        assert part.masks.any()  # tumour-bearing slices in every split
        assert part.images.max() == 255 and part.images.min() == 0
        rows = manifest[manifest["split"] == name].sort_values("index")
        assert rows["tumour_pixels"].tolist() == part.masks.sum(axis=(1, 2)).tolist()


def test_data_card(prepared_synthetic: Path):
    text = (prepared_synthetic / "reports" / "data_card.md").read_text()
    for needle in ("| train", "| val", "| test", "pixel accuracy", "Dice", "IoU", "percentiles"):
        assert needle in text
    assert "| Dice | 0.000 |" in text


def test_second_run_reuses_the_generated_data(prepared_synthetic: Path):
    base = prepared_synthetic
    result = prepare(
        data_config(synthetic_cfg(base / "cache")), base / "again", base / "reports2", cv_config(CV)
    )
    assert not result.generated
    assert load_meta(base / "again")["data_hash"] == load_meta(base / "prepared")["data_hash"]


def test_masks_stay_binary_and_normalisation_uses_the_percentile_window():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(3, 40, 40, 3), dtype=np.uint8)
    images[:, :20] = 0  # background excluded from the window
    masks = rng.random((3, 40, 40)) > 0.7
    x = normalise(images, 0, 100)
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    small_images, small_masks = resize(x, masks, 16)
    assert small_images.shape == (3, 16, 16, 3) and small_images.dtype == np.uint8
    assert set(np.unique(small_masks)) <= {0, 1}


def test_real_sample(lgg_sample: Path, tmp_path: Path):
    cfg = LGG | {"root": str(lgg_sample), "image_size": 64}
    result = prepare(data_config(cfg), tmp_path / "prepared", tmp_path / "reports", cv_config(CV))
    manifest = load_manifest(result.prepared)
    assert len(manifest) == 238
    folders = sorted(p.name for p in (lgg_sample / "kaggle_3m").iterdir() if p.is_dir())
    assert sorted(manifest["patient"].unique()) == folders
    stats = result.calibration
    assert 0.008 <= stats["tumour_pixel_fraction"] <= 0.02
    assert 0.30 <= stats["positive_slice_fraction"] <= 0.55
    assert stats["flair_lesion_to_surround"] > 1


@pytest.mark.parametrize(
    ("overrides", "setting"),
    [
        ({"split": {"train": 0.7, "val": 0.2, "test": 0.2}}, "data.split"),
        ({"n_patients": 3, "split": {"train": 0.9, "val": 0.05, "test": 0.05}}, "data.split"),
        ({"source": "mnist"}, "data.source"),
        ({"root": "???"}, "data.root"),
        ({"image_size": 4}, "data.image_size"),
        ({"n_slices": [5, 2]}, "data.n_slices"),
    ],
)
def test_bad_settings_fail_before_anything_is_written(tmp_path: Path, overrides, setting):
    with pytest.raises(ConfigError, match=setting.replace(".", r"\.")):
        prepare(
            data_config(synthetic_cfg(tmp_path / "c", **overrides)),
            tmp_path / "out",
            tmp_path / "r",
            cv_config(CV),
        )
    assert not (tmp_path / "out").exists() and not (tmp_path / "c").exists()


def test_bad_file_leaves_no_prepared_folder(tmp_path: Path):
    write_fake_patient(tmp_path, "TCGA_XX_0001_20000101")
    bad = write_fake_patient(tmp_path, "TCGA_XX_0002_20000101") / "TCGA_XX_0002_20000101_3.tif"
    bad.write_bytes(b"II*\x00")
    cfg = LGG | {"root": str(tmp_path), "image_size": 8}
    with pytest.raises(DataError, match="TCGA_XX_0002_20000101_3.tif"):
        prepare(data_config(cfg), tmp_path / "prepared", tmp_path / "reports", cv_config(CV))
    assert not (tmp_path / "prepared").exists()


def _entry_point(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    cmd = [
        *stage_command("prepare"),
        f"paths.prepared={tmp_path / 'prepared'}",
        f"paths.reports={tmp_path / 'reports'}",
        f"hydra.run.dir={tmp_path / 'hydra'}",
        *overrides,
    ]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)


def test_entry_point_bad_mask_one_line_error(tmp_path: Path):
    folder = write_fake_patient(tmp_path / "data")
    bad = folder / f"{folder.name}_2_mask.tif"
    tifffile.imwrite(bad, np.full((8, 8), 7, np.uint8))
    done = _entry_point(tmp_path, "data=lgg", f"data.root={tmp_path / 'data'}")
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(bad) in errors[0] and "0 or 255" in errors[0]
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "prepared").exists()


def test_entry_point_without_root(tmp_path: Path):
    done = _entry_point(tmp_path, "data=lgg")
    assert done.returncode == 2
    assert "error: data.root is not set" in done.stderr


def test_entry_point_on_real_sample(lgg_sample: Path, tmp_path: Path):
    done = _entry_point(tmp_path, "data=lgg", f"data.root={lgg_sample}")
    assert done.returncode == 0, done.stderr
    assert "238 slices" in done.stdout + done.stderr
    assert len(load_manifest(tmp_path / "prepared")) == 238
    assert (tmp_path / "reports" / "data_card.md").is_file()
