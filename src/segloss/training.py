"""Training: one U-Net for one (loss, seed), tracked as one MLflow run.

Middle floor: takes the resolved config as a plain mapping (``seed``, ``paths``, ``model``,
``loss``, ``train``, ``tracking``) and knows nothing of Hydra. The prepared train and
validation splits are loaded into memory once as uint8 tensors (a few MB at 64x64) and
batched on the fly; :func:`segloss.models.preprocess` turns them into model input.

Outputs, written atomically: ``<paths.models>/<loss>/seed<k>/model.pt`` (the checkpoint of the
best validation Dice, format in docs/architecture.md) and ``history.csv``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
import yaml
from torch import nn
from tqdm import tqdm

from segloss import tracking
from segloss.data.prepared import fold_splits, load_meta, load_split
from segloss.errors import ConfigError, SeglossError
from segloss.fingerprint import (  # noqa: F401  (re-exported: the training API)
    NOT_FINGERPRINTED,
    STAMP,
    code_modules,
    code_version,
    fingerprint,
    fingerprint_hash,
    fold_of,
    output_dir,
    write_stamp,
)
from segloss.io import atomic_path, write_csv
from segloss.losses import build_loss
from segloss.metrics import confusion_counts, per_patient
from segloss.models import build_model, preprocess, resolve_device

log = logging.getLogger(__name__)

HISTORY_COLUMNS = ["epoch", "train_loss", "val_loss", "val_dice", "val_iou", "lr", "seconds"]
SCHEDULERS = ("onecycle", "cosine", "constant")
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}  # train.precision -> autocast dtype
DATA_KEYS = ("image_size", "data_hash", "splits", "source")
SYNC_EVERY = 8  # training steps between reads of the loss (progress bar, NaN check)
ENTRY_POINT = "pipelines/train.py"  # the runs' source (the MLflow UI's Source column)
CONTEXTS = {"train": "training", "val": "validation", "test": "testing"}


def split_patients(cfg: Mapping[str, Any], meta: Mapping[str, Any]) -> dict[str, list[str]]:
    """The patients of each split this job uses (with cross-validation: its fold's)."""
    fold = (cfg.get("cv") or {}).get("fold")
    if fold is None:
        return dict(meta.get("splits") or {})
    from segloss.data.prepared import fold_splits

    return fold_splits(meta, int(fold))


def split_dataset(
    prepared: str | os.PathLike,
    meta: Mapping[str, Any],
    split: str,
    patients: list[str],
    fold: int | None = None,
) -> tracking.Dataset:
    """One split as an MLflow data set: its slices (patient, slice, tumour_pixels) from
    ``manifest.csv``, the prepared data's hash as digest, the prepared folder as source."""
    from segloss.data.prepared import load_manifest

    rows = load_manifest(prepared).query("patient in @patients")
    table = (
        rows[["patient", "slice", "tumour_pixels"]]
        .drop_duplicates(["patient", "slice"])
        .sort_values(["patient", "slice"])
        .reset_index(drop=True)
    )
    name = f"{meta.get('source', 'prepared')}-{split}" + ("" if fold is None else f"-fold{fold}")
    return tracking.Dataset(
        name=name,
        digest=str(meta.get("data_hash") or "unknown"),
        source=str(Path(prepared).resolve()),
        table=table,
        context=CONTEXTS.get(split, split),
    )


def splits_table(datasets: list[tracking.Dataset]) -> pd.DataFrame:
    """Per split and patient: slices and tumour pixels (the ``splits.csv`` run artifact)."""
    frames = [
        d.table.groupby("patient", as_index=False)
        .agg(slices=("slice", "size"), tumour_pixels=("tumour_pixels", "sum"))
        .assign(split=d.context)
        for d in datasets
    ]
    return pd.concat(frames, ignore_index=True)[["split", "patient", "slices", "tumour_pixels"]]


def input_example(images: torch.Tensor) -> np.ndarray:
    """Two preprocessed validation images, float32 NCHW: the logged model's input example
    (two, so the exported graph keeps the batch size dynamic)."""
    batch = images[:2].cpu()
    if len(batch) < 2:
        batch = batch.repeat(2, 1, 1, 1)[:2]
    return preprocess(batch).contiguous().numpy()


class NonFiniteLoss(SeglossError):
    """Training diverged: the training or validation loss, or a weight, became NaN or infinite.

    The job's run ends FAILED with this message as its ``reason`` tag, and no ``model.pt`` is
    left for that (loss, seed): an older one is removed, so evaluation never scores it.
    """


def _non_finite_weights(model: nn.Module) -> list[str]:
    """Names of parameters and buffers holding NaN or inf (BatchNorm statistics included)."""
    return [
        name
        for name, value in model.state_dict().items()
        if value.is_floating_point() and not bool(torch.isfinite(value).all())
    ]


def _check_diverged(model: nn.Module, val: Mapping[str, float]) -> None:
    """Raise :class:`NonFiniteLoss` if validation or the weights show divergence."""
    if not math.isfinite(val["val_loss"]):
        raise NonFiniteLoss(
            f"validation loss became {val['val_loss']}; lower train.lr or check the loss options"
        )
    if bad := _non_finite_weights(model):
        raise NonFiniteLoss(
            f"weights became non-finite ({len(bad)} tensors, e.g. {bad[0]}); lower train.lr"
        )


def _int_at_least(low: int) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= low


def _number(check: Callable[[float], bool]) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, int | float) and not isinstance(v, bool) and check(v)


# train.<key>: (valid?, what it must be)
TRAIN_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "epochs": (_int_at_least(1), "an integer >= 1"),
    "batch_size": (_int_at_least(1), "an integer >= 1"),
    "lr": (_number(lambda v: 0 < v < math.inf), "a number > 0"),
    "weight_decay": (_number(lambda v: v >= 0), "a number >= 0"),
    "patience": (lambda v: v is None or _int_at_least(1)(v), "an integer >= 1 or null"),
    "num_threads": (lambda v: v is None or _int_at_least(1)(v), "an integer >= 1 or null"),
    "scheduler": (lambda v: v in SCHEDULERS, f"one of {', '.join(SCHEDULERS)}"),
    "precision": (lambda v: v in PRECISIONS, f"one of {', '.join(PRECISIONS)}"),
}
# tracking.<key>: (valid?, what it must be)
TRACKING_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "system_metrics_interval": (
        lambda v: v is None or _number(lambda x: 0 < x < math.inf)(v),
        "a number of seconds > 0 or null",
    ),
}


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The model's forward pass in ``train.precision``: fp32 (nothing), or bf16 autocast on
    the device. Losses always compute in float32 (they turn autocast off themselves)."""
    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def check_config(cfg: Mapping[str, Any]) -> None:
    """Raise :class:`ConfigError` for out-of-range ``train`` settings, before any work."""
    for key, (valid, expected) in TRAIN_RULES.items():
        value = cfg["train"].get(key, "fp32" if key == "precision" else None)
        if not valid(value):
            raise ConfigError(f"train.{key} must be {expected}, got {value!r}")
    for key, (valid, expected) in TRACKING_RULES.items():
        value = (cfg.get("tracking") or {}).get(key)
        if not valid(value):
            raise ConfigError(f"tracking.{key} must be {expected}, got {value!r}")


def preflight(cfg: Mapping[str, Any]) -> dict:
    """Every check that needs no training: settings, prepared data, tracking store.

    Returns the prepared data's ``meta.json``. Run once per sweep before any job starts, and
    again by each job.
    """
    check_config(cfg)
    meta = load_meta(cfg["paths"]["prepared"])
    if fold_of(cfg) is not None:  # a fold the prepared data lacks: one line, before any work
        fold_splits(meta, fold_of(cfg))
    tracking.prepare(cfg["tracking"]["uri"], cfg["tracking"]["experiment"])
    return meta


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch; prefer deterministic kernels (warn where none exists)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS
    torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(True, warn_only=True)


def augment_batch(
    x: torch.Tensor, y: torch.Tensor, aug: Mapping[str, Any], generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample random flips, rotation, zoom and intensity jitter of a whole batch.

    Hand-written because torchvision.transforms.v2 draws one random transform per call (the
    same for every image of a batch), and per-image calls would be slow. Flips, rotation and
    zoom form one affine matrix per image, applied to image and mask together with a single
    ``affine_grid``/``grid_sample`` call; the resampled mask is thresholded at 0.5. Random
    numbers come from ``generator`` on the CPU, so the result does not depend on the device.
    """
    n = x.shape[0]

    def uniform(low: float, high: float) -> torch.Tensor:
        return (torch.rand(n, generator=generator) * (high - low) + low).to(x.device)

    def sign(p: float) -> torch.Tensor:
        return torch.where(torch.rand(n, generator=generator) < p, -1.0, 1.0).to(x.device)

    fx, fy = sign(aug["hflip"]), sign(aug["vflip"])
    angle = uniform(-aug["rotate"], aug["rotate"]) * (math.pi / 180)
    zoom = uniform(1 - aug["scale"], 1 + aug["scale"])
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    zero = torch.zeros_like(cos)
    # theta maps output to input coordinates: rotation @ diag(fx, fy) / zoom.
    theta = torch.stack(
        [torch.stack([cos * fx, -sin * fy, zero], 1), torch.stack([sin * fx, cos * fy, zero], 1)],
        1,
    )
    grid = F.affine_grid(theta, [n, 1, *x.shape[2:]], align_corners=False)
    both = F.grid_sample(torch.cat([x, y], 1), grid, mode="bilinear", align_corners=False)
    contrast = uniform(1 - aug["contrast"], 1 + aug["contrast"]).view(n, 1, 1, 1)
    brightness = uniform(-aug["brightness"], aug["brightness"]).view(n, 1, 1, 1)
    x = (both[:, :3] * contrast + brightness).clamp_(0.0, 1.0)
    y = (both[:, 3:] > 0.5).float()
    return x.contiguous(memory_format=torch.channels_last), y


def _scheduler(
    optimizer: torch.optim.Optimizer, t: Mapping[str, Any], total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """The learning-rate schedule, stepped once per batch."""
    if t["scheduler"] == "onecycle":
        # OneCycleLR divides by zero when its warm-up ends on step 0 (pct_start * total_steps
        # == 1, e.g. 5 steps): give the warm-up two whole steps at least, where there is room.
        warmup = max(2, round(0.2 * total_steps))
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=t["lr"],
            total_steps=total_steps,
            pct_start=warmup / total_steps if total_steps > warmup else 0.2,
        )
    if t["scheduler"] == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=total_steps, eta_min=t["lr"] / 100
        )
    return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0)


def _init_output_bias(model: nn.Module, masks: torch.Tensor) -> None:
    """Set the output bias to the logit of the tumour-pixel share (option, off by default)."""
    p = masks.float().mean().clamp(1e-4, 1 - 1e-4)
    head = model.segmentation_head[0]
    nn.init.constant_(head.bias, float(torch.logit(p)))


def _train_steps(n: int, batch_size: int) -> int:
    """Batches per epoch: the last incomplete batch is dropped unless it is the only one
    (BatchNorm needs more than one sample, and full batches keep the steps equal)."""
    return max(1, n // batch_size)


@dataclass(frozen=True)
class _InMemory:
    """Train and validation splits as uint8 tensors on the device (images NHWC, masks NHW)."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    val_patients: np.ndarray

    @classmethod
    def load(cls, prepared: str, device: torch.device, fold: int | None = None) -> _InMemory:
        train, val = (
            load_split(prepared, split, mmap=False, fold=fold) for split in ("train", "val")
        )

        def put(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(a).to(device)

        return cls(
            put(train.images), put(train.masks), put(val.images), put(val.masks), val.patients
        )


def _targets(masks_uint8: torch.Tensor) -> torch.Tensor:
    return masks_uint8.unsqueeze(1).float()


def _train_epoch(
    model: nn.Module,
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    data: _InMemory,
    t: Mapping[str, Any],
    generator: torch.Generator,
    bar: tqdm,
    timer: dict[str, float] | None = None,
) -> float:
    """One pass over the shuffled training set; the mean batch loss.

    ``timer["step_seconds"]`` (if given) grows by the time spent in model steps (forward,
    loss, backward, optimizer and scheduler step): the rest of an epoch is batching,
    augmentation and bookkeeping. (On a GPU, kernels still queued are counted where the
    loop next waits for them.)
    """
    model.train()
    n = len(data.x_train)
    batches = torch.randperm(n, generator=generator).split(t["batch_size"])
    batches = batches[: _train_steps(n, t["batch_size"])]
    total = torch.zeros((), device=data.x_train.device)
    for i, idx in enumerate(batches, 1):
        x, y = preprocess(data.x_train[idx]), _targets(data.y_train[idx])
        if t["augment"]["enabled"]:
            x, y = augment_batch(x, y, t["augment"], generator)
        tic = time.perf_counter()
        with autocast(x.device, t.get("precision", "fp32")):
            logits = model(x)
        loss = loss_fn(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        total += loss.detach()
        if timer is not None:
            timer["step_seconds"] += time.perf_counter() - tic
        bar.update()
        # Reading the loss waits for the device: do it every few steps, not every step. A NaN
        # or inf stays in the running sum, so it is caught here within SYNC_EVERY steps.
        if i % SYNC_EVERY == 0 or i == len(batches):
            mean = total.item() / i
            if not math.isfinite(mean):
                raise NonFiniteLoss(
                    f"training loss became {mean}; lower train.lr or check the loss options"
                )
            bar.set_postfix(loss=f"{mean:.4f}", refresh=False)
    return mean


@torch.inference_mode()
def evaluate_split(
    model: nn.Module,
    loss_fn: nn.Module,
    images: torch.Tensor,
    masks: torch.Tensor,
    patients: np.ndarray,
    batch_size: int,
) -> dict[str, float]:
    """Validation loss and per-patient (pooled) Dice and IoU, averaged over patients."""
    model.eval()
    total, counts = 0.0, []
    for idx in torch.arange(len(images)).split(batch_size):
        logits = model(preprocess(images[idx]))
        total += float(loss_fn(logits, _targets(masks[idx]))) * len(idx)
        counts.append(confusion_counts(logits[:, 0] > 0, masks[idx] > 0))
    frame = pd.DataFrame(
        {"patient": patients, **{k: np.concatenate([c[k] for c in counts]) for k in counts[0]}}
    )
    volumes = per_patient(frame)
    return {
        "val_loss": total / len(images),
        "val_dice": float(volumes["dice"].mean()),
        "val_iou": float(volumes["iou"].mean()),
    }


def _fit(
    model: nn.Module,
    loss_fn: nn.Module,
    data: _InMemory,
    t: Mapping[str, Any],
    generator: torch.Generator,
    run: tracking.TrackedRun,
    label: str,
    progress: Callable[[int, int, Mapping[str, float]], None] | None = None,
) -> tuple[list[dict[str, float]], dict[str, torch.Tensor], int, float]:
    """The epoch loop with validation, best-Dice checkpointing and early stopping.

    ``progress(epoch, epochs, row)`` (a sweep's display) is told after every epoch; then the
    epoch is logged as one line instead of drawing a progress bar.
    Returns the history rows, the best state dict (on the CPU), its epoch and its Dice.
    """
    steps = _train_steps(len(data.x_train), t["batch_size"])
    optimizer = torch.optim.AdamW(model.parameters(), lr=t["lr"], weight_decay=t["weight_decay"])
    scheduler = _scheduler(optimizer, t, total_steps=t["epochs"] * steps)
    history: list[dict[str, float]] = []
    best_dice, best_epoch, best_state = -math.inf, 0, {}
    for epoch in range(1, t["epochs"] + 1):
        tic = time.perf_counter()
        desc = f"{label} epoch {epoch}/{t['epochs']}"
        with tqdm(total=steps, desc=desc, unit="batch", disable=progress is not None) as bar:
            try:
                timer = {"step_seconds": 0.0}
                train_loss = _train_epoch(
                    model, loss_fn, optimizer, scheduler, data, t, generator, bar, timer
                )
                val = evaluate_split(
                    model, loss_fn, data.x_val, data.y_val, data.val_patients, t["batch_size"]
                )
                _check_diverged(model, val)
            except NonFiniteLoss as exc:
                raise NonFiniteLoss(f"{label}, epoch {epoch}: {exc}") from None
            bar.set_postfix(loss=f"{train_loss:.4f}", val_dice=f"{val['val_dice']:.4f}")
        row = {
            "epoch": epoch,
            "train_loss": train_loss,
            **val,
            "lr": optimizer.param_groups[0]["lr"],
            "seconds": time.perf_counter() - tic,
            # MLflow only (history.csv keeps its columns): benchmarks/overhead.py reads it
            "step_seconds": timer["step_seconds"],
        }
        history.append(row)
        run.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=epoch)
        if progress is not None:
            progress(epoch, t["epochs"], row)
            log.info(
                "%s: loss %.4f, val Dice %.4f, %.1f s",
                desc, train_loss, row["val_dice"], row["seconds"],
            )  # fmt: skip
        if row["val_dice"] > best_dice:
            best_dice, best_epoch = row["val_dice"], epoch
            best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        elif t["patience"] and epoch - best_epoch >= t["patience"]:
            log.info("%s: early stop at epoch %d", label, epoch)
            break
    return history, best_state, best_epoch, best_dice


def reusable(out: Path, fp_hash: str) -> dict[str, Any] | None:
    """The summary of ``out/model.pt`` if it was trained from the same fingerprint, else None.

    An unreadable or older-format checkpoint is not reusable (it is retrained and replaced).
    """
    path, history = out / "model.pt", out / "history.csv"
    if not (path.is_file() and history.is_file()):
        return None
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # truncated or foreign file: retrain it
        log.warning("%s: unreadable (%s); retraining it", path, tracking.one_line(exc))
        return None
    if checkpoint.get("fingerprint_hash") != fp_hash:
        return None
    return {
        "loss": checkpoint["config"]["loss"]["name"],
        "seed": int(checkpoint["config"]["seed"]),
        "fold": (checkpoint.get("data") or {}).get("fold"),
        "best_epoch": checkpoint["best_epoch"],
        "best_val_dice": checkpoint["best_val_dice"],
        "epochs_run": len(pd.read_csv(history)),
        "seconds": 0.0,
        "model_path": str(path),
        "mlflow_run_id": checkpoint.get("mlflow_run_id"),
        "reused": True,
    }


def remove_outputs(out: Path) -> None:
    """Delete a (loss, seed)'s ``model.pt``, ``history.csv`` and ``fingerprint.json`` (and the
    folder if empty)."""
    for name in ("model.pt", "history.csv", STAMP):
        (out / name).unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        out.rmdir()


def train(
    cfg: Mapping[str, Any],
    *,
    parent_run_id: str | None = None,
    progress: Callable[[int, int, Mapping[str, float]], None] | None = None,
) -> dict[str, Any]:
    """Train one model for ``cfg["loss"]`` and ``cfg["seed"]``; returns a summary dict.

    ``cfg`` is the whole resolved config as plain containers; ``parent_run_id`` nests the
    MLflow run under a sweep's parent run. With ``train.reuse`` (default) an existing
    ``model.pt`` trained from the same :func:`fingerprint` is kept and nothing is trained or
    logged (the summary says ``reused: True``). Raises :class:`ConfigError`,
    ``MissingPreparedData`` or ``TrackingError`` before any work, and :class:`NonFiniteLoss`
    naming loss, seed and epoch if training diverges (the run then ends FAILED, and no
    ``model.pt`` is left for this loss and seed).
    """
    meta = preflight(cfg)
    t, loss_name, seed = cfg["train"], cfg["loss"]["name"], int(cfg["seed"])
    fold = fold_of(cfg)
    label = f"loss {loss_name}, seed {seed}" + ("" if fold is None else f", fold {fold}")
    out = output_dir(cfg)
    fp = fingerprint(cfg, meta)
    fp_hash = fingerprint_hash(fp)
    if t.get("reuse", True) and (summary := reusable(out, fp_hash)):
        log.info("%s: %s is up to date (same config, data and code); reused", label, out)
        if not (out / STAMP).is_file():  # next time decided without loading the model
            write_stamp(out, fp_hash, {k: v for k, v in summary.items() if k != "reused"})
        return summary
    if t["num_threads"]:
        torch.set_num_threads(int(t["num_threads"]))
    device = resolve_device(t["device"])
    seed_everything(seed)
    data = _InMemory.load(cfg["paths"]["prepared"], device, fold)
    model = build_model(cfg["model"]).to(device)
    if t["init_output_bias"]:
        _init_output_bias(model, data.y_train)
    loss_fn = build_loss(cfg["loss"]).to(device)
    generator = torch.Generator().manual_seed(seed)
    tags = {
        "loss": loss_name,
        "seed": seed,
        "model": cfg["model"].get("name", cfg["model"]["encoder_name"]),
        "git_commit": tracking.git_commit(),
        "data_hash": meta.get("data_hash"),
        "code_version": fp["code_version"],
        "fingerprint": fp_hash,
        **tracking.source_tags(ENTRY_POINT),
    }
    if fold is not None:
        tags["fold"] = fold
    started = time.perf_counter()
    try:
        with tracking.tracked_run(
            cfg["tracking"]["uri"],
            cfg["tracking"]["experiment"],
            run_name=f"{loss_name} seed{seed}" + ("" if fold is None else f" fold{fold}"),
            parent_run_id=parent_run_id,
            tags=tags,
            params=tracking.flatten(cfg),
            system_metrics_interval=cfg["tracking"].get("system_metrics_interval"),
        ) as run:
            fold_id = (cfg.get("cv") or {}).get("fold")
            splits = [
                split_dataset(cfg["paths"]["prepared"], meta, split, patients, fold_id)
                for split, patients in split_patients(cfg, meta).items()
            ]
            # the run's inputs: what it trains and validates on (evaluation adds the test set)
            run.log_datasets([d for d in splits if d.context in ("training", "validation")])
            history, best_state, best_epoch, best_dice = _fit(
                model, loss_fn, data, t, generator, run, label, progress
            )
            checkpoint = {
                "state_dict": best_state,
                "config": dict(cfg),
                # with cross-validation, ``splits`` are this fold's train/val/test patients
                "data": {k: meta.get(k) for k in DATA_KEYS}
                | {"splits": fold_splits(meta, fold), "fold": fold},
                "best_epoch": best_epoch,
                "best_val_dice": best_dice,
                "mlflow_run_id": run.run_id,
                "mlflow_parent_run_id": parent_run_id,
                "fingerprint": fp,
                "fingerprint_hash": fp_hash,
            }
            write_csv(pd.DataFrame(history, columns=HISTORY_COLUMNS), out / "history.csv")
            seconds = time.perf_counter() - started
            run.log_metrics(
                {"best_val_dice": best_dice, "best_epoch": best_epoch, "train_seconds": seconds},
                step=best_epoch,
            )
            with tempfile.TemporaryDirectory() as tmp:
                config_path = Path(tmp) / "config.yaml"
                config_path.write_text(yaml.safe_dump(dict(cfg), sort_keys=False))
                splits_path = Path(tmp) / "splits.csv"
                splits_table(splits).to_csv(splits_path, index=False)
                run.log_artifacts([config_path, splits_path, out / "history.csv"])
            if cfg["tracking"]["log_model"]:
                model.load_state_dict(best_state)
                checkpoint["mlflow_model_id"] = run.log_model(
                    model.cpu().eval(),
                    input_example(data.x_val),
                    tags={"loss": loss_name, "seed": seed, "data_hash": meta.get("data_hash")},
                )
            # model.pt last: it marks the (loss, seed) done, so a job killed anywhere before
            # this rename leaves no model.pt and is retrained, never reused.
            with atomic_path(out / "model.pt") as tmp:
                torch.save(checkpoint, tmp)
    except NonFiniteLoss:
        # A diverged model is never a result: an older one of this (loss, seed) goes too.
        remove_outputs(out)
        raise
    log.info(
        "%s: best val Dice %.4f at epoch %d, %.1f s -> %s",
        label, best_dice, best_epoch, seconds, out / "model.pt",
    )  # fmt: skip
    summary = {
        "loss": loss_name,
        "seed": seed,
        "fold": fold,
        "best_epoch": best_epoch,
        "best_val_dice": best_dice,
        "epochs_run": len(history),
        "seconds": seconds,
        "model_path": str(out / "model.pt"),
        "mlflow_run_id": run.run_id,
    }
    # after model.pt: a stamp without its model, or beside another one, is never believed
    write_stamp(out, fp_hash, {k: v for k, v in summary.items() if k != "seconds"})
    return summary
