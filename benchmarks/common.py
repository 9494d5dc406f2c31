"""What every benchmark shares: measurement sizes, the data sets, the real config, timing.

Data: a few synthetic patients in the kaggle_3m layout (``segloss.data.synthetic``, 256x256
TIFFs) are generated once per run; prepared folders at any image size are built from them
with the prepare stage's own ``normalise`` and ``resize`` and written by ``write_prepared``,
slices repeated to reach the requested split sizes.
"""

from __future__ import annotations

import os
import platform
import re
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra import compose, initialize_config_dir

from segloss import tracking
from segloss.config import Config, validate
from segloss.data import kaggle, synthetic
from segloss.data.preparation import normalise, resize
from segloss.data.prepared import SPLITS, PreparedSplit, write_prepared
from segloss.losses import build_loss
from segloss.models import build_model
from segloss.training import autocast

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Sizes:
    """How much work each measurement does (``FULL`` for ``make bench``, ``QUICK`` to smoke)."""

    batch_size: int | None  # None: the config's train.batch_size
    patients: int  # synthetic patients (TIFF source of every data set)
    slices_per_patient: int
    image_sizes: tuple[int, int]  # the default size and the large one
    train_slices: dict[int, int]  # per image size: training slices of the loop benchmark
    loop_epochs: int  # loop benchmark: epochs per train() call (the first is warm-up)
    eval_slices: int  # val/test slices of the loop benchmark's prepared set (kept small)
    warmup_steps: int
    steps: dict[int, int]  # per image size: optimizer steps per timed repeat
    repeats: int
    sweep_losses: tuple[str, ...]
    sweep_seeds: tuple[int, ...]
    sweep_train_slices: int
    sweep_epochs: int
    inference_images: int
    inference_batch_sizes: tuple[int, ...]
    metrics_pairs: int
    metrics_repeats: int
    pipeline_overrides: tuple[str, ...]  # appended to every dvc stage command


FULL = Sizes(
    batch_size=None,
    patients=4,
    slices_per_patient=20,
    image_sizes=(64, 256),
    train_slices={64: 512, 256: 32},  # 64: 32 steps (~4 s) per epoch and repeat
    loop_epochs=11,  # the first is warm-up: 10 timed epochs, each with a model-only repeat
    eval_slices=4,
    warmup_steps=2,
    steps={64: 16, 256: 2},
    repeats=3,
    sweep_losses=("bce", "dice"),
    sweep_seeds=(0, 1),
    sweep_train_slices=512,
    sweep_epochs=4,
    inference_images=256,
    inference_batch_sizes=(1, 16, 64),
    metrics_pairs=1000,
    metrics_repeats=3,
    pipeline_overrides=(),
)
QUICK = Sizes(
    batch_size=4,
    patients=3,
    slices_per_patient=4,
    image_sizes=(32, 64),
    train_slices={32: 8, 64: 8},
    loop_epochs=2,
    eval_slices=2,
    warmup_steps=1,
    steps={32: 2, 64: 1},
    repeats=1,
    sweep_losses=("bce", "dice"),
    sweep_seeds=(0,),
    sweep_train_slices=8,
    sweep_epochs=1,
    inference_images=16,
    inference_batch_sizes=(1, 16),
    metrics_pairs=50,
    metrics_repeats=1,
    pipeline_overrides=(
        "data.n_patients=12",
        "data.n_slices=[6,8]",
        "data.tiff_size=64",
        "data.image_size=32",
        "train.epochs=1",
        "train.batch_size=8",
        "tracking.log_model=false",
        "report.dpi=40",
        "hydra.sweeper.params={loss:'bce,bce_dice',seed:'0'}",
    ),
)


def median_rate(
    run_steps: Callable[[int], object], per_step: int, steps: int, warmup: int, repeats: int
) -> dict[str, Any]:
    """Items per second of ``run_steps(steps)`` (``per_step`` items each): median of repeats."""
    run_steps(warmup)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        run_steps(steps)
        seconds.append(time.perf_counter() - start)
    return {
        "images_per_s": per_step * steps / statistics.median(seconds),
        "seconds": seconds,
        "steps": steps,
    }


def optimizer_step(cfg: Config) -> Callable[[torch.Tensor, torch.Tensor], None]:
    """The training step without the loop: the config's model, loss, precision and AdamW."""
    model = build_model(cfg.model).train()
    loss_fn = build_loss(cfg.loss)
    t = cfg.train
    optimizer = torch.optim.AdamW(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    precision = t.precision

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        with autocast(x.device, precision):  # as the loop: the forward pass only
            logits = model(x)
        loss = loss_fn(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


class Bench:
    """One benchmark run: its work folder, thread count, sizes and the data sets it built."""

    def __init__(self, work: Path, sizes: Sizes, threads: int) -> None:
        self.work, self.sizes, self.threads = work, sizes, threads
        self.tracking_uri = f"sqlite:///{work / 'mlflow.db'}"
        self._prepared: dict[tuple[int, int, int, int], Path] = {}
        # Made once here, so no measurement includes creating the store.
        tracking.prepare(self.tracking_uri, self.config().tracking.experiment)

    def overrides(self) -> list[str]:
        """Hydra overrides every benchmark shares (also passed to the train CLI)."""
        extra = (
            [] if self.sizes.batch_size is None else [f"train.batch_size={self.sizes.batch_size}"]
        )
        return [
            f"tracking.uri={self.tracking_uri}",
            "tracking.log_model=false",
            "train.patience=null",
            *extra,
        ]

    def config(self, overrides: list[str] = ()) -> Config:
        """The project's settings (conf/) with the shared and the given overrides."""
        with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
            cfg = compose("config", overrides=[*self.overrides(), *overrides])
        return validate(cfg)

    @cached_property
    def kaggle_root(self) -> Path:
        """A kaggle_3m folder of synthetic 256x256 TIFFs, generated once."""
        settings = synthetic.SyntheticSettings(
            n_patients=self.sizes.patients,
            seed=0,
            size=256,
            n_slices=(self.sizes.slices_per_patient, self.sizes.slices_per_patient),
        )
        out, _ = synthetic.generate(self.work / "synthetic", settings)
        return kaggle.find_root(out)

    @cached_property
    def _patients(self) -> list[kaggle.Patient]:
        return list(kaggle.read_patients(self.kaggle_root))

    def prepared(self, size: int, train: int, val: int, test: int) -> Path:
        """A prepared folder at ``size`` with the given slices per split, each split cycling
        through all synthetic slices (patients keep their names)."""
        key = (size, train, val, test)
        if key not in self._prepared:
            low, high = (float(self.config()["data"]["normalise"][k]) for k in ("low", "high"))
            parts = [
                (p.name, p.slices, *resize(normalise(p.images, low, high), p.masks, size))
                for p in self._patients
            ]
            images = np.concatenate([part[2] for part in parts])
            masks = np.concatenate([part[3] for part in parts])
            names = np.concatenate([[name] * len(slices) for name, slices, *_ in parts])
            numbers = np.concatenate([part[1] for part in parts])
            counts = {"train": train, "val": val, "test": test}
            splits = {}
            for name in SPLITS:
                idx = np.arange(counts[name]) % len(images)
                splits[name] = PreparedSplit(images[idx], masks[idx], names[idx], numbers[idx])
            out = self.work / f"prepared_{size}_{train}_{val}_{test}"
            self._prepared[key] = write_prepared(
                out, splits, {"source": "synthetic (benchmark)", "normalisation": f"{low}-{high} %"}
            )
        return self._prepared[key]


def machine() -> dict[str, Any]:
    """Cores, CPU model, torch threads and versions: the context of every number."""
    cpuinfo = Path("/proc/cpuinfo")
    names = re.findall(
        r"^model name\s*:\s*(.+)$", cpuinfo.read_text() if cpuinfo.is_file() else "", re.M
    )
    return {
        "cpu": names[0] if names else platform.processor() or "unknown",
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "git_commit": tracking.git_commit(REPO),
    }
