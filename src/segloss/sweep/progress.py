"""One progress display for a sweep whose jobs run in parallel, fed by the jobs' files."""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

if TYPE_CHECKING:  # names only: a job imports this module before torch
    from rich.console import Group

    from segloss.training.job import Progress

# the folder where parallel jobs report their epochs for the sweep's one display
PROGRESS_ENV = "SEGLOSS_SWEEP_PROGRESS"


def job_progress() -> tuple[Progress, Callable[[str], None]] | None:
    """In a job of a parallel sweep: ``(on_epoch, on_end)`` that report this job's epochs and
    end to the sweep's display (files under ``<sweep dir>/progress/``); None otherwise."""
    folder = os.environ.get(PROGRESS_ENV)
    hydra = HydraConfig.get()
    if not folder or hydra.mode != RunMode.MULTIRUN:
        return None
    from segloss.io import write_json

    path = Path(folder) / f"{hydra.job.num}.json"
    keys = {"loss", "seed", "cv.fold"} | set(hydra.sweeper.get("params") or {})  # + a factor
    named = [o for o in hydra.overrides.task if o.split("=")[0] in keys and "=null" not in o]
    label = " ".join(named) or f"job {hydra.job.num}"

    def on_epoch(epoch: int, epochs: int, row: Mapping[str, float]) -> None:
        write_json({"job": label, "state": "running", "epoch": epoch, "epochs": epochs}, path)

    def on_end(state: str) -> None:
        write_json({"job": label, "state": state}, path)

    return on_epoch, on_end


class SweepProgress:
    """One display for a sweep whose jobs run in parallel: models done of total, each running
    job's epoch, elapsed time and ETA (rich; redrawn every second on a terminal, printed once
    at the end elsewhere). Jobs report through :func:`job_progress`."""

    def __init__(self, folder: Path, total: int) -> None:
        self.folder, self.total = folder, total
        self.folder.mkdir(parents=True, exist_ok=True)
        self._started = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def states(self) -> list[dict]:
        found = []
        for path in sorted(self.folder.glob("[!.]*.json")):  # not atomic writes' temporaries
            with contextlib.suppress(OSError, ValueError):
                found.append(json.loads(path.read_text()))
        return found

    def render(self) -> Group:
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        states = self.states()
        done = sum(s.get("state") in ("done", "reused") for s in states)
        failed = sum(s.get("state") == "failed" for s in states)
        running = [s for s in states if s.get("state") == "running"]
        elapsed = time.monotonic() - self._started
        progress = done + failed + sum(s["epoch"] / max(1, s["epochs"]) for s in running)
        eta = elapsed * (self.total - progress) / progress if progress else None
        title = (
            f"sweep: {done}/{self.total} models done"
            + (f", {failed} failed" if failed else "")
            + f", elapsed {_clock(elapsed)}, ETA {_clock(eta) if eta is not None else '?'}"
        )
        if not running:
            return Text(title)
        table = Table(show_edge=False)
        table.add_column("running job")
        table.add_column("epoch", justify="right")
        for s in running:
            table.add_row(s["job"], f"{s['epoch']}/{s['epochs']}")
        return Group(Text(title), table)

    def start(self) -> None:
        from rich.console import Console
        from rich.live import Live

        console = Console(stderr=True)
        self._live = Live(self.render(), console=console, refresh_per_second=1, transient=False)
        if console.is_terminal:
            self._live.start()

        def loop() -> None:
            while not self._stop.wait(1.0):
                if console.is_terminal:
                    self._live.update(self.render())

        self._thread = threading.Thread(target=loop, name="sweep-progress", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._live.is_started:
            self._live.update(self.render())
            self._live.stop()
        elif self.states():  # a sweep whose jobs never started (refused) has nothing to show
            self._live.console.print(self.render())


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
