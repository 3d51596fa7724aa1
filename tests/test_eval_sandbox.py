"""The HumanEval sandbox: model-written programs run in their own limited subprocesses, and what goes
wrong in one (a loop, a fork loop, a memory or file-size bomb, a network connection) stays there."""
from __future__ import annotations

import os
import socket
import subprocess

import pytest

from conftest import REALDATA

from studio.evaluation.base import EvalContext
from studio.evaluation.sandbox import ISOLATED, Limits, network_isolation, run_program, run_programs
from studio_eval_generative.humaneval import HumanEval, HumanEvalOptions

HUMANEVAL = REALDATA / "benchmarks" / "HumanEval.jsonl.gz"


def sandbox_processes() -> list[int]:
    """Processes still working in a sandbox folder (their folders are gone once a program is done).
    Zombies (ended, waiting for a parent to collect them) hold nothing and do not count."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if "studio-sandbox-" not in os.readlink(f"/proc/{entry.name}/cwd"):
                    continue
                stat = open(f"/proc/{entry.name}/stat").read()
            except OSError:
                continue
            if stat[stat.rfind(")") + 2:].split()[0] not in ("Z", "X"):
                found.append(int(entry.name))
    return found


def test_network_isolation_is_reported():
    status = network_isolation()
    assert status == ISOLATED or status.startswith("not isolated: ")


def test_programs_get_a_clean_room(monkeypatch):
    monkeypatch.setenv("STUDIO_SANDBOX_TEST_SECRET", "do-not-leak")
    outcome = run_program(
        "import os, sys, tempfile\n"
        "assert 'STUDIO_SANDBOX_TEST_SECRET' not in os.environ, 'the environment leaked'\n"
        "assert sys.stdin.read() == ''\n"
        "assert os.path.basename(os.getcwd()).startswith('studio-sandbox-')\n"
        "assert sys.flags.isolated == 1\n"
        "import resource\n"
        "assert resource.getrlimit(resource.RLIMIT_CORE) == (0, 0)\n"
        "assert resource.getrlimit(resource.RLIMIT_FSIZE)[0] == 16 << 20\n")
    assert outcome.status == "passed", outcome.stderr


def test_failures_say_why():
    assert run_program("assert 1 + 1 == 3, 'bad sum'").detail == "AssertionError: bad sum"
    assert run_program("import sys; sys.exit(4)").returncode == 4


def test_hazards_are_contained_and_the_evaluation_goes_on():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    hazards = {
        "loop": "while True:\n    pass\n",
        "fork loop": "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n",
        "memory bomb": "blocks = []\nwhile True:\n    blocks.append(bytearray(64 << 20))\n",
        "file-size bomb": "with open('big', 'wb') as fh:\n    while True:\n        fh.write(b'x' * (1 << 20))\n",
        "network": f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=3)\n",
        "fine": "assert sorted([3, 1, 2]) == [1, 2, 3]\n",
    }
    # One at a time: each hazard is dealt with before the next program starts.
    outcomes = dict(zip(hazards, run_programs(list(hazards.values()), Limits(timeout=4, cpu_seconds=3), workers=1)))
    listener.close()
    assert outcomes["fine"].passed, outcomes["fine"].stderr
    for name in ("loop", "fork loop"):
        assert outcomes[name].status == "timed out" or "killed by" in outcomes[name].detail, name
    assert "MemoryError" in outcomes["memory bomb"].detail or "killed by" in outcomes["memory bomb"].detail
    assert "File too large" in outcomes["file-size bomb"].detail or "SIGXFSZ" in outcomes["file-size bomb"].detail
    assert not outcomes["network"].passed
    if network_isolation() == ISOLATED:
        assert "unreachable" in outcomes["network"].detail.lower()
    # Nothing the fork loop started lives on, and this process can still start others.
    assert sandbox_processes() == []
    assert subprocess.run(["true"]).returncode == 0


def test_humaneval_canonical_solutions_all_pass_on_the_real_problems():
    if not HUMANEVAL.is_file():
        pytest.skip(f"{HUMANEVAL} is absent (real data lives in ../shared/realdata beside the project)")
    evaluator = HumanEval()
    config = HumanEvalOptions(path=str(HUMANEVAL), solutions="canonical")
    items = evaluator.load(config)
    assert len(items) == 164
    samples = evaluator.score(EvalContext(model=None, config=config, options={"allow_code_execution": True}), items)
    metrics = evaluator.aggregate(samples, config)
    assert metrics["pass@1"]["value"] == 1.0 and metrics["pass@1"]["n"] == 164
    assert {s["sandbox"]["network"] for s in samples} == {network_isolation()}


def test_a_wrong_solution_set_scores_zero_on_the_real_problems():
    if not HUMANEVAL.is_file():
        pytest.skip(f"{HUMANEVAL} is absent (real data lives in ../shared/realdata beside the project)")
    evaluator = HumanEval()
    config = HumanEvalOptions(path=str(HUMANEVAL), solutions="canonical")
    items = [dict(item, canonical_solution="    return None\n") for item in evaluator.load(config)]
    samples = evaluator.score(EvalContext(model=None, config=config, options={"allow_code_execution": True}), items)
    assert evaluator.aggregate(samples, config)["pass@1"]["value"] == 0.0
    assert all(s["results"][0]["status"] == "failed" for s in samples)
