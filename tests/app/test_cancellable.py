"""``run_cancellable``: Ctrl-C reaches the caller at once while the job sits in a native call, and the job stops at
its next stage instead of going on."""
from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator

import pytest

from app.cancellable import Cancelled, check_cancelled, run_cancellable


@pytest.fixture(autouse=True)
def ctrl_c_raises() -> Iterator[None]:
    """Python's own Ctrl-C handling, as in a terminal (a shell starts background jobs with SIGINT ignored)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def interrupt_in(seconds: float) -> threading.Timer:
    """SIGINT to this process after ``seconds`` (Python turns it into KeyboardInterrupt in the main thread)."""
    timer = threading.Timer(seconds, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    return timer


def test_ctrl_c_during_a_long_native_call_is_raised_at_once_and_the_job_stops_at_its_next_stage() -> None:
    stages: list[str] = []
    stopped = threading.Event()

    def job(cancel: threading.Event) -> str:
        stages.append("compute")
        time.sleep(2.0)  # one native call holding no Python frame of the main thread (as a long torch kernel)
        try:
            check_cancelled(cancel)
        except Cancelled:
            stopped.set()
            raise
        stages.append("write")
        return "done"

    timer = interrupt_in(0.3)
    started = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        run_cancellable(job)
    waited = time.perf_counter() - started
    timer.join()
    assert waited < 1.5, f"Ctrl-C took {waited:.2f} s to reach the caller"
    assert stopped.wait(10.0) and stages == ["compute"]  # the job did not go on to write


def test_the_result_and_the_jobs_own_exception_come_back_to_the_caller() -> None:
    assert run_cancellable(lambda cancel: 41 + int(not cancel.is_set())) == 42

    def failing(cancel: threading.Event) -> None:
        raise ValueError("bad photo")

    with pytest.raises(ValueError, match="bad photo"):
        run_cancellable(failing)
