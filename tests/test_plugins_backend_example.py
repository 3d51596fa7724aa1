"""The example third-party back-end examples/studio-backend-example (`clm`, continued pretraining
on packed raw text): its text and packing in-process, then the whole life of a back-end plugin in
an isolated virtualenv — install with `studio plugins install`, list, `studio train backends`,
`studio run` its recipe to a passing learning check, uninstall — through real subprocesses."""
from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import pytest

from studio.records import Record, Turn
from studio.recipes.train import TrainRecipe
from test_plugins_chatml import IsolatedStudio

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "studio-backend-example"
DOLLY = ROOT / "datasets" / "dolly.jsonl"
OPTIONS = ["block_size", "join_with", "add_eos", "drop_remainder"]


@pytest.fixture(scope="module")
def clm():
    sys.path.insert(0, str(EXAMPLE))
    try:
        sys.modules.pop("studio_backend_example", None)
        import studio_backend_example
        assert Path(studio_backend_example.__file__).resolve().is_relative_to(EXAMPLE.resolve())
        yield studio_backend_example
    finally:
        sys.path.remove(str(EXAMPLE))
        sys.modules.pop("studio_backend_example", None)


# --- text and packing, in-process ------------------------------------------------------------


def test_document_joins_turn_contents_without_template(clm):
    record = Record([Turn("system", "Be brief."), Turn("user", "Q?"), Turn("assistant", "A."),
                     Turn("assistant", "")])
    assert clm.document(record, "\n\n") == "Be brief.\n\nQ?\n\nA."
    assert clm.document(record, " | ") == "Be brief. | Q? | A."


def test_pack_concatenates_and_cuts_blocks(clm):
    docs = [[1, 2, 3], [4, 5], [6, 7, 8, 9, 10]]
    assert clm.pack(docs, 4) == [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10]]
    assert clm.pack(docs, 4, drop_remainder=True) == [[1, 2, 3, 4], [5, 6, 7, 8]]
    assert clm.pack(docs, 5, drop_remainder=True) == [[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]]
    assert clm.pack([], 4) == []
    assert clm.pack([[1, 2]], 4, drop_remainder=True) == []


def test_options_are_described_and_strict(clm):
    options = clm.CLMOptions
    assert list(options.model_fields) == OPTIONS
    assert all(field.description for field in options.model_fields.values())
    with pytest.raises(ValueError, match="extra"):
        options(block_sise=64)
    with pytest.raises(ValueError):
        options(block_size=2)


def test_check_needs_a_block_size(clm):
    backend = clm.CLMBackend()
    recipe = TrainRecipe(backend="clm", dataset="x.jsonl", training={"max_length": None})
    assert "block_size" in backend.check(recipe, clm.CLMOptions())[0]
    assert backend.check(recipe, clm.CLMOptions(block_size=32)) == []
    assert backend.check(TrainRecipe(backend="clm", dataset="x.jsonl"), clm.CLMOptions()) == []


# --- the whole life of a back-end plugin, in an isolated virtualenv --------------------------


@pytest.mark.slow
def test_backend_plugin_install_train_uninstall(tmp_path):
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    iso = IsolatedStudio(tmp_path)
    # The session's studio home: the embedded model built once serves every test.
    iso.env["STUDIO_HOME"] = os.environ["STUDIO_HOME"]
    assert iso.query("import importlib.util as u; print(u.find_spec('studio_backend_example') is None)") == "True"
    assert "clm" not in iso.plugins()
    backends = {b["name"] for b in iso.json("train", "backends")}
    assert "sft" in backends and "clm" not in backends

    # Install from a copy, so that building never writes into the repository.
    source = tmp_path / "studio-backend-example"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    t1 = time.perf_counter()
    proc = iso.studio("plugins", "install", str(source))
    timings["install"] = time.perf_counter() - t1
    assert "Successfully installed studio-backend-example-0.1.0" in proc.stdout + proc.stderr
    assert any(iso.site.glob("studio_backend_example-0.1.0.dist-info")), "installed outside the isolated venv"

    listing = iso.plugins()
    assert {k: listing["clm"][k] for k in ("module", "distribution", "version", "builtin", "status", "error", "provides")} == {
        "module": "studio_backend_example", "distribution": "studio-backend-example", "version": "0.1.0",
        "builtin": False, "status": "ok", "error": None, "provides": ["backend:clm"]}
    row = {b["name"]: b for b in iso.json("train", "backends")}["clm"]
    assert row["data"] == "conversation"
    assert "lora" in row["adapters"] and "prompt_tuning" not in row["adapters"]
    assert {o["name"]: o["default"] for o in row["fields"]} == {
        "block_size": None, "join_with": "\n\n", "add_eos": True, "drop_remainder": False}
    assert all(o["help"] for o in row["fields"])

    # The copied recipe no longer sits two folders below datasets/: name the file outright.
    ws = tmp_path / "ws"
    iso.studio("init", str(ws))
    recipe = str(source / "recipe-clm.yaml")
    data = f"dataset={DOLLY}"
    plan = iso.json("run", recipe, data, "--check", "-w", str(ws))
    assert (plan["backend"], plan["train_records"], plan["eval_records"]) == ("clm", 13, 2)
    assert plan["config"] == {"block_size": None, "join_with": "\n\n", "add_eos": True, "drop_remainder": False}
    bad = iso.studio("run", recipe, data, "config.block_sise=64", "--check", "-w", str(ws), ok=False)
    assert bad.returncode != 0 and "block_sise" in bad.stdout + bad.stderr

    shown = iso.json("train", "preview", recipe, data, "-w", str(ws))
    assert shown["backend"] == "clm" and shown["tokens"] == shown["loss_tokens"] > 10
    assert "<|im_start|>" not in "".join(s["text"] for s in shown["segments"])  # raw text, no template

    t2 = time.perf_counter()
    outcome = iso.json("run", recipe, data, "-w", str(ws))
    timings["run"] = time.perf_counter() - t2
    run_dir = Path(outcome["run_dir"])
    log = (run_dir / "train.log").read_text(encoding="utf-8") if (run_dir / "train.log").exists() else ""
    assert outcome["status"] == "completed", f"{outcome}\n{log[-3000:]}"
    assert outcome["checks_passed"] is True, outcome["checks"]
    [check] = outcome["checks"]
    assert check["metric"] == "loss" and check["passed"] and check["last"] < check["first"]
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text(encoding="utf-8").splitlines()]
    [packed] = [e for e in events if e["event"] == "info" and "blocks" in e]
    assert packed["block_size"] == 64 and packed["blocks"] > 10 and packed["eval_blocks"] >= 1
    assert [e["step"] for e in events if e["event"] == "checkpoint"] == [15, 30]
    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    assert "eval_loss" in metrics["final"]
    assert (run_dir / "final" / "config.json").is_file() and (run_dir / "final" / "tokenizer.json").is_file()

    iso.studio("plugins", "uninstall", "clm")
    assert not any(iso.site.glob("studio_backend_example*")), "files of the plugin are left in the venv"
    assert "clm" not in iso.plugins()
    assert "clm" not in {b["name"] for b in iso.json("train", "backends")}
    gone = iso.studio("run", recipe, data, "--check", "-w", str(ws), ok=False)
    assert gone.returncode != 0 and "no tuning back-end 'clm'" in gone.stdout + gone.stderr
    timings["total"] = time.perf_counter() - t0
    print("timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
