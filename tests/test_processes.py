"""segloss.processes: signals as interrupts, held back while a store call runs."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from segloss import processes


def test_sigterm_is_an_interrupt_named_after_it():
    with processes.sigterm_as_interrupt(), pytest.raises(KeyboardInterrupt) as caught:
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(10**6):  # the handler runs between bytecodes of the main thread
            pass
    assert caught.value.args == ("SIGTERM",)
    assert processes.signal_reason(caught.value) == "interrupted by SIGTERM"


def test_an_interrupt_waits_for_the_uninterrupted_block_and_comes_after_it():
    done = []
    with processes.sigterm_as_interrupt(), pytest.raises(KeyboardInterrupt) as caught:
        with processes.uninterrupted():
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(10**6):  # time for the handler to run inside the block
                pass
            done.append("the block ran to its end")
        done.append("not reached: the interrupt comes as the block ends")
    assert done == ["the block ran to its end"] and caught.value.args == ("SIGTERM",)
    with processes.sigterm_as_interrupt(), processes.uninterrupted():
        pass  # nothing held over from before


def test_another_threads_block_does_not_hold_the_main_threads_interrupt():
    inside, release = threading.Event(), threading.Event()

    def worker() -> None:
        with processes.uninterrupted():
            inside.set()
            release.wait(10)

    thread = threading.Thread(target=worker)
    thread.start()
    inside.wait(10)
    try:
        with processes.sigterm_as_interrupt(), pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(10**6):
                pass
    finally:
        release.set()
        thread.join()
