"""The CLI, driven the way users and scripts drive it."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from studio.cli import main

ALPACA = [
    {"instruction": "Name a colour.", "input": "", "output": "Teal."},
    {"instruction": "Translate", "input": "bonjour", "output": "hello", "system": "You translate."},
    {"instruction": "Sum", "input": "2 and 3", "output": "5", "history": [["Hi", "Hello!"]]},
]


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys, *argv):
    code, out, err = run(capsys, *argv, "--json")
    assert code == 0, err
    return json.loads(out)


@pytest.fixture
def alpaca_file(tmp_path):
    path = tmp_path / "alpaca.json"
    path.write_text(json.dumps(ALPACA, indent=1))
    return path


@pytest.fixture
def ws_dir(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "ws"
    assert main(["init", str(folder)]) == 0
    assert "workspace ready" in capsys.readouterr().out
    monkeypatch.chdir(folder)
    return folder


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip().startswith("studio 0.")


def test_detect_json(capsys, alpaca_file):
    data = run_json(capsys, "data", "detect", str(alpaca_file))
    assert data["format"] == "alpaca"
    assert data["records"] == 3 and data["rejects"] == 0
    assert "instruction" in data["reason"]


def test_import_ls_show_stats_log_export(capsys, ws_dir, alpaca_file, tmp_path):
    imported = run_json(capsys, "data", "import", str(alpaca_file), "--name", "al")
    assert imported["records"] == 3 and imported["dataset"] == "al"
    listing = run_json(capsys, "data", "ls")
    assert [(d["name"], d["records"], d["versions"]) for d in listing] == [("al", 3, 1)]
    shown = run_json(capsys, "data", "show", "al", "--offset", "1", "--limit", "1")
    assert shown["total"] == 3 and shown["records"][0]["index"] == 1
    assert shown["records"][0]["messages"][0] == {"role": "system", "content": "You translate.", "weight": None}
    hits = run_json(capsys, "data", "show", "al", "--search", "HELLO")
    assert [r["index"] for r in hits["records"]] == [1, 2]
    stats = run_json(capsys, "data", "stats", "al")
    assert stats["records"] == 3 and stats["with_system_prompt"] == 1
    log = run_json(capsys, "data", "log", "al")
    assert log[0]["source"]["path"] == str(alpaca_file) and log[0]["head"] is True
    out = tmp_path / "export.jsonl"
    exported = run_json(capsys, "data", "export", f"al@{imported['version'][:8]}", "--to", "alpaca", "-o", str(out))
    assert exported["written"] == 3
    assert [json.loads(l)["output"] for l in out.read_text().splitlines()] == ["Teal.", "hello", "5"]
    code, text, _ = run(capsys, "data", "show", "al", "--limit", "1")
    assert code == 0 and "Name a colour." in text and "assistant" in text


def test_reimport_makes_a_new_version_with_parent(capsys, ws_dir, alpaca_file):
    first = run_json(capsys, "data", "import", str(alpaca_file), "--name", "al")
    alpaca_file.write_text(json.dumps(ALPACA[:2]))
    second = run_json(capsys, "data", "import", str(alpaca_file), "--name", "al")
    assert second["version"] != first["version"] and second["records"] == 2
    log = run_json(capsys, "data", "log", "al")
    assert [v["parent"] for v in log] == [None, first["version"]]


def test_rejects_are_reported_with_line_and_field(capsys, ws_dir, tmp_path):
    src = tmp_path / "bad.jsonl"
    src.write_text(json.dumps(ALPACA[0]) + "\n" + '{"instruction": "x", "output": 3}\n' + "not json\n")
    code, out, err = run(capsys, "data", "import", str(src), "--name", "bad")
    assert code == 0
    assert f"{src}:2: field 'output': expected str, got int" in err
    assert f"{src}:3:" in err and "broken JSON" in err
    code, _, _ = run(capsys, "data", "import", str(src), "--name", "bad2", "--strict")
    assert code == 3
    rejects = run_json(capsys, "data", "rejects", "bad")
    assert [(r["line"], r["field"]) for r in rejects] == [(2, "output"), (3, None)]


def test_convert_refuses_to_overwrite_source(capsys, alpaca_file):
    code, _, err = run(capsys, "data", "convert", str(alpaca_file), "--to", "alpaca", "-o", str(alpaca_file))
    assert code == 1 and "refusing to overwrite" in err


def test_wrong_override_unknown_format_and_missing_file_are_clear_errors(capsys, alpaca_file, tmp_path):
    code, _, err = run(capsys, "data", "detect", str(alpaca_file), "--format", "no_such_format")
    assert code == 1 and "unknown format 'no_such_format'" in err and "Traceback" not in err
    code, _, err = run(capsys, "data", "detect", str(tmp_path / "missing.json"))
    assert code == 1 and "no such file" in err
    odd = tmp_path / "odd.jsonl"
    odd.write_text('{"q": "a", "r": "b"}\n')
    code, _, err = run(capsys, "data", "detect", str(odd))
    assert code == 1 and "no format explains" in err and "--map" in err


def test_column_map_reads_odd_files(capsys, tmp_path):
    odd = tmp_path / "odd.jsonl"
    odd.write_text('{"ask": "2+2?", "say": "4"}\n')
    data = run_json(capsys, "data", "detect", str(odd), "--map", "instruction=ask", "--map", "output=say")
    assert data["format"] == "alpaca" and data["records"] == 1
    assert data["column_map"] == {"instruction": "ask", "output": "say"}


def test_data_commands_outside_a_workspace_use_the_default_workspace_and_say_so(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, "data", "ls", "--json")
    default = Path(os.environ["STUDIO_HOME"]) / "sample-workspace"
    assert code == 0 and "studio init" in err and f"default workspace {default}" in " ".join(err.split())
    assert "dolly" in {row["name"] for row in json.loads(out)}  # the workspace plain `studio` opens


def test_formats_listing_names_the_providing_plugin(capsys):
    rows = run_json(capsys, "data", "formats")
    assert {"name": "alpaca", "plugin": "alpaca"}.items() <= next(r for r in rows if r["name"] == "alpaca").items()


def test_console_script_runs_as_a_real_process(alpaca_file, tmp_path):
    env = {**os.environ, "STUDIO_HOME": str(tmp_path / "home")}
    proc = subprocess.run([sys.executable, "-m", "studio", "data", "detect", str(alpaca_file), "--json"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["format"] == "alpaca"
