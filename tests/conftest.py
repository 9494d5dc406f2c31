"""Shared fixtures: the real LGG sample (skipped where absent) and a tiny prepared data set."""

from __future__ import annotations

import subprocess
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from segloss.data import card
from segloss.data.prepared import PreparedSplit, write_prepared

REPO = Path(__file__).resolve().parents[1]
LGG_SAMPLE = REPO.parent / "shared" / "data" / "lgg_sample"


@pytest.fixture(autouse=True)
def _restore_torch_globals():
    """train() sets process-wide torch state; give every other test its defaults back."""
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic)


def wait_for_http(url: str, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    """Wait until ``url`` answers; fail with the end of ``log`` if ``proc`` dies or times out."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"{url} did not answer:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def lgg_sample() -> Path:
    """The 8 real kaggle_3m patients beside the repo; skip where a clone has no ../shared."""
    if not (LGG_SAMPLE / "kaggle_3m").is_dir():
        pytest.skip(f"real LGG sample not found at {LGG_SAMPLE} (only present beside the repo)")
    return LGG_SAMPLE


def make_blob_split(
    rng: np.random.Generator, patients: list[str], slices_per_patient: int, size: int
) -> PreparedSplit:
    """Slices with one bright FLAIR blob as 'tumour' in about half of them: learnable, tiny."""
    images, masks, ids, nums = [], [], [], []
    yy, xx = np.mgrid[:size, :size]
    for patient in patients:
        for s in range(1, slices_per_patient + 1):
            img = rng.integers(20, 90, size=(size, size, 3), dtype=np.uint8)
            mask = np.zeros((size, size), np.uint8)
            if s % 2 == 0:
                cy, cx = rng.integers(size // 4, 3 * size // 4, size=2)
                r = rng.integers(max(2, size // 16), max(3, size // 6))
                mask = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).astype(np.uint8)
                img[..., 1] = np.where(mask == 1, 230, img[..., 1])
            images.append(img)
            masks.append(mask)
            ids.append(patient)
            nums.append(s)
    return PreparedSplit(np.stack(images), np.stack(masks), np.array(ids), np.array(nums))


def build_tiny_prepared(out: Path, size: int = 32, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    splits = {
        "train": make_blob_split(rng, ["P_TR_1", "P_TR_2", "P_TR_3"], 6, size),
        "val": make_blob_split(rng, ["P_VA_1"], 6, size),
        "test": make_blob_split(rng, ["P_TE_1", "P_TE_2", "P_TE_3"], 6, size),
    }
    prepared = write_prepared(out, splits, {"source": "blobs", "normalisation": "none (test data)"})
    card.write_tables(prepared)  # the prepare stage writes the data card the report reads
    return prepared


@pytest.fixture(scope="session")
def tiny_prepared(tmp_path_factory) -> Path:
    """A 32x32 prepared folder (3 train, 1 val, 3 test patients) in the prepare stage's format."""
    return build_tiny_prepared(tmp_path_factory.mktemp("tiny") / "prepared")
