"""Runs as subprocesses: the CLI, kill -9 and resume matching an uninterrupted run, cancel,
pre-run data checks, launchers with two CPU processes, export of a merged LoRA and serving it."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import DATASETS, ROOT, kill_at_checkpoint, resume_to_end, run_to_end
from studio.store import Workspace
from studio.training import runs
from studio.training.expectations import series

pytestmark = pytest.mark.slow

BASE = {
    "backend": "sft",
    "dataset": str(DATASETS / "dolly.jsonl"),
    "seed": 3,
    "training": {"max_steps": 20, "save_steps": 5, "logging_steps": 1, "batch_size": 4, "learning_rate": 0.003,
                 "report_to": []},
    "adapter": {"method": "lora", "r": 4},
}


def _recipe(tmp_path: Path, name: str = "r.yaml", **changes) -> Path:
    data = json.loads(json.dumps(BASE))
    for key, value in changes.items():
        node = data
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def _studio(*args: str, cwd: Path, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "studio", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONPATH": str(ROOT)})
    if check and proc.returncode != 0:
        raise AssertionError(f"studio {' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture()
def ws(tmp_path) -> Workspace:
    return Workspace.init(tmp_path / "ws")


def _losses(run: runs.TrainRun) -> list[float]:
    return series(run.metric_history(), "loss")


def test_kill_9_between_checkpoints_then_resume_matches_uninterrupted(ws, tmp_path):
    path = _recipe(tmp_path)
    reference = run_to_end(ws, path)

    run, killed_after = kill_at_checkpoint(ws, path, 5)
    assert killed_after == 5
    assert run.status()["status"] == "interrupted"
    done = [c["step"] for c in run.checkpoints() if c["complete"]]
    assert 5 in done and max(done) < 20, done

    resume_to_end(run)
    assert any(e["event"] == "start" and e["resume"] for e in run.events())
    # Every step's loss, the held-out loss and the trained weights equal the uninterrupted run's.
    assert _losses(run) == pytest.approx(_losses(reference), abs=1e-5)
    assert len(_losses(run)) == 20
    assert run.metrics()["final"]["eval_loss"] == pytest.approx(reference.metrics()["final"]["eval_loss"], abs=1e-5)
    from safetensors.torch import load_file

    a = load_file(str(reference.final_dir / "adapter_model.safetensors"))
    b = load_file(str(run.final_dir / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all((a[k] - b[k]).abs().max() < 1e-5 for k in a)


def test_cli_run_cancel_and_resume(ws, tmp_path):
    path = _recipe(tmp_path, **{"training.max_steps": 60, "training.save_steps": 1000, "training.logging_steps": 10})
    started = json.loads(_studio("run", str(path), "--detach", "--json", "-w", str(ws.root), cwd=tmp_path).stdout)
    run = runs.TrainRun(Path(started["run_dir"]))
    deadline = time.time() + 120
    while not any(e["event"] == "progress" and e["step"] >= 3 for e in run.events()) and time.time() < deadline:
        time.sleep(0.02)
    # In-process so the request lands within a step; the CLI then reports the settled state.
    assert runs.cancel(run, grace_s=120) == "cancelled"
    cancelled = json.loads(_studio("runs", "cancel", run.run_id, "-w", str(ws.root), "--json", cwd=tmp_path).stdout)
    assert cancelled["status"] == "cancelled"
    status = run.status()
    stopped_at = status["step"]
    assert status["status"] == "cancelled" and 3 <= stopped_at < 60
    # Cancelling saved a checkpoint at the step it stopped, so nothing is lost.
    assert [c["step"] for c in run.checkpoints() if c["complete"]] == [stopped_at]

    listed = json.loads(_studio("runs", "ls", "-w", str(ws.root), "--json", cwd=tmp_path).stdout)
    assert [(r["run_id"], r["status"]) for r in listed] == [(run.run_id, "cancelled")]
    shown = json.loads(_studio("runs", "show", run.run_id, "-w", str(ws.root), "--json", cwd=tmp_path).stdout)
    assert shown["latest"]["loss"] > 0 and shown["checkpoints"][0]["step"] == stopped_at

    resumed = _studio("runs", "resume", run.run_id, "-w", str(ws.root), "--json", "training.max_steps=1",
                      cwd=tmp_path, check=False)
    assert resumed.returncode != 0  # resume takes no overrides: the run continues as it was recipe'd
    resumed = json.loads(_studio("runs", "resume", run.run_id, "-w", str(ws.root), "--json", cwd=tmp_path).stdout)
    assert resumed["status"] == "completed" and run.status()["step"] == 60


def test_wrong_shape_data_is_refused_before_the_run(ws, tmp_path):
    path = _recipe(tmp_path, dataset=str(DATASETS / "prompts.jsonl"))
    proc = _studio("run", str(path), "-w", str(ws.root), cwd=tmp_path, check=False)
    assert proc.returncode == 1
    assert "record 1: field 'messages': no assistant turn" in proc.stderr
    assert not (Path(ws.root) / "runs").exists() or not list((Path(ws.root) / "runs").iterdir())
    checked = json.loads(_studio("run", str(_recipe(tmp_path, "ok.yaml")), "--check", "--json", "-w", str(ws.root),
                                 cwd=tmp_path).stdout)
    assert checked["train_records"] + checked["eval_records"] == 15 and checked["adapter"] == "lora"
    qlora = _studio("run", str(_recipe(tmp_path, "q.yaml", **{"adapter.method": "qlora"})), "--check",
                    "-w", str(ws.root), cwd=tmp_path, check=False)
    assert qlora.returncode == 1 and "QLoRA needs" in qlora.stderr


@pytest.mark.parametrize("launcher", ["torchrun", "accelerate"])
def test_launcher_runs_two_cpu_processes(ws, tmp_path, launcher):
    path = _recipe(tmp_path, **{"training.max_steps": 6, "training.save_steps": 3})
    out = _studio("run", str(path), "--launcher", launcher, "--nproc", "2", "--json", "-w", str(ws.root), cwd=tmp_path)
    result = json.loads(out.stdout)
    assert result["status"] == "completed"
    run = runs.TrainRun(Path(result["run_dir"]))
    start = next(e for e in run.events() if e["event"] == "start")
    assert start["world_size"] == 2
    # Only rank 0 writes events: one metrics line per logged step.
    steps = [e["step"] for e in run.events() if e["event"] == "metrics" and "loss" in e["values"]]
    assert steps == sorted(set(steps)) and steps[-1] == 6
    assert (run.final_dir / "adapter_model.safetensors").is_file()


def test_export_merges_lora_and_the_export_serves(ws, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    from studio.models.loading import load_model

    path = _recipe(tmp_path, **{"training.max_steps": 8, "training.learning_rate": 0.02})
    run = run_to_end(ws, path)
    out = tmp_path / "export"
    _studio("model", "export", str(run.path), str(out), cwd=tmp_path)
    assert not (out / "adapter_config.json").exists() and (out / "model.safetensors").is_file()
    merged = AutoModelForCausalLM.from_pretrained(str(out)).eval()
    adapted, tokenizer = load_model(str(run.path), device="cpu")
    ids = tokenizer("Tell me about whales", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.allclose(merged(ids).logits, adapted(ids).logits, atol=1e-4)
        base = AutoModelForCausalLM.from_pretrained(str(Path(adapted.peft_config["default"].base_model_name_or_path)))
        assert not torch.allclose(base(ids).logits, merged(ids).logits, atol=1e-4)  # training changed it

    from openai import OpenAI

    from studio.serving.launch import start_background_server

    server = start_background_server(str(out))
    try:
        client = OpenAI(base_url=server.base_url, api_key="local")
        reply = client.chat.completions.create(model=server.model_name, max_tokens=8,
                                               messages=[{"role": "user", "content": "Hello"}])
        assert reply.choices[0].message.role == "assistant"
    finally:
        server.stop()


def test_recipes_ls_validate_and_copy(tmp_path):
    listed = json.loads(_studio("recipes", "ls", "--json", cwd=tmp_path).stdout)
    kinds = {r["kind"] for r in listed}
    assert {"curate", "generate"} <= kinds
    assert all(r["command"].startswith("studio ") for r in listed)
    _studio("recipes", "validate", cwd=tmp_path)  # every shipped recipe
    bad = tmp_path / "bad.yaml"
    bad.write_text("# studio run bad.yaml\nbackend: sft\ndataset: x.jsonl\nadapter: {method: lora, r: 0}\n")
    proc = _studio("recipes", "validate", str(bad), cwd=tmp_path, check=False)
    assert proc.returncode == 1 and "adapter.r" in proc.stdout
    train = [r for r in listed if r["kind"] == "train"]
    if train:
        copied = tmp_path / "mine"
        copied.mkdir()
        _studio("recipes", "cp", train[0]["name"], str(copied), cwd=tmp_path)
        copy = copied / f"{train[0]['name']}.yaml"
        dataset = yaml.safe_load(copy.read_text())["dataset"]
        assert Path(dataset).is_absolute() and Path(dataset).is_file()
        _studio("recipes", "validate", str(copy), cwd=tmp_path)


def test_quickstart_pipeline_sft_then_dpo_from_the_sft_model(ws, tmp_path):
    """recipes/quickstart.yaml: SFT with LoRA, then DPO starting from the SFT run's model."""
    out = _studio("run", str(ROOT / "recipes" / "quickstart.yaml"), "--json", "-w", str(ws.root), cwd=ROOT,
                  timeout=900)
    results = [json.loads(chunk) for chunk in _json_objects(out.stdout)]
    assert [r["status"] for r in results] == ["completed", "completed"]
    assert all(r["checks_passed"] for r in results), results
    sft, dpo = (runs.TrainRun(Path(r["run_dir"])) for r in results)
    assert sft.recipe().backend == "sft" and dpo.recipe().backend == "dpo"
    assert dpo.recipe().model == str(sft.path)
    assert any("merged the adapter" in e.get("message", "") for e in dpo.events())


def _json_objects(text: str) -> list[str]:
    """Split concatenated pretty-printed JSON objects (one per pipeline step)."""
    decoder, pos, out = json.JSONDecoder(), 0, []
    text = text.strip()
    while pos < len(text):
        obj, end = decoder.raw_decode(text, pos)
        out.append(json.dumps(obj))
        pos = end
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return out
