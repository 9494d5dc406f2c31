"""Processes by host, PID and start time: is the one that wrote a run still there?

Ground floor (psutil only, no mlflow or torch), so a sweep job can watch its launching
process without paying for the heavy imports.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time

import psutil


def identity() -> tuple[str, int, float]:
    """This process's host, PID and start time (seconds since the epoch)."""
    me = psutil.Process()
    return socket.gethostname(), me.pid, round(me.create_time(), 2)


def alive(pid: int, started: float | None) -> bool:
    """Is process ``pid`` (started at ``started``; None: any start time) still there? A PID
    reused by a process started at another time does not count."""
    try:
        process = psutil.Process(pid)
        return started is None or abs(process.create_time() - started) < 1.0
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return False


def watch(pid: int, started: float | None, interval: float = 1.0) -> threading.Thread:
    """A daemon thread that sends SIGTERM to this process once process ``pid`` is gone: a
    sweep job whose launching process died ends its run KILLED instead of training on."""

    def run() -> None:
        while alive(pid, started):
            time.sleep(interval)
        os.kill(os.getpid(), signal.SIGTERM)

    thread = threading.Thread(target=run, name=f"watch-{pid}", daemon=True)
    thread.start()
    return thread
