"""The data as users get it: the Kaggle zip, its two kaggle_3m copies, a kagglehub download."""

from __future__ import annotations

import os
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
from helpers import cv_config, data_config, stage_command

from segloss.data import sources
from segloss.data.preparation import prepare
from segloss.errors import DataError

REPO = Path(__file__).resolve().parents[1]
PATIENTS = ("TCGA_AA_0001_20000101", "TCGA_AA_0002_20000102", "TCGA_AA_0003_20000103")


def write_patient(folder: Path, name: str, seed: int, slices: int = 3) -> None:
    """A tiny kaggle_3m patient: 16x16 RGB slices, a square tumour on the middle one."""
    rng = np.random.default_rng(seed)
    (folder / name).mkdir(parents=True)
    for n in range(1, slices + 1):
        image = rng.integers(10, 200, (16, 16, 3), dtype=np.uint8)
        mask = np.zeros((16, 16), np.uint8)
        if n == 2:
            mask[5:9, 6:10] = 255
        tifffile.imwrite(folder / name / f"{name}_{n}.tif", image)
        tifffile.imwrite(folder / name / f"{name}_{n}_mask.tif", mask)


def kaggle_download(root: Path) -> Path:
    """The folder the Kaggle zip unpacks to: kaggle_3m/ and lgg-mri-segmentation/kaggle_3m/
    (an identical second copy), with data.csv and README.md beside the patients."""
    for copy in (root / "kaggle_3m", root / "lgg-mri-segmentation" / "kaggle_3m"):
        for i, name in enumerate(PATIENTS):
            write_patient(copy, name, seed=i)
        (copy / "data.csv").write_text("Patient,death01\nTCGA_AA_0001,0\n")
        (copy / "README.md").write_text("LGG segmentation dataset\n")
    return root


def zip_folder(folder: Path, out: Path) -> Path:
    with zipfile.ZipFile(out, "w") as archive:
        for path in sorted(folder.rglob("*")):
            archive.write(path, path.relative_to(folder))
    return out


def test_the_unpacked_download_reads_each_patient_once(tmp_path):
    root = kaggle_download(tmp_path / "lgg")
    folders = sources.patient_folders(root)
    assert [f.name for f in folders] == list(PATIENTS)
    assert all(f.parent == root / "kaggle_3m" for f in folders)


def test_differing_copies_are_an_error_naming_both(tmp_path):
    root = kaggle_download(tmp_path / "lgg")
    second = root / "lgg-mri-segmentation" / "kaggle_3m" / PATIENTS[1]
    mask = second / f"{PATIENTS[1]}_2_mask.tif"
    tifffile.imwrite(mask, np.zeros((16, 16), np.uint8))
    with pytest.raises(DataError) as caught:
        sources.patient_folders(root)
    message = str(caught.value)
    assert str(second) in message and str(root / "kaggle_3m" / PATIENTS[1]) in message
    assert "different files" in message and "\n" not in message


def test_prepare_reads_the_kaggle_zip_itself(tmp_path):
    archive = zip_folder(kaggle_download(tmp_path / "lgg"), tmp_path / "archive.zip")
    data = {
        "source": "lgg",
        "root": str(archive),
        "download": False,
        "cache": str(tmp_path / "cache"),
        "image_size": 8,
        "seed": 0,
        "split": {"train": 0.34, "val": 0.33, "test": 0.33},
    }
    cv = {"folds": 1, "val_fraction": 0.2, "fold": None}
    result = prepare(data_config(data), tmp_path / "prepared", tmp_path / "reports", cv_config(cv))
    assert result.calibration["patients"] == 3 and result.calibration["slices"] == 9
    (unpacked,) = (tmp_path / "cache").iterdir()
    assert unpacked.name.startswith("archive-")
    # only the patients' TIFFs came out of the zip: no data.csv, no README
    assert not list(unpacked.rglob("*.csv")) and not list(unpacked.rglob("*.md"))
    assert (
        sources.resolve_root(archive, data["cache"], fetch=False) == unpacked
    )  # unpacked once, then reused


def test_a_zip_that_is_not_the_lgg_set_is_refused(tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("hello")
    archive = zip_folder(other, tmp_path / "other.zip")
    with pytest.raises(DataError, match=r"other\.zip: not the Kaggle LGG set"):
        sources.resolve_root(archive, tmp_path / "cache", fetch=False)
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_a_corrupt_zip_is_one_line_and_leaves_no_cache(tmp_path):
    archive = zip_folder(kaggle_download(tmp_path / "lgg"), tmp_path / "archive.zip")
    data = bytearray(archive.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 400] = bytes(400)  # damage member data, keep the directory
    archive.write_bytes(bytes(data))
    with pytest.raises(DataError, match="archive.zip: ") as caught:
        sources.resolve_root(archive, tmp_path / "cache", fetch=False)
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())
    (tmp_path / "junk.zip").write_bytes(b"not a zip at all")
    with pytest.raises(DataError, match="junk.zip: not a zip archive"):
        sources.resolve_root(tmp_path / "junk.zip", tmp_path / "cache", fetch=False)


def test_download_failure_says_how_to_download_by_hand_and_writes_nothing(tmp_path):
    """kagglehub for real, with every request sent to a closed local port (so the test never
    downloads, also where the network is up): one error line, exit 2, no output at all."""
    env = os.environ | {
        "HOME": str(tmp_path / "home"),
        "KAGGLEHUB_CACHE": str(tmp_path / "kagglehub"),
        "KAGGLE_CONFIG_DIR": str(tmp_path / "kaggle"),
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "HTTP_PROXY": "http://127.0.0.1:9",
        "NO_PROXY": "",
    }
    env.pop("KAGGLE_USERNAME", None)
    env.pop("KAGGLE_KEY", None)
    result = subprocess.run(
        [
            *stage_command("prepare"),
            "data=lgg",
            "data.download=true",
            f"paths.prepared={tmp_path / 'prepared'}",
            f"paths.reports={tmp_path / 'reports'}",
            f"hydra.run.dir={tmp_path / 'hydra'}",
            "hydra.output_subdir=null",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("error: data.download: kagglehub could not fetch")
    assert "download it by hand from https://www.kaggle.com/datasets/mateuszbuda" in line
    written = {p.name for p in tmp_path.iterdir()} - {"hydra"}
    assert written == set(), written
