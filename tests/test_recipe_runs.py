"""`studio run` runs any recipe kind and pipelines that hand a dataset or a model from one step to
the next; Ctrl-C asks a training run to checkpoint and stop."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import DATASETS, ROOT
from studio.store import Workspace
from studio.training.runs import TrainRun, list_runs

pytestmark = pytest.mark.slow


def _studio(*args: str, cwd: Path, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "studio", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "PYTHONPATH": str(ROOT)}, **kwargs)


def test_a_pipeline_curates_then_trains_on_what_it_curated(tmp_path):
    ws = Workspace.init(tmp_path / "ws")
    pipeline = tmp_path / "curate-then-sft.yaml"
    pipeline.write_text(yaml.safe_dump({"steps": [
        {"recipe": str(ROOT / "recipes" / "curate-dolly.yaml")},
        {"recipe": "train-sft-lora", "set": {"dataset": "previous", "training.max_steps": 2, "expect": [],
                                             "eval_fraction": 0}},
    ]}))
    proc = _studio("run", str(pipeline), "--json", "-w", str(ws.root), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    train = ws.head("dolly-clean-train")
    [listed] = list_runs(ws)
    run = TrainRun(Path(ws.root) / "runs" / listed["run_id"])
    # The run trained on exactly the version the curation step wrote, pinned in its folder.
    assert run.recipe().dataset == f"dolly-clean-train@{train.id}" and listed["status"] == "completed"
    assert listed["train_records"] == train.num_records
    assert "step 0 of 2" in " ".join(proc.stderr.split()) and "step 1 of 2" in " ".join(proc.stderr.split())


def test_ctrl_c_checkpoints_the_training_run_and_says_how_to_resume(tmp_path):
    ws = Workspace.init(tmp_path / "ws")
    recipe = tmp_path / "long.yaml"
    recipe.write_text(yaml.safe_dump({
        "backend": "sft", "dataset": str(DATASETS / "dolly.jsonl"), "adapter": {"method": "lora", "r": 4},
        "training": {"max_steps": 400, "save_steps": 1000, "logging_steps": 1, "batch_size": 2, "report_to": []}}))
    proc = subprocess.Popen([sys.executable, "-m", "studio", "run", str(recipe), "-w", str(ws.root)], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        deadline = time.time() + 300
        run = None
        while time.time() < deadline:
            runs = list_runs(ws)
            if runs and (runs[0].get("step") or 0) >= 2:
                run = TrainRun(Path(ws.root) / "runs" / runs[0]["run_id"])
                break
            time.sleep(0.2)
        assert run is not None, "the run never got going"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    status = run.status()
    assert status["status"] == "cancelled" and status["step"] < 400
    assert [c["step"] for c in run.checkpoints() if c["complete"]] == [status["step"]]
    assert f"resume with: studio runs resume {run.run_id}" in " ".join(err.split())
    assert proc.returncode == 1 and "cancelled" in out
    assert json.loads(_studio("runs", "show", run.run_id, "--json", "-w", str(ws.root), cwd=tmp_path).stdout)[
        "status"] == "cancelled"
