"""Ending a child process for sure: polite signals first, SIGKILL last, and always reaped.

A server child that ignores a signal (SIGINT is ignored by processes started in the background
from a non-interactive shell; a stopped process acts on nothing but SIGKILL) must not outlive the
benchmark or test that started it, nor block it forever.
"""
from __future__ import annotations

import signal
import subprocess
from typing import Callable, Sequence


def stop_process(process: subprocess.Popen, *, signals: Sequence[int] = (signal.SIGINT, signal.SIGTERM),
                 wait: float = 5.0, before: Callable[[], None] | None = None) -> str:
    """Stop ``process`` and reap it; returns what ended it (``"exited"``, a signal name, or ``"SIGKILL"``).

    ``before`` (e.g. closing the child's stdin) runs first and gets ``wait`` seconds; then each of
    ``signals`` in turn gets ``wait`` seconds; SIGKILL ends whatever is left. Every wait is bounded."""
    steps: list[tuple[str, Callable[[], None]]] = []
    if before is not None:
        steps.append(("exited", before))
    steps += [(signal.Signals(sig).name, lambda sig=sig: process.send_signal(sig)) for sig in signals]
    if process.poll() is not None:
        if before is not None:
            before()  # still let go of what it holds (its stdin pipe)
        return "exited"
    for name, action in steps:
        try:
            action()
        except (ProcessLookupError, OSError, ValueError):
            pass  # it ended meanwhile, or its stdin is already closed
        try:
            process.wait(wait)
            return name
        except subprocess.TimeoutExpired:
            continue
    process.kill()
    process.wait()  # SIGKILL can't be ignored; reaping it takes no time
    return "SIGKILL"
