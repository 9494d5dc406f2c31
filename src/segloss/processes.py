"""Processes by host, PID and start time (is the one that wrote a run still there?), and
SIGTERM turned into KeyboardInterrupt so that it ends a run as KILLED like Ctrl-C does.

Ground floor (psutil only, no mlflow or torch), so a sweep job can watch its launching
process without paying for the heavy imports.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from types import FrameType

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


_RECEIVED: list[str] = []  # names of the signals turned into KeyboardInterrupt, in order
_HELD: list[str] = []  # signals received inside the main thread's uninterrupted() blocks
_DEPTH = [0]  # how deep the main thread is in uninterrupted() blocks


def received_signal() -> str | None:
    """The first signal :func:`sigterm_as_interrupt` turned into an interrupt in this process
    (None if none did)."""
    return _RECEIVED[0] if _RECEIVED else None


def signal_reason(exc: BaseException) -> str:
    """Why a KeyboardInterrupt happened: the signal (from :func:`sigterm_as_interrupt`), or
    Ctrl-C."""
    return f"interrupted by {exc.args[0]}" if exc.args else "interrupted by Ctrl-C (SIGINT)"


@contextlib.contextmanager
def sigterm_as_interrupt(signals: tuple[int, ...] = (signal.SIGTERM,)) -> Iterator[None]:
    """Turn SIGTERM (or ``signals``) into KeyboardInterrupt("<name>") (main thread only), so
    it ends the run as KILLED like Ctrl-C does; the previous handlers come back on exit."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        _RECEIVED.append(name)
        if _DEPTH[0]:
            _HELD.append(name)  # raised when the block ends
            return
        raise KeyboardInterrupt(name)

    previous = {signum: signal.signal(signum, handler) for signum in signals}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


@contextlib.contextmanager
def uninterrupted() -> Iterator[None]:
    """Hold back the KeyboardInterrupt of :func:`sigterm_as_interrupt` while the main thread
    runs the block, and raise it when the block ends. A tracking-store write cut off midway
    leaves its SQLite transaction open, and every later write of the process (ending the run
    KILLED) then fails "database is locked". Other threads run the block unchanged."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _DEPTH[0] += 1
    try:
        yield
    finally:
        _DEPTH[0] -= 1
        if not _DEPTH[0] and _HELD:
            name = _HELD[0]
            _HELD.clear()
            raise KeyboardInterrupt(name)
