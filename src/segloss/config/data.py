"""The ``data`` group: a shared base and one schema per source (``conf/data/<source>.yaml``).

Used by :mod:`segloss.data.preparation`; ``data`` is left out of the model fingerprint
(the prepared data's hash covers it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

from omegaconf import MISSING

from segloss.config.checks import from_mapping, int_at_least, is_int, is_number, require
from segloss.errors import ConfigError

SPLITS = ("train", "val", "test")
SOURCES = ("synthetic", "lgg", "folder")


def check_fractions(fractions: Mapping[str, object], setting: str = "data.split") -> None:
    """Split fractions: exactly train/val/test, each >= 0, summing to 1."""
    if set(fractions) != set(SPLITS):
        raise ConfigError(f"{setting}: expected keys {', '.join(SPLITS)}, got {sorted(fractions)}")
    values = [fractions[name] for name in SPLITS]
    if not all(is_number(v) and v >= 0 for v in values) or abs(sum(values) - 1.0) > 1e-6:
        raise ConfigError(f"{setting}: fractions {dict(fractions)} must be >= 0 and sum to 1")


@dataclass
class Split:
    """Share of the patients per split (patient level, stratified by tumour burden)."""

    train: float = 0.6
    val: float = 0.15
    test: float = 0.25

    def __post_init__(self) -> None:
        check_fractions(asdict(self))


@dataclass
class Normalise:
    """Percentile window of each patient's non-zero voxels, mapped to 0..255."""

    low: float = 1.0
    high: float = 99.0

    def __post_init__(self) -> None:
        ok = is_number(self.low) and is_number(self.high) and 0 <= self.low < self.high <= 100
        require(ok, f"data.normalise={asdict(self)}: need 0 <= low < high <= 100")


def _size(key: str, value: object, minimum: int) -> None:
    # int(7.5) would silently train at 7 pixels: only whole numbers are sizes and counts
    require(is_int(value), f"data.{key}={value!r} must be an integer")
    require(value >= minimum, f"data.{key}={value} must be >= {minimum}")


@dataclass
class DataConfig:
    """What every source shares. The shared values are set here, once (not in each source's
    yaml); ``source`` and ``root`` and the source's own settings in conf/data/<source>.yaml."""

    source: str = MISSING
    root: str = MISSING
    image_size: int = 64  # prepared size; training reads these arrays
    seed: int = 0  # patient split (and the synthetic generator)
    split: Split = field(default_factory=Split)
    normalise: Normalise = field(default_factory=Normalise)

    def __post_init__(self) -> None:
        _size("image_size", self.image_size, 8)
        require(int_at_least(self.seed, 0), f"data.seed={self.seed!r} must be an integer >= 0")


@dataclass
class SyntheticData(DataConfig):
    """LGG-like MRI generated from the MNI templates, cached under ``<root>/<settings key>/``."""

    n_patients: int = MISSING
    n_slices: list[int] = MISSING  # [min, max] axial slices per patient
    tiff_size: int = MISSING  # pixels per side of the generated TIFFs

    def __post_init__(self) -> None:
        super().__post_init__()
        _size("n_patients", self.n_patients, 3)
        _size("tiff_size", self.tiff_size, 16)
        slices = list(self.n_slices)
        ok = len(slices) == 2 and all(int_at_least(n, 1) for n in slices)
        require(
            ok and slices[0] <= slices[1],
            f"data.n_slices={slices} must be [min, max] with 1 <= min <= max",
        )


@dataclass
class LggData(DataConfig):
    """The Kaggle LGG set: a kaggle_3m folder, its parent, the zip, or a kagglehub download."""

    download: bool = MISSING  # true: fetch mateuszbuda/lgg-mri-segmentation (root unused)
    cache: str = MISSING  # where a zip given as root is unpacked (once)

    def __post_init__(self) -> None:
        super().__post_init__()
        ok = isinstance(self.download, bool)
        require(ok, f"data.download={self.download!r} must be true or false")


@dataclass
class FolderData(DataConfig):
    """Any folder of 2-D images with binary masks (segloss.data.folder): globs under ``root``,
    an id regex per side, an optional CSV of per-image group and stratum."""

    images: str = MISSING  # glob under root selecting the image files
    masks: str = MISSING  # glob under root selecting the mask files
    image_id: str = MISSING  # regex with (?P<id>...), matched against an image file's stem
    mask_id: str = MISSING  # the same for a mask's stem: equal ids pair an image and its mask
    table: str | None = None  # CSV (under root, or absolute): one row per image id
    table_id: str = "image"  # its column of image ids
    table_group: str | None = None  # its column of groups (null: each image its own group)
    table_stratum: str | None = None  # its column of strata (null: by foreground share)
    mask_threshold: float | None = None  # foreground = value above; null: any non-zero

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in ("images", "masks", "image_id", "mask_id"):
            value = getattr(self, key)
            require(isinstance(value, str) and value != "", f"data.{key} must be set")
        t = self.mask_threshold
        require(t is None or is_number(t), f"data.mask_threshold={t!r} must be a number or null")


DATA_SCHEMAS: dict[str, type[DataConfig]] = {
    "synthetic": SyntheticData,
    "lgg": LggData,
    "folder": FolderData,
}


def data_config(values: Mapping[str, object]) -> SyntheticData | LggData | FolderData:
    """The validated ``data`` settings of the source ``values["source"]`` names."""
    source = values.get("source")
    if source not in DATA_SCHEMAS:
        raise ConfigError(f"data.source={source!r}: expected one of {', '.join(SOURCES)}")
    return from_mapping(DATA_SCHEMAS[source], values, "data")
