"""data=folder: any folder of 2-D images with binary masks (segloss.data.folder), native
scoring of images of several sizes, bad input, and the PH2 preset on the real images.

Every fixture is generated here (never real data); the PH2 test reads ../shared and skips
where it is absent.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from helpers import cv_config, data_config, stage_command
from omegaconf import OmegaConf
from PIL import Image

from segloss import metrics, stacks
from segloss.data import folder as folder_reader
from segloss.data.preparation import prepare
from segloss.data.prepared import load_manifest, load_meta, load_native, load_tested
from segloss.errors import ConfigError, DataError

REPO = Path(__file__).resolve().parents[1]
PH2 = REPO.parent / "shared" / "data" / "ph2"
SIZES = ((40, 52), (48, 48), (56, 44))  # three image sizes (height, width)
CV = {"folds": 1, "val_fraction": 0.2, "fold": None}
SPLIT = {"train": 0.5, "val": 0.25, "test": 0.25}


def folder_cfg(root: Path, **overrides) -> dict:
    """The data settings of conf/data/folder.yaml for ``root``."""
    cfg = {
        "source": "folder",
        "root": str(root),
        "images": "images/*",
        "masks": "masks/*",
        "image_id": "(?P<id>.+)",
        "mask_id": "(?P<id>.+)_mask",
        "image_size": 32,
        "seed": 0,
        "split": SPLIT,
    }
    return cfg | overrides


def write_folder(root: Path, n: int = 12, grey_every: int = 3, suffix: str = ".png") -> Path:
    """``n`` images of the three :data:`SIZES` (every ``grey_every``-th grey) with a bright
    ellipse as foreground, masks ``<id>_mask.png`` in {0, 255}."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        h, w = SIZES[i % len(SIZES)]
        yy, xx = np.mgrid[:h, :w]
        cy, cx = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w
        ry, rx = rng.uniform(0.12, 0.3) * h, rng.uniform(0.12, 0.3) * w
        mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        base = rng.integers(20, 90, (h, w, 3))
        image = np.clip(base + 120 * mask[..., None], 0, 255).astype(np.uint8)
        picture = Image.fromarray(image[..., 0] if i % grey_every == 0 else image)
        picture.save(root / "images" / f"case{i:02d}{suffix}")
        mask_image = Image.fromarray((mask * 255).astype(np.uint8))
        mask_image.save(root / "masks" / f"case{i:02d}_mask.png")
    return root


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return write_folder(tmp_path / "set")


def _prepare(cfg: dict, out: Path, cv: dict = CV):
    return prepare(data_config(cfg), out / "prepared", out / "reports", cv_config(cv))


def test_images_of_three_sizes_keep_their_own_native_masks(folder: Path, tmp_path: Path):
    _prepare(folder_cfg(folder), tmp_path)
    prepared = tmp_path / "prepared"
    manifest = load_manifest(prepared)
    assert len(manifest) == 12 and set(manifest["patient"]) == {f"case{i:02d}" for i in range(12)}
    assert (manifest["slice"] == 0).all()  # each image its own group, index 0 in it
    sizes = {tuple(r) for r in manifest[["native_height", "native_width"]].to_numpy()}
    assert sizes == set(SIZES) and load_meta(prepared)["native_size"] is None
    split, native = load_tested(prepared)
    assert stacks.is_ragged(native)
    for patient, mask in zip(split.patients, native, strict=True):
        written = np.asarray(Image.open(folder / "masks" / f"{patient}_mask.png")) > 0
        np.testing.assert_array_equal(mask, written)  # the source mask, bit for bit
    assert split.images.shape[1:] == (32, 32, 3)
    card = (tmp_path / "reports" / "data_card.md").read_text()
    assert "3 sizes" in card and "foreground pixels, % of all pixels" in card


def test_native_scoring_on_two_sizes_matches_a_hand_count():
    small = np.zeros((4, 6), bool)
    small[1:3, 1:4] = True  # 6 target pixels
    pred_small = np.zeros((4, 6), bool)
    pred_small[1:3, 2:5] = True  # 6 predicted, 4 overlap
    large = np.zeros((8, 5), bool)
    large[2:6, 1:3] = True  # 8 target pixels
    pred_large = np.zeros((8, 5), bool)
    pred_large[2:4, 1:3] = True  # 4 predicted, all inside
    target, pred = stacks.stack([small, large]), stacks.stack([pred_small, pred_large])
    frame = stacks.frame_by_block(
        lambda p, t: metrics.per_image(p, t, nsd_tolerance=1.0), pred, target
    )
    assert frame["tp"].tolist() == [4, 4] and frame["fp"].tolist() == [2, 0]
    assert frame["fn"].tolist() == [2, 4] and frame["tn"].tolist() == [24 - 8, 40 - 8]
    assert frame["dice"].tolist() == pytest.approx([8 / 12, 8 / 12])
    assert frame["pixel_accuracy"].tolist() == pytest.approx([20 / 24, 36 / 40])
    # empty prediction on the larger image: HD95 is that image's own diagonal
    frame = stacks.frame_by_block(
        lambda p, t: metrics.per_image(p, t, nsd_tolerance=1.0),
        stacks.stack([pred_small, np.zeros((8, 5), bool)]),
        target,
    )
    assert frame["hd95"].iloc[1] == pytest.approx(np.hypot(8, 5))
    bits = stacks.pack(target)
    assert len(bits) == 3 + 5  # 24 bits -> 3 bytes, 40 bits -> 5 bytes
    again = stacks.unpack(bits, stacks.shapes(target))
    assert all((a == b).all() for a, b in zip(again, target, strict=True))


def test_groups_stay_together_and_strata_spread(folder: Path, tmp_path: Path):
    ids = [f"case{i:02d}" for i in range(12)]
    # 6 subjects of 2 images each (images i and i + 3 share a size); site a: cases 0-5
    table = pd.DataFrame(
        {
            "name": ids,
            "subject": [f"S{i % 3}{i // 6}" for i in range(12)],
            "site": ["a" if i < 6 else "b" for i in range(12)],
        }
    )
    table.to_csv(folder / "groups.csv", index=False)
    cfg = folder_cfg(
        folder, table="groups.csv", table_id="name", table_group="subject", table_stratum="site"
    )
    _prepare(cfg, tmp_path, {"folds": 3, "val_fraction": 0.3, "fold": None})
    manifest = load_manifest(tmp_path / "prepared")
    assert manifest["patient"].nunique() == 6
    assert (manifest.groupby("patient")["fold"].nunique() == 1).all()  # a group in one fold
    assert manifest.groupby("patient")["slice"].apply(sorted).tolist() == [[0, 1]] * 6
    meta = load_meta(tmp_path / "prepared")
    assert meta["stratified_by"] == "site"
    sites = manifest.drop_duplicates("patient").assign(site=lambda m: m["patient"].str[-1])
    per_fold = sites.groupby("fold")["site"].nunique()
    assert (per_fold == 2).all()  # every fold tests a group of each site


BAD = {
    "no images match": (
        {"images": "pictures/*.png"},
        None,
        "no images match data.images='pictures/*.png'",
    ),
    "image without mask": (
        {},
        lambda root: [(root / "masks" / f"case0{i}_mask.png").unlink() for i in range(4)],
        "images without a mask: ",  # the first three named, then "and 1 more (4)"
    ),
    "mask without image": (
        {},
        lambda root: (root / "images" / "case11.png").unlink(),
        "masks without an image: ",
    ),
    "mask size": (
        {},
        lambda root: Image.new("L", (9, 9)).save(root / "masks" / "case04_mask.png"),
        "case04_mask.png: mask is 9x9, its image 48x48",
    ),
    "mask values": (
        {},
        lambda root: Image.fromarray(np.arange(48 * 48).reshape(48, 48).astype(np.uint8) % 3).save(
            root / "masks" / "case04_mask.png"
        ),
        "case04_mask.png: mask has 3 values",
    ),
    "truncated": (
        {},
        lambda root: (root / "images" / "case05.png").write_bytes(
            (root / "images" / "case05.png").read_bytes()[:100]
        ),
        "case05.png: unreadable image",
    ),
    "table lacks images": (
        {"table": "t.csv"},
        lambda root: pd.DataFrame({"image": ["case00", "case01"]}).to_csv(root / "t.csv"),
        "t.csv: images not listed: case02, case03, case04 and 7 more (10)",
    ),
    "table names unknown": (
        {"table": "t.csv"},
        lambda root: pd.DataFrame({"image": [f"case{i:02d}" for i in range(13)]}).to_csv(
            root / "t.csv"
        ),
        "t.csv: ids with no image: case12",
    ),
    "volume": (
        {},
        lambda root: _replace_with_volume(root / "images" / "case00.png"),
        "case00.tif: expected a 2-D RGB or grey image, got shape (3, 40, 52)",
    ),
}


def _replace_with_volume(path: Path) -> None:
    """A 3-slice TIFF stack in place of a 2-D image."""
    tifffile.imwrite(path.with_suffix(".tif"), np.zeros((3, 40, 52), np.uint8))
    path.unlink()


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_one_data_error_naming_the_file(case: str, folder: Path, tmp_path: Path):
    overrides, damage, message = BAD[case]
    if damage is not None:
        damage(folder)
    with pytest.raises((DataError, ConfigError)) as raised:
        _prepare(folder_cfg(folder, **overrides), tmp_path / "out")
    assert message in str(raised.value) and "\n" not in str(raised.value)
    assert not (tmp_path / "out" / "prepared").exists()


def test_more_folds_than_groups_is_a_config_error(folder: Path, tmp_path: Path):
    with pytest.raises(ConfigError, match="cv.folds=13 is more than the 12 patients"):
        _prepare(folder_cfg(folder), tmp_path, {"folds": 13, "val_fraction": 0.2, "fold": None})


def test_entry_point_bad_folder_input_exits_2_with_one_line(folder: Path, tmp_path: Path):
    (folder / "masks" / "case03_mask.png").unlink()
    cmd = [
        *stage_command("prepare"),
        "data=folder",
        f"data.root={folder}",
        "data.mask_id='(?P<id>.+)_mask'",
        f"paths.prepared={tmp_path / 'prepared'}",
        f"paths.reports={tmp_path / 'reports'}",
        f"hydra.run.dir={tmp_path / 'hydra'}",
        "print_config=false",
    ]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "case03.png" in lines[0]
    assert not (tmp_path / "prepared").exists()


def test_nnunet_layout_preset_reads_imagesTr_and_labelsTr(tmp_path: Path):
    source = write_folder(tmp_path / "src", n=8)
    raw = tmp_path / "Dataset900_Blobs"
    (raw / "imagesTr").mkdir(parents=True)
    (raw / "labelsTr").mkdir()
    for i in range(8):
        (source / "images" / f"case{i:02d}.png").rename(raw / "imagesTr" / f"c{i}_0000.png")
        mask = np.asarray(Image.open(source / "masks" / f"case{i:02d}_mask.png")) // 255
        Image.fromarray(mask.astype(np.uint8)).save(raw / "labelsTr" / f"c{i}.png")
    preset = OmegaConf.to_container(OmegaConf.load(REPO / "conf" / "data" / "nnunet.yaml"))
    cfg = folder_cfg(raw, **{k: v for k, v in preset.items() if k not in ("defaults", "root")})
    _prepare(cfg, tmp_path / "out")
    manifest = load_manifest(tmp_path / "out" / "prepared")
    assert sorted(manifest["patient"]) == [f"c{i}" for i in range(8)]
    assert manifest["tumour_pixels"].gt(0).all()
    Image.new("L", (52, 40)).save(raw / "imagesTr" / "c0_0001.png")  # a second channel
    with pytest.raises(DataError, match="c0_0001"):
        _prepare(cfg, tmp_path / "again")


@pytest.fixture(scope="module")
def ph2() -> Path:
    if not (PH2 / "images").is_dir():
        pytest.skip(f"PH2 not found at {PH2} (only present beside the repo)")
    return PH2


def test_ph2_preset_prepares_ten_real_images(ph2: Path, tmp_path: Path):
    """conf/data/ph2.yaml on 10 real images: links to their folders and the 10 rows of
    diagnosis.csv in a temporary folder (nothing copied into the repository)."""
    root = tmp_path / "ph2"
    (root / "images").mkdir(parents=True)
    first = sorted(p.name for p in (ph2 / "images").iterdir())[:10]
    for name in first:
        (root / "images" / name).symlink_to(ph2 / "images" / name)
    diagnosis = pd.read_csv(ph2 / "diagnosis.csv")
    diagnosis[diagnosis["image"].isin(first)].to_csv(root / "diagnosis.csv", index=False)
    preset = OmegaConf.to_container(OmegaConf.load(REPO / "conf" / "data" / "ph2.yaml"))
    preset = {k: v for k, v in preset.items() if k not in ("defaults", "root")}
    _prepare(folder_cfg(root, **preset), tmp_path, {"folds": 2, "val_fraction": 0.2, "fold": None})
    manifest = load_manifest(tmp_path / "prepared")
    assert sorted(manifest["patient"]) == first
    assert manifest["native_width"].between(761, 769).all()
    meta = load_meta(tmp_path / "prepared")
    assert meta["stratified_by"] == "clinical_diagnosis" and len(meta["strata"]) == 10
    native = load_native(tmp_path / "prepared", "test", fold=0)
    share = np.mean([m.mean() for m in native])
    assert 0.02 < share < 0.99  # lesions cover 3-98 % of an image


@pytest.mark.slow
def test_folder_of_three_sizes_runs_every_stage(tmp_path: Path):
    """Prepare, train (two losses, one epoch), evaluate and report on 12 generated images of
    three sizes, through the entry points; every count at each image's own size."""
    root = write_folder(tmp_path / "set")
    out = tmp_path / "out"
    common = [
        "data=folder",
        f"data.root={root}",
        "data.mask_id='(?P<id>.+)_mask'",
        "data.image_size=32",
        "tracking=none",
        "print_config=false",
        *(f"paths.{k}={out / k}" for k in ("prepared", "models", "predictions", "reports")),
    ]
    stages = {
        "prepare": [],
        "train": ["-m", "loss=bce,bce_dice", "seed=0", "train.epochs=1", "train.batch_size=8",
                  f"hydra.sweep.dir={tmp_path / 'multirun'}"],
        "evaluate": [],
        "report": [],
    }  # fmt: skip
    for stage, extra in stages.items():
        cmd = [*stage_command(stage), *extra, *common]
        if stage != "train":
            cmd.append(f"hydra.run.dir={tmp_path / stage}")
        done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{stage}:\n{done.stderr[-3000:]}"
    per_image = pd.read_csv(out / "reports" / "metrics" / "per_image.csv", dtype={"patient": str})
    assert set(per_image["loss"]) == {"bce", "bce_dice"}
    truth = {
        p: np.count_nonzero(np.asarray(Image.open(root / "masks" / f"{p}_mask.png")))
        for p in per_image["patient"]
    }
    assert (per_image["gt_pixels"] == per_image["patient"].map(truth)).all()
    sizes = {np.asarray(Image.open(root / "masks" / f"{p}_mask.png")).size for p in truth}
    tn_fp = per_image["tn"] + per_image["fp"] + per_image["tp"] + per_image["fn"]
    assert set(tn_fp) == sizes and len(sizes) >= 2  # each image counted at its own size
    verdict = json.loads((out / "reports" / "verdict.json").read_text())
    assert verdict["metric"] == "dice_per_patient" and verdict["verdict"] is not None
    html = (out / "reports" / "report.html").read_text()
    assert "binary masks of set" in html


def test_palette_mask_reads_its_indices_not_its_colours(tmp_path: Path):
    """A VOC-style palette mask (index 1 drawn red) is binary by its indices."""
    indices = np.zeros((6, 8), np.uint8)
    indices[2:4, 3:6] = 1
    mask = Image.fromarray(indices, mode="P")
    mask.putpalette([0, 0, 0, 200, 0, 0] + [0] * 762)
    mask.save(tmp_path / "m.png")
    read = folder_reader.read_mask(tmp_path / "m.png", (6, 8), None)
    np.testing.assert_array_equal(read, indices == 1)
