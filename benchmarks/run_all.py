"""Run the benchmarks side by side in one process; write reports/benchmarks.{json,md}.

    python benchmarks/run_all.py                      # all but the pipeline (make bench)
    python benchmarks/run_all.py --quick --out /tmp   # smoke run (< 1 min), not reportable
    python benchmarks/run_all.py --only training naive
    python benchmarks/run_all.py --pipeline           # also the default dvc repro, per stage

Every ratio is "higher is better". Numbers are only comparable within one run on one quiet
machine; the files state cores, threads and the sizes used.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import inference
import metrics
import naive
import pandas as pd
import pipeline
import sweep
import torch
import training
from common import FULL, QUICK, Bench, machine

from segloss.io import atomic_path, write_json
from segloss.training.job import Progress

BENCHMARKS = ("training", "naive", "sweep", "inference", "metrics")
# summary key: (what it is, goal)
GOALS = {
    "loop_efficiency": ("segloss training loop / model-only (images/s)", ">= 0.95, <= 1.03"),
    "bf16_speedup": ("model-only bf16 autocast / fp32 (images/s)", "context"),
    "speedup_vs_naive": ("segloss loop / naive TIFF-decoding loop (images/s)", "context"),
    "parallel_sweep_speedup": ("sequential / joblib sweep (wall seconds)", ">= 1"),
    "eval_vs_inference": ("inference + all metrics / inference alone (images/s)", "context"),
    "metrics_vs_monai": ("MONAI / segloss.metrics (seconds, same mask pairs)", ">= 1"),
    "pipeline_seconds": ("default dvc repro, all stages (seconds)", "<= 600"),
}


def measure(bench: Bench, selected: list[str], with_pipeline: bool, checkpoint: Path | None):
    """Run the selected benchmarks; their results and the seconds each took."""
    loops: dict[int, dict[str, Any]] = {}  # image size -> training.loop result, shared

    def loop(size: int, after_epoch: Progress | None = None) -> dict[str, Any]:
        if size not in loops or after_epoch is not None:  # the training benchmark runs first
            loops[size] = training.loop(bench, size, after_epoch)
        return loops[size]

    def naive_at(size: int) -> dict[str, Any]:
        result = naive.run(bench, size)
        segloss = loop(size)["images_per_s"]
        return {
            **result,
            "segloss_images_per_s": segloss,
            "speedup": segloss / result["images_per_s"],
        }

    sizes = bench.sizes
    default = sizes.image_sizes[0]
    jobs: dict[str, Callable[[], dict[str, Any]]] = {
        "training": lambda: training.run(bench, lambda after_epoch: loop(default, after_epoch)),
        "naive": lambda: {str(size): naive_at(size) for size in sizes.image_sizes},
        "sweep": lambda: sweep.run(bench),
        "inference": lambda: inference.run(
            bench,
            checkpoint or inference.trained_model(bench) or Path(loop(default)["model_path"]),
        ),
        "metrics": lambda: metrics.run(n=sizes.metrics_pairs, repeats=sizes.metrics_repeats),
    }
    if with_pipeline:
        jobs["pipeline"] = lambda: pipeline.run(sizes.pipeline_overrides)
    results, seconds = {}, {}
    for name, job in jobs.items():
        if name in selected or name == "pipeline":
            print(f"[bench] {name} ...", flush=True)
            start = time.perf_counter()
            results[name] = job()
            seconds[name] = time.perf_counter() - start
            print(f"[bench] {name} done in {seconds[name]:.1f} s", flush=True)
    return results, seconds


def summary(results: dict[str, Any]) -> dict[str, Any]:
    """The headline ratios (and the pipeline's total) of whatever was run."""
    out: dict[str, Any] = {}
    if "training" in results:
        out["loop_efficiency"] = results["training"]["loop_efficiency"]
        out["bf16_speedup"] = results["training"]["bf16_speedup"]
    if "naive" in results:
        out["speedup_vs_naive"] = {s: r["speedup"] for s, r in results["naive"].items()}
    if "sweep" in results:
        out["parallel_sweep_speedup"] = results["sweep"]["parallel_sweep_speedup"]
    if "inference" in results:
        out["eval_vs_inference"] = results["inference"]["eval_vs_inference"]
    if "metrics" in results:
        out["metrics_vs_monai"] = results["metrics"]["metrics_vs_monai"]
    if "pipeline" in results:
        out["pipeline_seconds"] = results["pipeline"]["total_seconds"]
    return out


def _table(rows: list[dict[str, Any]]) -> str:
    return pd.DataFrame(rows).to_markdown(index=False, floatfmt=".4g")


def markdown(report: dict[str, Any]) -> str:
    """The headline table, then one table per benchmark."""
    m, results = report["machine"], report["results"]
    lines = [
        "# segloss benchmarks",
        "",
        f"{report['date']}, commit `{m['git_commit'][:10]}`, {m['cpu']}, {m['cores']} cores, "
        f"{report['threads']} torch threads, torch {m['torch']}."
        + (
            " **Quick smoke run: sizes shrunk, numbers not reportable.**" if report["quick"] else ""
        ),
        "",
        "## Headline (higher is better unless stated)",
        "",
    ]
    rows = []
    for key, value in report["summary"].items():
        what, goal = GOALS[key]
        values = value if isinstance(value, dict) else {"": value}
        for part, number in values.items():
            name = f"{key} [{part}]" if part else key
            rows.append({"figure": name, "value": number, "goal": goal, "what": what})
    lines += [_table(rows), ""]
    if "training" in results:
        t = results["training"]
        lines += [
            "## Training throughput (images/s)",
            "",
            _table(
                [
                    {"": "segloss loop (train())", **_rate(t["loop"])},
                    {"": "model only", **_rate(t["model_only"])},
                    {"": "model only, bf16 autocast", **_rate(t["model_only_bf16"])},
                ]
            ),
            "",
            f"Same steps per repeat and warm-up for loop and model-only, one model-only "
            f"repeat after each loop epoch; loop_efficiency is the median of "
            f"{len(t['epoch_ratios'])} paired ratios "
            f"({min(t['epoch_ratios']):.3f}-{max(t['epoch_ratios']):.3f}). The loop's own "
            f"model steps / model-only: {t['step_vs_model_only']:.3f}; the loop's model steps "
            f"/ its epochs: {t['step_share']:.3f}. "
            f"bf16 / fp32 model-only: {t['bf16_speedup']:.2f}."
            + (
                f" **loop_efficiency {t['loop_efficiency']:.3f} > 1.03: the model-only "
                "baseline is not a bound here (busy machine?); rerun.**"
                if t["baseline_suspect"]
                else ""
            ),
            "",
            f"Loop run overhead outside its epochs: {t['loop']['run_overhead_s']:.1f} s "
            f"(data load, model, MLflow run, checkpoint).",
            "",
        ]
    if "naive" in results:
        lines += ["## Against the naive TIFF-decoding loop (images/s)", ""]
        rows = [
            {
                "image size": size,
                "segloss loop": r["segloss_images_per_s"],
                "naive": r["images_per_s"],
                "speedup": r["speedup"],
            }
            for size, r in results["naive"].items()
        ]
        lines += [_table(rows), ""]
    if "sweep" in results:
        s = results["sweep"]
        lines += [
            "## Sweep (wall seconds, through the CLI)",
            "",
            _table(
                [
                    {
                        "launcher": "sequential",
                        "jobs x threads": f"1 x {s['sequential_threads']}",
                        "seconds": s["seconds"]["sequential"],
                    },
                    {
                        "launcher": "joblib",
                        "jobs x threads": f"{s['parallel_n_jobs']} x "
                        f"{s['parallel_threads_per_job']}",
                        "seconds": s["seconds"]["parallel"],
                    },
                ]
            ),
            "",
            f"{s['jobs']} jobs (losses {', '.join(s['losses'])}; seeds "
            f"{', '.join(map(str, s['seeds']))}), {s['epochs']} epoch(s) on "
            f"{s['train_slices']} training slices of {s['image_size']}x{s['image_size']}.",
            "",
        ]
    if "inference" in results:
        r = results["inference"]
        lines += [
            "## Evaluation throughput (images/s)",
            "",
            _table(
                [
                    {"": "inference (predict_probabilities)", **_rate(r["inference"])},
                    {"": "inference + per_image metrics", **_rate(r["evaluation"])},
                ]
            ),
            "",
            f"{r['images']} test images of {r['image_size']}x{r['image_size']}, eval batch "
            f"size {r['batch_size']}; predicted foreground {r['pred_foreground']:.2%}, "
            f"target {r['target_foreground']:.2%}.",
            "",
            "Forward pass only, by layout and batch size:",
            "",
            _table(
                [
                    {"channels_last": x["channels_last"], "batch size": x["batch_size"], **_rate(x)}
                    for x in r["forward_by_layout"]
                ]
            ),
            "",
        ]
    if "metrics" in results:
        r = results["metrics"]
        s = r["seconds"]
        lines += [
            "## segloss.metrics against MONAI (seconds)",
            "",
            _table(
                [
                    {
                        "metric": "overlap",
                        "segloss": s["segloss_overlap"],
                        "MONAI": s["monai_overlap"],
                    },
                    {"metric": "HD95", "segloss": s["segloss_per_image"], "MONAI": s["monai_hd95"]},
                    {"metric": "NSD", "segloss": s["segloss_per_image"], "MONAI": s["monai_nsd"]},
                ]
            ),
            "",
            f"{r['n']} mask pairs of {r['size']}x{r['size']}; segloss HD95/NSD rows time the "
            f"whole per_image call. Values disagreeing beyond tolerance: "
            f"{', '.join(r['disagree']) or 'none'}.",
            "",
        ]
    if "pipeline" in results:
        stages = results["pipeline"]["stages"]
        rows = [
            {
                "stage": name,
                "seconds": x["seconds"],
                "CPU seconds": x["cpu_seconds"],
                "peak RSS MiB": x["peak_rss_mib"],
            }
            for name, x in stages.items()
        ]
        lines += ["## Default `dvc repro`, per stage", "", _table(rows), ""]
    seconds = ", ".join(f"{k} {v:.0f} s" for k, v in report["seconds"].items())
    lines += [f"Time per benchmark: {seconds}.", ""]
    return "\n".join(lines)


def _rate(result: dict[str, Any]) -> dict[str, Any]:
    return {"images/s": result["images_per_s"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, default=list(BENCHMARKS))
    parser.add_argument("--pipeline", action="store_true", help="also time the dvc stages")
    parser.add_argument("--quick", action="store_true", help="smoke run with tiny sizes")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads")
    parser.add_argument(
        "--checkpoint",
        type=Path,
        help="model.pt for the inference benchmark (default: models/<loss>/seed0 of make run, "
        "else the model the loop benchmark trains)",
    )
    parser.add_argument("--out", type=Path, default=Path("reports"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sizes = QUICK if args.quick else FULL
    with tempfile.TemporaryDirectory(prefix="segloss-bench-") as tmp:
        bench = Bench(Path(tmp), sizes, args.threads)
        results, seconds = measure(bench, args.only, args.pipeline, args.checkpoint)
    report = {
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "machine": machine(),
        "threads": args.threads,
        "quick": args.quick,
        "sizes": asdict(sizes),
        "summary": summary(results),
        "results": results,
        "seconds": seconds,
    }
    write_json(report, args.out / "benchmarks.json")
    with atomic_path(args.out / "benchmarks.md") as tmp_md:
        tmp_md.write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
