"""Run a long job so that Ctrl-C stops it within a fraction of a second, even inside one long native call.

Python runs its SIGINT handler between bytecodes of the main thread only: while the main thread is inside one
torch kernel or C++ call (a max-pool over a whole photo, a rasteriser pass), Ctrl-C waits until that call
returns, minutes on a large photo. :func:`run_cancellable` runs the job in a worker thread (torch kernels release
the GIL) while the main thread waits in short, signal-aware steps, so Ctrl-C raises ``KeyboardInterrupt`` in the
main thread at once. The job receives a ``cancel`` event, set on that interrupt, and checks it between its stages
(:func:`check_cancelled`) so that it stops there instead of going on to write anything.
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
POLL_SECONDS = 0.1


class Cancelled(Exception):
    """The job saw its cancel event set (the caller was interrupted) and stopped between two stages."""


def check_cancelled(cancel: threading.Event | None) -> None:
    """Raise :class:`Cancelled` when ``cancel`` is set; call it between the stages of a job."""
    if cancel is not None and cancel.is_set():
        raise Cancelled("the job was interrupted")


def run_cancellable(job: Callable[[threading.Event], T], name: str = "job") -> T:
    """``job(cancel)`` run in a daemon worker thread; its result, or the exception it raised, in this thread.

    Ctrl-C (``KeyboardInterrupt``, or any exception raised here while waiting) sets ``cancel`` and propagates at
    once; the worker stops at its next :func:`check_cancelled`, or with the process.
    """
    cancel = threading.Event()
    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            outcome["result"] = job(cancel)
        except BaseException as error:  # handed to the waiting thread, which raises it
            outcome["error"] = error

    worker = threading.Thread(target=work, name=name, daemon=True)
    worker.start()
    try:
        while worker.is_alive():
            worker.join(POLL_SECONDS)
    except BaseException:
        cancel.set()
        raise
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]
