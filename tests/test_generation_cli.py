"""`studio generate` and `studio providers` as a user runs them: real subprocesses, a real
loopback server, SIGKILL in the middle of a run and a resume that pays for nothing twice."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from studio.records import Record, Turn
from studio.serving.scripted import ScriptedServer, body_hash
from studio.store import Workspace

ROOT = Path(__file__).resolve().parents[1]


def _studio(*args: str, cwd: Path, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "studio", *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=300)
    if check and proc.returncode not in (0,):
        raise AssertionError(f"studio {' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def _workspace(tmp_path: Path, n: int) -> Workspace:
    ws = Workspace.init(tmp_path / "ws")
    ws.write_version("prompts", [Record([Turn("user", f"prompt number {i}: say something")]) for i in range(n)],
                     operation={"op": "test"})
    return ws


def _recipe(ws: Workspace, server: ScriptedServer, **extra) -> Path:
    import yaml

    body = {"generator": "responses", "seed_dataset": "prompts", "output": "answers",
            "provider": {"name": "local", "base_url": server.base_url, "model": "m", "concurrency": 4},
            "config": {"max_tokens": 32}, **extra}
    path = Path(ws.root) / "generate.yaml"
    path.write_text("# studio generate generate.yaml\n" + yaml.safe_dump(body))
    return path


def _journal_ok_hashes(ws: Workspace) -> set[str]:
    db = sqlite3.connect(str(Path(ws.root) / "generation" / "journal.sqlite"))
    try:
        rows = db.execute("SELECT request FROM answers WHERE status = 'ok'").fetchall()
    finally:
        db.close()
    return {body_hash(json.loads(r[0])) for r in rows}


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_never_repeats_an_answered_request(tmp_path):
    n = 120
    ws = _workspace(tmp_path, n)
    # The server answers 30 requests and holds the rest: the run is mid-way when it is killed,
    # however fast or slow this machine is.
    with ScriptedServer(latency=0.005, hold_after=30) as server:
        recipe = _recipe(ws, server)
        proc = subprocess.Popen([sys.executable, "-m", "studio", "generate", str(recipe), "--run-id", "run1"],
                                cwd=ws.root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while not (len(server.answered()) == 30 and server.held == 4):  # the client's 4 slots are all waiting
            assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read()
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
        server.release()  # the held requests are answered to a client that is gone
        answered_before = 30
        stored_before = _journal_ok_hashes(ws)
        assert stored_before and len(stored_before) <= answered_before
        status = json.loads(_studio("generate", "runs", "--json", cwd=ws.root).stdout)
        assert status[0]["run_id"] == "run1" and status[0]["status"] == "interrupted"

        out = _studio("generate", "resume", "run1", "--json", cwd=ws.root)
        summary = json.loads(out.stdout)
    assert summary["status"] == "completed" and summary["rows"] == n and summary["failed_rows"] == 0
    assert Workspace(ws.root).open("answers").num_rows == n
    after_kill = server.answered()[answered_before:]
    repeated = [e["hash"] for e in after_kill if e["hash"] in {x["hash"] for x in server.answered()[:answered_before]}]
    # Nothing the journal had stored was asked again; only requests in flight at the kill
    # (answered by the server, never received by the killed client) can be repeated.
    assert not set(repeated) & stored_before
    assert len(repeated) <= 4  # concurrency
    assert summary["meter"]["cached"] == len(stored_before)
    assert summary["meter"]["answered"] == n - len(stored_before)


def test_generate_cli_estimate_run_show_and_retry(tmp_path):
    ws = _workspace(tmp_path, 6)
    ws.write_version("prompts", [Record([Turn("user", f"p{i}")]) for i in range(5)] + [Record([Turn("user", "bad [[400]]")])],
                     operation={"op": "test"})
    with ScriptedServer() as server:
        recipe = _recipe(ws, server)
        est = _studio("generate", str(recipe), "--estimate", cwd=ws.root)
        assert "estimate: 6 requests" in est.stderr and "unpriced" in est.stderr
        assert server.log == []
        run = _studio("generate", str(recipe), "--run-id", "r1", cwd=ws.root)
        assert "rows made 5, failed rows 1" in run.stdout and "studio generate retry r1" in run.stdout
        shown = json.loads(_studio("generate", "show", "r1", "--json", cwd=ws.root).stdout)
        assert shown["status"] == "completed" and len(shown["failed"]) == 1
        assert "HTTP 400" in shown["failed"][0]["error"]
        rejects = _studio("data", "rejects", "answers", cwd=ws.root)
        assert "HTTP 400" in rejects.stdout
        before = len(server.log)
        _studio("generate", "retry", "r1", cwd=ws.root)
        assert len(server.log) == before + 1  # only the failed request went out again
        listed = json.loads(_studio("generate", "ls", "--json", cwd=ws.root).stdout)
        assert {"responses", "self_instruct", "evol_instruct", "magpie"} <= {g["name"] for g in listed}


def test_a_run_where_every_row_fails_exits_1_with_status_failed(tmp_path):
    ws = _workspace(tmp_path, 3)
    ws.write_version("prompts", [Record([Turn("user", f"refused {i} [[400]]")]) for i in range(3)],
                     operation={"op": "test"})
    with ScriptedServer() as server:
        run = _studio("generate", str(_recipe(ws, server)), "--run-id", "r1", cwd=ws.root, check=False)
    assert run.returncode == 1
    assert "failed: no rows made: all 3 failed" in run.stdout and "HTTP 400" in run.stdout
    assert "studio generate retry r1" in run.stdout
    shown = json.loads(_studio("generate", "show", "r1", "--json", cwd=ws.root).stdout)
    assert shown["status"] == "failed" and shown["rows"] == 0 and len(shown["failed"]) == 3


def test_overrides_and_recipe_errors(tmp_path):
    ws = _workspace(tmp_path, 2)
    with ScriptedServer() as server:
        recipe = _recipe(ws, server)
        bad = _studio("generate", str(recipe), "config.max_tokens=0", cwd=ws.root, check=False)
        assert bad.returncode == 1 and "config of responses: max_tokens" in bad.stderr
        unknown = _studio("generate", str(recipe), "generator=nope", cwd=ws.root, check=False)
        assert "unknown generator 'nope'" in unknown.stderr
        inline_key = _recipe(ws, server, provider={"base_url": server.base_url, "api_key": "sk-x"})
        refused = _studio("generate", str(inline_key), cwd=ws.root, check=False)
        assert refused.returncode == 1 and "api_key_env" in refused.stderr


def test_providers_add_list_test_and_budget_exit_code(tmp_path):
    ws = _workspace(tmp_path, 30)
    secret = "sk-provider-test-SECRET-42"
    env = {"MY_TEST_KEY": secret}
    with ScriptedServer(api_key=secret) as server:
        _studio("providers", "add", "local", "--base-url", server.base_url, "--model", "m", "--api-key-env",
                "MY_TEST_KEY", "--price-input", "1000", "--price-output", "1000", "--concurrency", "2",
                cwd=ws.root)
        listed = json.loads(_studio("providers", "ls", "--json", cwd=ws.root).stdout)
        assert {p["name"] for p in listed} == {"embedded", "local"}
        tested = _studio("providers", "test", "local", cwd=ws.root, env=env)
        assert "ok local" in tested.stdout
        recipe = _recipe(ws, server, provider="local")
        run = _studio("generate", str(recipe), "--budget", "0.3", "--json", cwd=ws.root, env=env, check=False)
        assert run.returncode == 4
        summary = json.loads(run.stdout)
        assert summary["status"] == "stopped" and "budget" in summary["reason"] and 0 < summary["rows"] < 30
    for path in Path(ws.root).rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
