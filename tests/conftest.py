"""Shared test set-up: offline hub variables (so nothing waits on an unreachable hub) and the
location of the real public data files beside the project."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

for _key, _value in {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "TRANSFORMERS_VERBOSITY": "error",
}.items():
    os.environ.setdefault(_key, _value)

ROOT = Path(__file__).resolve().parents[1]
REALDATA = ROOT.parent / "shared" / "realdata"
DATASETS = ROOT / "datasets"


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    # The sample workspace and HF caches go to a temp folder, never the user's home.
    home = tmp_path_factory.getbasetemp() / "studio-home"
    monkeypatch.setenv("STUDIO_HOME", str(home))
    monkeypatch.setenv("HF_HOME", str(home / "hf"))
    monkeypatch.delenv("STUDIO_WORKSPACE", raising=False)
    monkeypatch.delenv("STUDIO_PLUGINS", raising=False)
    monkeypatch.delenv("STUDIO_STRICT_PLUGINS", raising=False)


def realdata_file(relative: str) -> Path:
    path = REALDATA / relative
    if not path.is_file():
        pytest.skip(f"{path} is absent (real data lives in ../shared/realdata beside the project)")
    return path


def run_to_end(ws, recipe_path: Path):
    """Train a recipe file as the CLI does (a run subprocess) and wait for it to complete."""
    from studio.recipes import load_recipe
    from studio.training import runs

    run = runs.prepare_run(ws, load_recipe(recipe_path))
    process = runs.start(run)
    for _ in runs.follow(run, process):
        pass
    assert run.status()["status"] == "completed", run.log_tail()
    return run


def kill_at_checkpoint(ws, recipe_path: Path, step: int):
    """Start a training run and kill -9 its process as soon as it reports the checkpoint of
    ``step``: ``(run, killed_after)``, where killed_after is None if that never came."""
    import signal
    import time

    from studio.recipes import load_recipe
    from studio.training import runs

    run = runs.prepare_run(ws, load_recipe(recipe_path))
    process = runs.start(run)
    offset, killed_after = 0, None
    deadline = time.time() + 240
    while killed_after is None and time.time() < deadline:
        events, offset = run.read_from("events.jsonl", offset)
        for event in events:
            if event["event"] == "checkpoint" and event["step"] == step:
                os.kill(process.pid, signal.SIGKILL)  # the whole run process, no clean-up
                killed_after = event["step"]
                break
        time.sleep(0.01)
    process.wait(timeout=30)
    return run, killed_after


def resume_to_end(run):
    from studio.training import runs

    resumed = runs.resume(run)
    for _ in runs.follow(run, resumed):
        pass
    assert run.status()["status"] == "completed", run.log_tail()
