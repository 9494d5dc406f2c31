"""Inference: a model's foreground probabilities on a fold's test and validation slices, at
the training size and upsampled to the source resolution (:mod:`segloss.scoring`)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from segloss import scoring
from segloss.data.prepared import PreparedSplit, load_native, load_split
from segloss.models import preprocess


@dataclass(frozen=True)
class FoldData:
    """One fold's test and validation splits and their masks at the source resolution."""

    test: PreparedSplit
    val: PreparedSplit
    target_test: np.ndarray  # native masks: a segloss.stacks stack (sizes may differ)
    target_val: np.ndarray

    @classmethod
    def load(cls, prepared_dir: str | os.PathLike, fold: int | None) -> FoldData:
        test, val = (load_split(prepared_dir, name, fold=fold) for name in ("test", "val"))
        targets = (load_native(prepared_dir, name, fold=fold) for name in ("test", "val"))
        return cls(test, val, *targets)


@dataclass(frozen=True)
class Probabilities:
    """One model's foreground probabilities (N,H,W float32) on a fold."""

    test_low: np.ndarray  # test slices at the training size
    test: np.ndarray  # test slices at their source size (a stack, like FoldData's targets)
    val: np.ndarray  # validation slices at their source size


def predict_probabilities(
    model: torch.nn.Module, images: np.ndarray, batch_size: int, device: torch.device
) -> np.ndarray:
    """Foreground probabilities (N,H,W) float32 for uint8 (N,H,W,3) images, batch by batch."""
    out = np.empty(images.shape[:3], dtype=np.float32)
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            batch = torch.from_numpy(
                np.array(images[start : start + batch_size])
            )  # copy off the mmap
            logits = model(preprocess(batch.to(device)))
            out[start : start + len(batch)] = torch.sigmoid(logits[:, 0]).float().cpu().numpy()
    return out


def predict(
    model: torch.nn.Module, data: FoldData, batch_size: int, device: torch.device
) -> Probabilities:
    """Predict the fold's test and validation slices; upsample each to its source size."""
    low_test = predict_probabilities(model, data.test.images, batch_size, device)
    low_val = predict_probabilities(model, data.val.images, batch_size, device)
    return Probabilities(
        test_low=low_test,
        test=scoring.probabilities_like(low_test, data.target_test),
        val=scoring.probabilities_like(low_val, data.target_val),
    )
