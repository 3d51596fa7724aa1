"""One resolver for model references: a run id (or a unique part of it), as `studio runs ls`
shows it, works for `model info`, `model export`, `serve` and a recipe's `model:`; a reference
that names nothing says everything it tried; a model a run cannot train is refused before the
run starts."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import yaml

from conftest import DATASETS, ROOT
from studio.cli import main
from studio.run_files import RunFiles
from studio.store import Workspace

RUN_ID = "20261206-120000-sft-ab12"


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _model_copy(dest: Path) -> Path:
    from studio.models.embedded import ensure_embedded_model

    shutil.copytree(ensure_embedded_model("tiny"), dest)
    return dest


def _run_folder(ws: Workspace, run_id: str, trained: bool = True) -> Path:
    folder = Path(ws.root) / "runs" / run_id
    folder.mkdir(parents=True)
    (folder / "recipe.yaml").write_text(yaml.safe_dump({"backend": "sft", "dataset": "x.jsonl"}))
    RunFiles(folder).write_status(status="completed" if trained else "running", backend="sft")
    if trained:
        _model_copy(folder / "final")
    return folder


@pytest.fixture
def ws(tmp_path) -> Workspace:
    ws = Workspace.init(tmp_path / "ws")
    _run_folder(ws, RUN_ID)
    return ws


def test_model_info_and_export_take_a_run_id_or_a_unique_part_of_it(ws, tmp_path, capsys):
    code, out, err = run(capsys, "model", "info", "ab12", "--json", "-w", str(ws.root))
    assert code == 0, err
    assert json.loads(out)["path"] == str(Path(ws.root) / "runs" / RUN_ID / "final")
    out_dir = tmp_path / "exported"
    code, _, err = run(capsys, "model", "export", RUN_ID, str(out_dir), "-w", str(ws.root))
    assert code == 0, err
    assert (out_dir / "model.safetensors").is_file() and (out_dir / "chat_template.jinja").is_file()
    assert json.loads((out_dir / "studio_export.json").read_text())["exported_from"].endswith(f"{RUN_ID}/final")


def test_serve_takes_a_run_id_and_serves_it_under_that_name(ws):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "studio", "serve", RUN_ID, "--port", "0", "-w", str(ws.root)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        assert line.startswith(f"Serving {RUN_ID} at http://127.0.0.1:"), (line, proc.stderr.read()
                                                                             if proc.poll() is not None else "")
        base_url = line.split(" at ")[1].strip()
        with urllib.request.urlopen(f"{base_url}/models", timeout=60) as reply:
            assert [m["id"] for m in json.loads(reply.read())["data"]] == [RUN_ID]
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def test_a_reference_that_names_nothing_says_what_was_tried(ws, tmp_path, capsys):
    out_dir = tmp_path / "never"
    code, _, err = run(capsys, "model", "export", "no-such-model", str(out_dir), "-w", str(ws.root))
    err = " ".join(err.split())
    assert code == 1 and "no model 'no-such-model'" in err
    assert "the embedded model" in err and f"a run of the workspace {ws.root}" in err and "hub id" in err
    assert not out_dir.exists()
    code, _, err = run(capsys, "model", "info", "no-such-model", "-w", str(ws.root))
    assert code == 1 and "not a local model" in err


def test_ambiguous_and_untrained_runs_are_named(ws, capsys):
    _run_folder(ws, "20261206-130000-sft-ab99")
    code, _, err = run(capsys, "model", "info", "20261206-1", "-w", str(ws.root))
    assert code == 1 and "matches 2 runs" in err
    _run_folder(ws, "20261206-140000-dpo-cd34", trained=False)
    code, _, err = run(capsys, "model", "info", "cd34", "-w", str(ws.root))
    assert code == 1 and "has no trained model yet" in err


def _train_recipe(tmp_path: Path, **fields) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump({"backend": "dpo", "dataset": str(DATASETS / "train" / "pref_style.jsonl"),
                                    "training": {"max_steps": 2, "report_to": []}, **fields}))
    return path


def test_preflight_refuses_a_model_without_a_chat_template(ws, tmp_path, capsys):
    plain = _model_copy(tmp_path / "plain")
    (plain / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((plain / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (plain / "tokenizer_config.json").write_text(json.dumps(config))
    code, _, err = run(capsys, "run", str(_train_recipe(tmp_path, model=str(plain))), "--check", "-w", str(ws.root))
    assert code == 1 and "has no chat template" in err and "'dpo'" in err
    assert not list((Path(ws.root) / "runs").glob("*-dpo-*"))  # no run folder was made
    # SFT can bring its own template.
    sft = _train_recipe(tmp_path, model=str(plain), backend="sft", dataset=str(DATASETS / "train" / "sft_chat.jsonl"),
                        config={"chat_template": "chatml"})
    assert run(capsys, "run", str(sft), "--check", "-w", str(ws.root))[0] == 0


def test_a_recipe_may_start_from_a_run_id(ws, tmp_path, capsys):
    code, out, err = run(capsys, "run", str(_train_recipe(tmp_path, model="ab12")), "--check", "--json",
                         "-w", str(ws.root))
    assert code == 0, err
    assert json.loads(out)["model"] == "ab12"
    from studio.recipes import load_recipe
    from studio.training.preflight import preflight

    checked = preflight(ws, load_recipe(_train_recipe(tmp_path, model="ab12")))
    assert checked.model == str(Path(ws.root) / "runs" / RUN_ID / "final")  # what the run folder pins
