"""The popular notebooks' data path: decode and resize the TIFF pair of every sample, every step.

A torch ``Dataset`` over ``<patient>_<n>.tif`` / ``_mask.tif`` files that opens both with
PIL, resizes them (bilinear image, nearest mask), scales to [0, 1], normalises with the
ImageNet mean and std and flips half the samples left-right; a shuffling ``DataLoader``
(``num_workers=0`` by default) feeds the same model, loss and AdamW step as the model-only
benchmark. ``speedup_vs_naive = segloss loop / naive`` at every image size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import Bench, median_rate, optimizer_step
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from segloss.data.kaggle import patient_dirs, slice_pairs

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


class TiffSlices(Dataset):
    """(image float (3,S,S), mask float (1,S,S)) decoded from the TIFF files on every access."""

    def __init__(self, root: Path, size: int, seed: int = 0) -> None:
        self.pairs = [(i, m) for d in patient_dirs(root) for _, i, m in slice_pairs(d)]
        self.size = size
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image_path, mask_path = self.pairs[index]
        shape = (self.size, self.size)
        image = np.asarray(Image.open(image_path).convert("RGB").resize(shape, Image.BILINEAR))
        mask = np.asarray(Image.open(mask_path).resize(shape, Image.NEAREST)) > 127
        if self.rng.random() < 0.5:
            image, mask = image[:, ::-1], mask[:, ::-1]
        x = torch.from_numpy(image.astype(np.float32) / 255.0).permute(2, 0, 1)
        y = torch.from_numpy(mask.astype(np.float32))[None]
        return (x - MEAN) / STD, y


def run(bench: Bench, size: int, num_workers: int = 0) -> dict[str, Any]:
    """Images/s of the naive loader + optimizer step at ``size`` (median of repeats)."""
    cfg = bench.config()
    batch = cfg.train.batch_size
    loader = DataLoader(
        TiffSlices(bench.kaggle_root, size),
        batch_size=batch,
        shuffle=True,
        drop_last=True,
        num_workers=num_workers,
    )
    step = optimizer_step(cfg)

    def batches():
        while True:
            yield from loader

    stream = batches()

    def run_steps(n: int) -> None:
        for _ in range(n):
            step(*next(stream))

    sizes = bench.sizes
    result = median_rate(run_steps, batch, sizes.steps[size], sizes.warmup_steps, sizes.repeats)
    return {"image_size": size, "batch_size": batch, "num_workers": num_workers, **result}
