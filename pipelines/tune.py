"""Learning rate per loss: sweep every loss over `tune.grid`, keep the best on validation Dice.

python pipelines/tune.py                       # -> conf/tuned/lr.yaml, reports/tuning.csv
python pipelines/tune.py data=lgg data.root=R  # overrides go to every tuning run
python pipelines/train.py -m experiment=tuned  # then: each loss at its own rate
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from segloss.cli import stage
from segloss.config import Config
from segloss.errors import SeglossError
from segloss.io import write_csv, write_text
from segloss.tuning import PREFIX, best_rates, tuning_runs

ROOT = Path(__file__).resolve().parents[1]


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
@stage
def main(settings: Config) -> None:
    hydra_cfg, tune = HydraConfig.get(), settings.tune
    losses = list(tune.losses or str(hydra_cfg.sweeper.params.loss).split(","))
    grid = [float(rate) for rate in tune.grid]
    sweep = [
        sys.executable,
        str(ROOT / "pipelines" / "train.py"),
        "-m",
        *hydra_cfg.overrides.task,  # the user's overrides (data, model, train.epochs, ...)
        f"loss={','.join(losses)}",
        f"train.lr={','.join(map(str, grid))}",
        f"seed={','.join(str(s) for s in tune.seeds)}",
        f"paths.models={tune.models}/{PREFIX}${{train.lr}}",
    ]
    if subprocess.run(sweep, cwd=ROOT).returncode != 0:
        raise SeglossError(f"tuning sweep failed (see its output above): {tune.out} unchanged")
    runs = tuning_runs(tune.models)
    chosen = best_rates(runs, losses, grid)
    write_csv(runs, Path(settings.paths.reports) / "tuning.csv")
    header = "# Written by pipelines/tune.py: best lr per loss on validation Dice (tune.grid).\n"
    write_text(header + OmegaConf.to_yaml(chosen), ROOT / tune.out)
    for loss, rate in chosen.items():
        print(f"{loss}: lr {rate:g}")
    print(f"{tune.out} written; next: python pipelines/train.py -m experiment=tuned")


if __name__ == "__main__":
    main()
