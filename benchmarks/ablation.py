"""The recipe's ablation on real MRI: one lever at a time, validation patients only.

Each lever is a list of overrides on ``experiment=lgg_cv``; every lever trains the same
models (``cv.fold=0`` by default, seeds 0 and 1, losses bce and bce_dice) through the real
CLI (joblib, 2 workers x 1 thread, as the study runs) and reads each model's
``history.csv``: the best **validation** per-patient Dice (the test patients of the fold are
never read) and the seconds the model trained. Writes ``<out>/ablation.csv`` (one row per
model) and ``<out>/ablation.md`` (one row per lever).

    python benchmarks/ablation.py --root /tmp/lgg --out /tmp/ablation [--levers before,...]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
# Lever name -> overrides of experiment=lgg_cv. "before" is the recipe of 19a856a (64 px,
# every slice once per epoch, 20 epochs) with the article's batch Dice.
LEVERS = {
    "before": ["data.image_size=64", "train.sampling=uniform", "train.epochs=20"],
    "foreground": ["data.image_size=64", "train.sampling=foreground", "train.epochs=20"],
    "96px": ["data.image_size=96", "train.sampling=foreground", "train.epochs=9"],
    "128px": ["data.image_size=128", "train.sampling=foreground", "train.epochs=5"],
    # the study's budget (120 min for 39 models) allows ~30 epochs at 64 px
    "30ep_uniform": ["data.image_size=64", "train.sampling=uniform", "train.epochs=30"],
    "30ep_foreground": ["data.image_size=64", "train.sampling=foreground", "train.epochs=30"],
}


def _run(command: list[str], log: Path) -> float:
    start = time.perf_counter()
    with log.open("a") as out:
        done = subprocess.run(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    if done.returncode:
        sys.exit(f"error: {' '.join(command)} failed (exit {done.returncode}); see {log}")
    return time.perf_counter() - start


def _size(overrides: list[str]) -> str:
    return next(o.split("=")[1] for o in overrides if o.startswith("data.image_size="))


def run_lever(name: str, args: argparse.Namespace) -> pd.DataFrame:
    overrides = LEVERS[name]
    prepared = args.out / f"prepared{_size(overrides)}"
    models = args.out / "models" / name
    common = ["experiment=lgg_cv", f"data.root={args.root}", f"paths.prepared={prepared}"]
    common += ["print_config=false", *overrides]
    log = args.out / f"{name}.log"
    if not (prepared / "meta.json").is_file():
        reports = f"paths.reports={args.out / 'reports'}"
        _run([sys.executable, "pipelines/prepare.py", *common, reports], log)
    sweep = [
        sys.executable, "pipelines/train.py", "-m", *common, f"paths.models={models}",
        "tracking=none", "hydra/launcher=joblib", f"cv.fold={args.fold}",
        f"seed={args.seeds}", f"loss={args.losses}",
        f"hydra.sweep.dir={args.out / 'multirun' / name}",
    ]  # fmt: skip
    wall = _run(sweep, log)
    rows = []
    for history in sorted(models.glob("*/seed*/fold*/history.csv")):
        curve = pd.read_csv(history)
        rows.append(
            {
                "lever": name,
                "loss": history.parents[2].name,
                "seed": int(history.parents[1].name[4:]),
                "best_val_dice": curve["val_dice"].max(),
                "best_epoch": int(curve.loc[curve["val_dice"].idxmax(), "epoch"]),
                "train_seconds": curve["seconds"].sum(),
                "sweep_wall_seconds": wall,
            }
        )
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True, help="a kaggle_3m folder's parent")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--levers", default=",".join(LEVERS))
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--losses", default="bce,bce_dice")
    args = parser.parse_args()
    unknown = set(args.levers.split(",")) - set(LEVERS)
    if unknown:
        sys.exit(
            f"error: --levers: unknown {', '.join(sorted(unknown))}; known: {', '.join(LEVERS)}"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    table = args.out / "ablation.csv"
    for name in args.levers.split(","):
        done = pd.read_csv(table) if table.is_file() else pd.DataFrame(columns=["lever"])
        if name in set(done["lever"]):
            continue
        frame = run_lever(name, args)
        pd.concat([done, frame]).to_csv(table, index=False)
        print(frame.to_string(index=False), flush=True)
    models = pd.read_csv(table)
    summary = models.groupby(["lever", "loss"], sort=False).agg(
        val_dice=("best_val_dice", "mean"),
        val_dice_min=("best_val_dice", "min"),
        cpu_seconds=("train_seconds", "mean"),
    )
    (args.out / "ablation.md").write_text(summary.round(3).to_markdown() + "\n")
    print(summary.round(3).to_string())


if __name__ == "__main__":
    main()
