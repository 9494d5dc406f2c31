"""LGG-like MRI generated locally from the MNI ICBM152 2009 templates, in the kaggle_3m layout.

Why: the default pipeline must run with no download, and the real data set may not be shipped.
The output goes through the same reader as real data (``segloss.data.kaggle``).

One patient = one random pose (a 3D affine) and a smooth elastic warp of the template, evaluated
only at the 20-24 axial planes that are written (never a whole warped volume), then:
tissue model per sequence -> lesion model -> skull/scalp ring -> bias field, contrast and noise
-> TIFF writer. The set is cached under ``<root>/<settings key>/`` and reused, never rebuilt.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import importlib.util
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import tifffile
import torch
import torch.nn.functional as F
from scipy import ndimage
from scipy.spatial.transform import Rotation
from scipy.special import expit

from segloss.errors import DataError
from segloss.io import atomic_path

log = logging.getLogger(__name__)

GENERATOR_VERSION = 2  # bump whenever the output changes for the same settings
FOV_MM = 256.0  # field of view of a written slice, as in the real scans
SLAB_MM = (-46.0, 78.0)  # MNI z range the slices span: cerebellum to vertex
LESION_Z_MM = (-15.0, 50.0)  # MNI z range of lesion centres: cerebral hemispheres
LESION_SHAPE = (1.0, 1.0, 0.65)  # lobes flatter in z: wide on a slice, over ~40 % of slices
TEMPLATE = "mni_icbm152_{}_tal_nlin_sym_09a_converted.nii.gz"

# Tissue model: mean intensity (0..1) per sequence (rows) and tissue (columns).
TISSUES = ("csf", "gm", "wm", "lesion", "skull", "scalp")
INTENSITY = np.array(
    [
        [0.16, 0.52, 0.74, 0.40, 0.05, 0.85],  # pre-contrast T1: WM > GM > CSF, lesion hypo
        [0.10, 0.58, 0.46, 0.92, 0.05, 0.50],  # FLAIR: CSF suppressed, lesion hyperintense
        [0.20, 0.55, 0.70, 0.46, 0.06, 0.90],  # post-contrast T1: LGG barely enhances
    ],
    dtype=np.float32,
)

MNI_NOTICE = """\
The anatomy is derived from the MNI ICBM152 2009a nonlinear symmetric templates (T1, grey and
white matter maps), as shipped in the nilearn package:

  Copyright (C) 1993-2004 Louis Collins, McConnell Brain Imaging Centre, Montreal Neurological
  Institute, McGill University. Permission to use, copy, modify, and distribute this software
  and its documentation for any purpose and without fee is hereby granted, provided that the
  above copyright notice appear in all copies. The authors and McGill University make no
  representations about the suitability of this software for any purpose. It is provided
  "as is" without express or implied warranty. The authors are not responsible for any data
  loss, equipment damage, property loss, or injury to subjects or patients resulting from the
  use or misuse of this software package.

References: V. S. Fonov et al., NeuroImage 47 (2009) S102 and NeuroImage 54 (2011) 313-327;
D. L. Collins et al., NeuroImage (1999). http://www.bic.mni.mcgill.ca/ServicesAtlases/ICBM152NLin2009
"""


@dataclass(frozen=True)
class SyntheticSettings:
    """Everything the output depends on; its hash names the cache folder. The prepare stage
    fills it from the ``data`` config (conf/data/synthetic.yaml)."""

    n_patients: int
    seed: int
    size: int  # pixels per side of the written TIFFs (data.tiff_size)
    n_slices: tuple[int, int]  # slices per patient, inclusive range

    def key(self) -> str:
        payload = json.dumps({**asdict(self), "version": GENERATOR_VERSION}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Templates:
    """Tissue probability maps (x, y, z voxels of 1 mm, RAS) and where lesions may sit."""

    csf: np.ndarray
    gm: np.ndarray
    wm: np.ndarray
    centre: np.ndarray  # voxel the patient grid is centred on (x, y: brain box; z: slab)
    slab_half: float  # half height of the slab of slices, mm
    lesion_sites: np.ndarray  # (K, 3) deep white-matter voxels of the cerebrum


@functools.cache
def load_templates() -> Templates:
    """Read the ICBM152 maps from the installed nilearn wheel (nilearn itself is not imported)."""
    spec = importlib.util.find_spec("nilearn")
    if spec is None or spec.origin is None:
        raise DataError("nilearn is not installed: the synthetic data needs its MNI templates")
    folder = Path(spec.origin).parent / "datasets" / "data"
    maps = {}
    for name in ("t1", "gm", "wm"):
        path = folder / TEMPLATE.format(name)
        if not path.is_file():
            raise DataError(f"{path}: MNI template missing from the nilearn package")
        image = nib.load(path)
        maps[name] = np.asarray(image.dataobj, dtype=np.float32) / 255.0
    affine = image.affine
    gm, wm = maps["gm"], maps["wm"]
    csf = np.clip(1.0 - gm - wm, 0.0, 1.0) * (maps["t1"] > 0)
    box = np.argwhere(maps["t1"] > 0)
    z_lo, z_hi = (np.array(SLAB_MM) - affine[2, 3]) / affine[2, 2]
    centre = np.array([*(box.min(0) + box.max(0))[:2] / 2, (z_lo + z_hi) / 2])
    deep_wm = ndimage.binary_erosion(wm > 0.9, iterations=4)
    lesion_lo, lesion_hi = (np.array(LESION_Z_MM) - affine[2, 3]) / affine[2, 2]
    deep_wm[..., : int(lesion_lo)] = False
    deep_wm[..., int(lesion_hi) :] = False
    return Templates(
        csf, gm, wm, centre, float(z_hi - z_lo) / 2, np.argwhere(deep_wm).astype(np.float32)
    )


def smooth_field(rng: np.random.Generator, shape: tuple[int, ...], cells: tuple[int, ...]):
    """Random field of about unit variance that varies smoothly over ``cells`` per axis.

    Cubic upsampling to ``(n, 32, 32)``, then bilinear in-plane to ``shape``: smooth and cheap.
    """
    coarse = rng.standard_normal(cells)
    mid = ndimage.zoom(coarse, np.divide((shape[0], 32, 32), cells), order=3, mode="nearest")
    planes = torch.from_numpy(mid.astype(np.float32))[None]
    full = F.interpolate(planes, size=shape[1:], mode="bilinear", align_corners=True)
    return full[0].numpy()


def sample_points(rng: np.random.Generator, tpl: Templates, n: int, size: int) -> np.ndarray:
    """Template voxel coordinates (3, n, size, size) of the patient's axial planes.

    Pose: one affine (rotation, scale, shift) plus a smooth elastic displacement. Planes run
    bottom to top; rows anterior to posterior; columns patient right to left (radiological).
    """
    spacing = FOV_MM / size
    centred = (np.arange(size, dtype=np.float32) - (size - 1) / 2) * spacing
    z = np.linspace(-tpl.slab_half, tpl.slab_half, n, dtype=np.float32)
    axes = (-centred[None, None, :], centred[::-1][None, :, None], z[:, None, None])
    rotation = Rotation.from_euler("xyz", rng.uniform(-1, 1, 3) * np.radians([6, 4, 12]))
    scale = rng.uniform(0.9, 1.1) * rng.uniform(0.96, 1.04, 3)
    matrix = (rotation.as_matrix() / scale).astype(np.float32)
    shift = tpl.centre + rng.normal(0.0, 3.0, 3)
    points = np.empty((3, n, size, size), np.float32)
    for i in range(3):
        points[i] = shift[i] + sum(matrix[i, j] * axes[j] for j in range(3))
        points[i] += 2.5 * smooth_field(rng, (n, size, size), (4, 5, 5))
    return points


def tissue_maps(tpl: Templates, points: np.ndarray) -> dict[str, np.ndarray]:
    """CSF, GM and WM probabilities at the sampled points (trilinear)."""
    return {
        name: ndimage.map_coordinates(getattr(tpl, name), points, order=1, output=np.float32)
        for name in ("csf", "gm", "wm")
    }


def lesion_model(
    rng: np.random.Generator, tpl: Templates, points: np.ndarray, tissue: dict[str, np.ndarray]
) -> np.ndarray:
    """Soft membership (0..1) of one irregular, infiltrative lesion, defined in template space.

    A union of 3-5 Gaussian lobes around a deep white-matter site, roughened by a smooth random
    field and confined to parenchyma (it spreads along white matter, spares CSF).
    """
    site = tpl.lesion_sites[rng.integers(len(tpl.lesion_sites))]
    radius = rng.uniform(25.0, 40.0)
    k = int(rng.integers(3, 6))
    offsets = rng.normal(0.0, 0.5 * radius, (k, 3)) * np.array(LESION_SHAPE)
    centres = site + offsets * (np.arange(k) > 0)[:, None]  # the first lobe sits on the site
    sigmas = radius * rng.uniform(0.45, 0.85, k)
    lobes = np.zeros(points.shape[1:], np.float32)
    for centre, sigma in zip(centres, sigmas, strict=True):
        d2 = sum(((points[i] - centre[i]) / stretch) ** 2 for i, stretch in enumerate(LESION_SHAPE))
        np.maximum(lobes, np.exp(-d2 / (2 * sigma**2)), out=lobes)
    lobes *= 1.0 + 0.35 * smooth_field(rng, lobes.shape, (6, 9, 9))
    parenchyma = np.clip(1.4 * (tissue["wm"] + 0.6 * tissue["gm"]), 0.0, 1.0)
    return expit((lobes - 0.5) / 0.03) * parenchyma


def skull_ring(rng: np.random.Generator, brain: np.ndarray, spacing: float) -> np.ndarray:
    """Weights (3, n, H, W) of a CSF rim, the skull and the scalp around the brain outline."""
    head = ndimage.gaussian_filter(brain, (0, 3 / spacing, 3 / spacing)) > 0.2
    outside = np.stack([ndimage.distance_transform_edt(~s) for s in head]) * spacing  # mm
    wobble = 1.0 + 0.15 * smooth_field(rng, brain.shape, (3, 6, 6))
    edges = np.cumsum([rng.uniform(1, 2.5), rng.uniform(4, 7), rng.uniform(4, 8)])
    bounds = np.concatenate([[0.0], edges])[:, None, None, None] * wobble
    step = expit((outside - bounds) / 0.6)  # soft 1 mm transitions
    return np.clip(step[:-1] - step[1:], 0.0, 1.0) * (outside > 0)


def render(rng: np.random.Generator, tpl: Templates, n: int, size: int):
    """One patient: images (n, size, size, 3) uint8 and masks (n, size, size) bool."""
    points = sample_points(rng, tpl, n, size)
    tissue = tissue_maps(tpl, points)
    lesion = lesion_model(rng, tpl, points, tissue)
    brain = np.clip(tissue["csf"] + tissue["gm"] + tissue["wm"], 0.0, 1.0)
    ring = skull_ring(rng, brain, FOV_MM / size)
    weights = np.stack([tissue["csf"] + ring[0], tissue["gm"], tissue["wm"], lesion, *ring[1:]])
    weights[:3] *= 1.0 - lesion  # partial volume: the lesion replaces the tissue it infiltrates
    contrast = INTENSITY * rng.uniform(0.9, 1.1, INTENSITY.shape).astype(np.float32)
    texture = 1.0 + 0.12 * smooth_field(rng, lesion.shape, (6, 9, 9))
    images = np.empty((n, size, size, 3), np.uint8)
    for c in range(3):
        signal = np.tensordot(contrast[c], weights, axes=1)
        signal += lesion * contrast[c, 3] * (texture - 1.0)
        signal *= np.exp(0.15 * smooth_field(rng, lesion.shape, (3, 4, 4)))  # bias field
        signal = np.clip(signal, 0.0, None) ** rng.uniform(0.85, 1.15)
        sigma = rng.uniform(0.012, 0.03)
        noise = rng.standard_normal((2, *signal.shape), dtype=np.float32) * sigma
        signal = np.hypot(signal + noise[0], noise[1])  # Rician magnitude noise
        gain = 255 * rng.uniform(0.7, 0.85)
        images[..., c] = np.clip(np.rint(signal * gain), 0, 255).astype(np.uint8)
    return images, lesion > 0.5


def patient_name(rng: np.random.Generator, index: int) -> str:
    """Shaped like a TCGA folder name, recognisably synthetic: ``TCGA_SY_0001_19990206``."""
    date = dt.date(1995, 1, 1) + dt.timedelta(days=int(rng.integers(0, 7 * 365)))
    return f"TCGA_SY_{index + 1:04d}_{date:%Y%m%d}"


def write_patient(folder: Path, images: np.ndarray, masks: np.ndarray) -> None:
    """Write ``<P>_<n>.tif`` (RGB) and ``<P>_<n>_mask.tif`` ({0, 255}), slice 1 at the bottom."""
    folder.mkdir(parents=True)
    for number, (image, mask) in enumerate(zip(images, masks, strict=True), start=1):
        stem = folder / f"{folder.name}_{number}"
        tifffile.imwrite(f"{stem}.tif", image, photometric="rgb", compression="zlib")
        tifffile.imwrite(
            f"{stem}_mask.tif",
            mask.astype(np.uint8) * 255,
            photometric="minisblack",
            compression="zlib",
        )


def readme(settings: SyntheticSettings) -> str:
    return (
        "# Synthetic LGG-like MRI (segloss)\n\n"
        "Generated by `segloss.data.synthetic`; not patient data. Layout as the Kaggle LGG "
        "kaggle_3m set: `kaggle_3m/<PATIENT>/<PATIENT>_<n>.tif` (RGB: pre-contrast, FLAIR, "
        "post-contrast) and `<PATIENT>_<n>_mask.tif` ({0, 255}); slice 1 at the bottom.\n\n"
        f"Settings: `{json.dumps(asdict(settings))}`, generator version {GENERATOR_VERSION}.\n\n"
        "## Template copyright and permission notice\n\n" + MNI_NOTICE
    )


def generate(root: str | Path, settings: SyntheticSettings) -> tuple[Path, bool]:
    """Return ``(<root>/<key>, generated)``: the kaggle_3m parent, generated only if absent.

    Built in a temporary sibling and renamed, so a folder that exists is complete.
    """
    out = Path(root) / settings.key()
    if (out / "kaggle_3m").is_dir():
        log.info("reusing synthetic data in %s", out)
        return out, False
    if out.exists():
        raise DataError(f"{out}: incomplete synthetic data folder (no kaggle_3m); delete it")
    with atomic_path(out) as tmp:
        tmp.mkdir()
        tpl = load_templates()
        log.info("generating %d synthetic patients into %s", settings.n_patients, out)
        for index in range(settings.n_patients):
            rng = np.random.default_rng([settings.seed, index])
            name = patient_name(rng, index)
            n = int(rng.integers(settings.n_slices[0], settings.n_slices[1] + 1))
            write_patient(tmp / "kaggle_3m" / name, *render(rng, tpl, n, settings.size))
        (tmp / "README.md").write_text(readme(settings))
        (tmp / "settings.json").write_text(json.dumps(asdict(settings), indent=2) + "\n")
    return out, True
