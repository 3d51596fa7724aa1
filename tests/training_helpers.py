"""Shared by the training tests: run a prepared recipe to its end in a real subprocess."""
from __future__ import annotations

from studio.store import Workspace
from studio.training import runs


def run_to_end(ws: Workspace, recipe) -> runs.TrainRun:
    run = runs.prepare_run(ws, recipe)
    process = runs.start(run)
    events = list(runs.follow(run, process, poll_s=0.5))
    status = run.status()
    assert status["status"] == "completed", (status, run.log_tail(30))
    assert events[-1]["event"] == "end"
    return run
