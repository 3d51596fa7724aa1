"""The Ray curation benchmark's pieces that need no Ray: the planted records (what each kind is, and
that the local engine's steps remove exactly the planted exact copies, refusals and short answers),
and the process bookkeeping that stops a cluster by process id, never touching anything else."""
from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import bench_curate_ray  # noqa: E402
from bench_dedup import jaccard  # noqa: E402


def test_planted_rows_have_the_kinds_and_shares_asked_for():
    rows = list(bench_curate_ray.planted_rows(3000, seed=3))
    counts = Counter(r.kind for r in rows)
    assert len(rows) == 3000
    for kind, share in bench_curate_ray.PLANTED.items():
        assert abs(counts[kind] / 3000 - share) < 0.02, (kind, counts)
    from studio.curation.text import normalise

    for row in rows:
        source = rows[row.source] if row.source >= 0 else None
        if row.kind == "exact":
            assert source.kind == "base" and row.question != source.question
            assert normalise(row.question + "\n" + row.answer) == normalise(source.question + "\n" + source.answer)
        elif row.kind == "near":
            assert source.kind == "base"
            assert normalise(row.question + "\n" + row.answer) != normalise(source.question + "\n" + source.answer)
            assert jaccard(row.question + "\n" + row.answer, source.question + "\n" + source.answer) >= 0.8
        elif row.kind == "short":
            assert len(row.answer.split()) < 3
        elif row.kind == "base":
            assert len(row.answer.split()) >= 30
    again = list(bench_curate_ray.planted_rows(300, seed=3))
    assert [(r.kind, r.answer) for r in again] == [(r.kind, r.answer) for r in rows[:300]]


def test_local_steps_remove_exactly_the_planted_rows(tmp_path):
    from studio.curation.pipeline import run_pipeline
    from studio.plugins import get_host
    from studio.recipes import load_recipe
    from studio.store import Workspace

    ws = Workspace.init(tmp_path / "ws")
    info, planted = bench_curate_ray.import_records(ws, 1000)
    assert info.num_records == 1000 and sum(planted.values()) == 1000
    recipe = bench_curate_ray.recipe_for("clean")
    recipe["steps"] = [s for s in recipe["steps"] if s["op"] != "minhash_dedup"]
    result = run_pipeline(ws, load_recipe({**recipe, "num_proc": 1}, kind="curate"),
                          get_host().items("curation_op"), dry_run=True)
    removed = {s.op: s.removed for s in result.steps}
    assert removed == {op: planted[kind] for op, kind in bench_curate_ray.EXPECTED.items() if op in removed}
    assert all(removed.values())


def test_tagged_processes_and_their_children_are_stopped_and_nothing_else():
    prefix = f"t{uuid.uuid4().hex[:8]}"
    # A tagged parent whose child runs with an empty environment (as a renamed Ray worker may
    # show), and an untagged process that must survive.
    parent = subprocess.Popen(["sh", "-c", "env -i sleep 60 & sleep 60"],
                              env={**os.environ, bench_curate_ray.TAG: f"{prefix}-head"})
    bystander = subprocess.Popen(["sleep", "60"], env={**os.environ, bench_curate_ray.TAG: "someone-else"})
    try:
        processes = bench_curate_ray.TaggedProcesses(prefix)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            groups = processes.groups()
            if len(groups.get(f"{prefix}-head", [])) >= 2:
                break
            time.sleep(0.1)
        assert set(groups) == {f"{prefix}-head"}
        assert parent.pid in {p.pid for p in groups[f"{prefix}-head"]}
        assert processes.stop(timeout=5) >= 2
        assert parent.wait(timeout=5) is not None
        assert processes.groups() == {}
        assert bystander.poll() is None
    finally:
        for proc in (parent, bystander):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
