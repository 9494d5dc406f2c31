"""The kaggle_3m reader: the real sample, numeric order, and every bad input as one-line errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from segloss.data import kaggle
from segloss.errors import DataError


def write_fake_patient(
    root: Path, name: str = "TCGA_XX_0001_20000101", numbers=(1, 2, 3), size: int = 8
) -> Path:
    """A tiny patient folder in the kaggle_3m layout (tumour on slice 2), written with tifffile."""
    folder = root / "kaggle_3m" / name
    folder.mkdir(parents=True, exist_ok=True)
    for n in numbers:
        image = np.full((size, size, 3), 40 + n, np.uint8)
        mask = np.zeros((size, size), np.uint8)
        if n == 2:
            mask[2:5, 3:6] = 255
            image[2:5, 3:6, 1] = 200
        tifffile.imwrite(folder / f"{name}_{n}.tif", image, photometric="rgb")
        tifffile.imwrite(folder / f"{name}_{n}_mask.tif", mask)
    return folder


def one_line_error(exc: pytest.ExceptionInfo, *fragments: str) -> None:
    message = str(exc.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message


def test_real_sample_reads_all_slices_in_numeric_order(lgg_sample: Path):
    patients = list(kaggle.read_patients(lgg_sample))
    folders = sorted(p.name for p in (lgg_sample / "kaggle_3m").iterdir() if p.is_dir())
    assert [p.name for p in patients] == folders and len(patients) == 8
    assert sum(len(p.slices) for p in patients) == 238
    for p in patients:
        assert p.slices.tolist() == list(range(1, len(p.slices) + 1))
        assert p.images.dtype == np.uint8 and p.images.shape[1:] == (256, 256, 3)
        assert p.masks.dtype == bool and p.masks.shape == p.images.shape[:3]
        assert p.files[9].name == f"{p.name}_10.tif"
    assert all(p.masks.any() for p in patients)


def test_parent_or_kaggle_3m_folder_both_work(tmp_path: Path):
    write_fake_patient(tmp_path)
    assert kaggle.patient_dirs(tmp_path) == kaggle.patient_dirs(tmp_path / "kaggle_3m")


def test_numeric_slice_order_and_mask_threshold(tmp_path: Path):
    write_fake_patient(tmp_path, numbers=(10, 2, 1, 9))
    (patient,) = kaggle.read_patients(tmp_path)
    assert patient.slices.tolist() == [1, 2, 9, 10]
    assert patient.masks.sum(axis=(1, 2)).tolist() == [0, 9, 0, 0]
    assert patient.images[1, 3, 4].tolist() == [42, 200, 42]  # channel order kept


def test_missing_root(tmp_path: Path):
    with pytest.raises(DataError) as exc:
        list(kaggle.read_patients(tmp_path / "nowhere"))
    one_line_error(exc, "nowhere", "not found")


def test_root_without_patient_folders(tmp_path: Path):
    (tmp_path / "kaggle_3m").mkdir()
    with pytest.raises(DataError) as exc:
        list(kaggle.read_patients(tmp_path))
    one_line_error(exc, "kaggle_3m", "no patient folders")


def test_patient_folder_without_slices(tmp_path: Path):
    (tmp_path / "kaggle_3m" / "TCGA_XX_0002_20000101").mkdir(parents=True)
    with pytest.raises(DataError) as exc:
        list(kaggle.read_patients(tmp_path))
    one_line_error(exc, "TCGA_XX_0002_20000101", "no slices")


def test_image_without_mask(tmp_path: Path):
    folder = write_fake_patient(tmp_path)
    (folder / f"{folder.name}_3_mask.tif").unlink()
    with pytest.raises(DataError) as exc:
        list(kaggle.read_patients(tmp_path))
    one_line_error(exc, f"{folder.name}_3.tif", "has no mask")


def test_mask_without_image(tmp_path: Path):
    folder = write_fake_patient(tmp_path)
    (folder / f"{folder.name}_2.tif").unlink()
    with pytest.raises(DataError) as exc:
        list(kaggle.read_patients(tmp_path))
    one_line_error(exc, f"{folder.name}_2_mask.tif", "has no image")


def test_mask_values_other_than_0_and_255(tmp_path: Path):
    folder = write_fake_patient(tmp_path)
    bad = folder / f"{folder.name}_2_mask.tif"
    tifffile.imwrite(bad, np.array([[0, 1], [128, 255]], np.uint8).repeat(4, 0).repeat(4, 1))
    with pytest.raises(DataError) as exc:
        list(kaggle.read_patients(tmp_path))
    one_line_error(exc, str(bad), "0 or 255", "[1, 128]")


@pytest.mark.parametrize(
    "shape", [(8, 8), (8, 8, 4), (8, 8, 1)], ids=["greyscale", "4-channel", "1-channel"]
)
def test_wrong_image_shape_or_channels(tmp_path: Path, shape):
    folder = write_fake_patient(tmp_path)
    bad = folder / f"{folder.name}_1.tif"
    tifffile.imwrite(bad, np.zeros(shape, np.uint8))
    with pytest.raises(DataError) as exc:
        list(kaggle.read_patients(tmp_path))
    one_line_error(exc, str(bad), "expected an RGB uint8 image")


def test_wrong_image_dtype(tmp_path: Path):
    folder = write_fake_patient(tmp_path)
    bad = folder / f"{folder.name}_1.tif"
    tifffile.imwrite(bad, np.zeros((8, 8, 3), np.uint16), photometric="rgb")
    with pytest.raises(DataError) as exc:
        list(kaggle.read_patients(tmp_path))
    one_line_error(exc, str(bad), "uint16")


def test_mask_of_another_size(tmp_path: Path):
    folder = write_fake_patient(tmp_path)
    bad = folder / f"{folder.name}_3_mask.tif"
    tifffile.imwrite(bad, np.zeros((8, 6), np.uint8))
    with pytest.raises(DataError) as exc:
        list(kaggle.read_patients(tmp_path))
    one_line_error(exc, str(bad), "shape (8, 8)")


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_unreadable_or_truncated_tiff(tmp_path: Path, damage: str):
    folder = write_fake_patient(tmp_path, size=64)
    bad = folder / f"{folder.name}_2.tif"
    data = bad.read_bytes()
    bad.write_bytes(b"not a tiff at all" if damage == "garbage" else data[: len(data) // 3])
    with pytest.raises(DataError) as exc:
        list(kaggle.read_patients(tmp_path))
    one_line_error(exc, str(bad), "unreadable TIFF")


def test_unexpected_file_name(tmp_path: Path):
    folder = write_fake_patient(tmp_path)
    tifffile.imwrite(folder / "scan.tif", np.zeros((8, 8), np.uint8))
    with pytest.raises(DataError) as exc:
        list(kaggle.read_patients(tmp_path))
    one_line_error(exc, "scan.tif", "unexpected file name")
