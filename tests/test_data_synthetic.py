"""The synthetic generator: kaggle_3m layout, determinism, caching and calibration ranges."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile

from segloss.data import kaggle
from segloss.data.card import calibration, slice_table
from segloss.data.synthetic import SyntheticSettings, generate
from segloss.errors import DataError

SMALL = SyntheticSettings(n_patients=4, seed=0, size=64, n_slices=(20, 24))


@pytest.fixture(scope="module")
def small_set(tmp_path_factory) -> Path:
    """Four patients at 64x64 (20-24 slices each), generated once for this module."""
    folder, generated = generate(tmp_path_factory.mktemp("synthetic"), SMALL)
    assert generated
    return folder


def test_layout_matches_kaggle_3m(small_set: Path):
    dirs = kaggle.patient_dirs(small_set)
    assert [d.name for d in dirs] == sorted(d.name for d in dirs)
    assert len(dirs) == SMALL.n_patients
    for folder in dirs:
        assert re.fullmatch(r"TCGA_SY_\d{4}_(199\d|200\d)\d{4}", folder.name)
        n = len(list(folder.glob("*_mask.tif")))
        assert 20 <= n <= 24
        image = tifffile.imread(folder / f"{folder.name}_1.tif")
        mask = tifffile.imread(folder / f"{folder.name}_{n}_mask.tif")
        assert image.shape == (64, 64, 3) and image.dtype == np.uint8
        assert mask.shape == (64, 64) and set(np.unique(mask)) <= {0, 255}
    readme = (small_set / "README.md").read_text()
    assert "McConnell Brain Imaging Centre" in readme and "Permission to use" in readme


def test_same_seed_gives_identical_bytes(tmp_path: Path):
    settings = SyntheticSettings(n_patients=2, seed=3, size=32, n_slices=(4, 5))
    first, _ = generate(tmp_path / "a", settings)
    second, _ = generate(tmp_path / "b", settings)
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(second) for p in second.rglob("*") if p.is_file())
    assert all((first / f).read_bytes() == (second / f).read_bytes() for f in files)
    other, _ = generate(
        tmp_path / "c", SyntheticSettings(n_patients=2, seed=4, size=32, n_slices=(20, 24))
    )
    assert other.name != first.name  # the cache key follows the settings


def test_cached_set_is_reused_never_regenerated(small_set: Path):
    some_file = next(small_set.rglob("*.tif"))
    stamp = some_file.stat().st_mtime_ns
    folder, generated = generate(small_set.parent, SMALL)
    assert folder == small_set and not generated
    assert some_file.stat().st_mtime_ns == stamp


def test_incomplete_cache_folder_is_an_error(tmp_path: Path):
    settings = SyntheticSettings(n_patients=1, seed=0, size=32, n_slices=(20, 24))
    (tmp_path / settings.key()).mkdir()
    with pytest.raises(DataError, match="incomplete synthetic data folder"):
        generate(tmp_path, settings)


def test_calibration_within_the_real_data_ranges(small_set: Path):
    slices = [slice_table(p) for p in kaggle.read_patients(small_set)]
    stats = calibration(pd.concat(slices, ignore_index=True))
    assert 0.008 <= stats["tumour_pixel_fraction"] <= 0.02
    assert 0.30 <= stats["positive_slice_fraction"] <= 0.55
    assert 0.01 <= stats["tumour_fraction_in_positive"] <= 0.06
    assert stats["flair_lesion_to_surround"] > 1.2
    assert stats["flair_lesion_brighter"] > 0.9


def test_tumour_free_slices_at_both_ends(small_set: Path):
    for patient in kaggle.read_patients(small_set):
        positive = patient.masks.any(axis=(1, 2))
        assert not positive[0] and not positive[-1]
        assert positive.any()
