"""The workspace store: immutable content-addressed versions, lineage, atomic writes, paging."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from studio.data.workflows import import_file
from studio.plugins import get_host
from studio.records import Record, Turn
from studio.store import StoreError, Workspace


def conv(i: int) -> Record:
    return Record([Turn("user", f"question {i}"), Turn("assistant", f"answer {i}")], meta={"n": i})


def pref(i: int) -> Record:
    return Record([Turn("user", f"pick {i}")], [Turn("assistant", "good")], [Turn("assistant", "bad")])


@pytest.fixture
def ws(tmp_path):
    return Workspace.init(tmp_path / "ws")


def test_init_and_find_from_a_subfolder(tmp_path):
    ws = Workspace.init(tmp_path / "w")
    sub = ws.root / "a" / "b"
    sub.mkdir(parents=True)
    assert Workspace.find(sub).root == ws.root
    assert Workspace.find(tmp_path) is None
    with pytest.raises(StoreError, match="not a studio workspace"):
        Workspace(tmp_path)


def test_versions_are_content_addressed_and_keep_lineage(ws):
    v1 = ws.write_version("d", [conv(i) for i in range(3)], {"name": "import"})
    v2 = ws.write_version("d", [conv(i) for i in range(2)], {"name": "filter"}, parent=v1.id)
    assert v1.id != v2.id
    assert ws.head("d").id == v2.id
    assert [v.id for v in ws.versions("d")] == [v1.id, v2.id]
    assert ws.version_info("d", v2.id[:6]).parent == v1.id
    # The same content again is the same immutable version, not a copy.
    again = ws.write_version("d", [conv(i) for i in range(3)], {"name": "import"})
    assert again.id == v1.id and again.operation == {"name": "import"}
    assert len(ws.versions("d")) == 2
    assert ws.open(f"d@{v1.id}").num_rows == 3


def test_page_record_and_round_trip_of_every_kind(ws):
    records = [conv(0), pref(1), Record([Turn("user", "q"), Turn("assistant", "a")], label=False),
               Record([Turn("system", "s"), Turn("user", "u"), Turn("tool_call", '{"name": "f"}'),
                       Turn("tool", "42"), Turn("assistant", "done", weight=1.0)], tools='[{"name": "f"}]')]
    ws.write_version("k", records, {"name": "test"})
    view = ws.open("k")
    assert view.page(0, 10) == records
    assert view.record(3).messages[2].role == "tool_call"
    assert [r.kind for r in view.records()] == ["conversation", "preference", "unpaired", "conversation"]
    with pytest.raises(IndexError):
        view.record(4)


def test_search_and_stats(ws):
    ws.write_version("s", [conv(i) for i in range(200)] + [pref(7)], {"name": "t"})
    view = ws.open("s")
    assert view.search("ANSWER 17") == [17, *range(170, 180)]
    assert view.search("answer 19", limit=3) == [19, 190, 191]
    assert view.search("answer 19", start=100) == list(range(190, 200))
    assert view.search("bad") == [200]  # found in the rejected side of the pair
    assert view.search("nothing like this") == []
    stats = view.stats()
    assert stats["records"] == 201
    assert stats["kinds"] == {"conversation": 200, "preference": 1}
    assert stats["roles"]["user"]["turns"] == 201
    assert stats["roles"]["chosen:assistant"]["turns"] == 1


def test_interrupted_write_keeps_previous_head(ws):
    v1 = ws.write_version("d", [conv(0)], {"name": "import"})

    def broken():
        yield conv(1)
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        ws.write_version("d", broken(), {"name": "import"})
    assert ws.head("d").id == v1.id
    assert [v.id for v in ws.versions("d")] == [v1.id]
    assert not list((ws.root / "data" / "d" / "versions").glob(".tmp-*"))


def test_kill_9_during_a_write_leaves_previous_version_intact(ws):
    v1 = ws.write_version("d", [conv(0)], {"name": "import"})
    script = textwrap.dedent(f"""
        import time
        from studio.store import Workspace
        from studio.records import Record, Turn
        def slow():
            for i in range(10**9):
                if i % 1000 == 0:
                    time.sleep(0.01)
                yield Record([Turn("user", "x" * 50), Turn("assistant", str(i))])
        Workspace({str(ws.root)!r}).write_version("d", slow(), {{"name": "import"}})
    """)
    proc = subprocess.Popen([sys.executable, "-c", script])
    versions = ws.root / "data" / "d" / "versions"
    deadline = time.time() + 60
    while not list(versions.glob(".tmp-*/data.arrow")) and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # let it write some batches
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert list(versions.glob(".tmp-*")), "the writer should have been killed mid-write"
    assert ws.head("d").id == v1.id
    assert ws.open("d").page(0, 5) == [conv(0)]
    assert ws.cleanup() == 1
    assert not list(versions.glob(".tmp-*"))


def test_import_with_bad_lines_keeps_good_rows_and_never_touches_the_source(ws, tmp_path):
    src = tmp_path / "mixed.jsonl"
    lines = [
        {"instruction": "a", "input": "", "output": "1"},
        "{broken json",
        {"instruction": "b", "output": 2},
        {"instruction": "c", "input": "", "output": "3"},
        {"output": "no instruction"},
        {"instruction": "d", "input": "", "output": "4"},
    ]
    src.write_bytes(b"".join((l if isinstance(l, str) else json.dumps(l)).encode() + b"\n" for l in lines)
                    + b'{"instruction": "\xff", "output": "x"}\n')
    before = hashlib.sha256(src.read_bytes()).hexdigest()
    mtime = src.stat().st_mtime_ns
    rejects_out = tmp_path / "rejects.jsonl"
    result = import_file(ws, src, get_host().formats(), name="mixed", rejects_out=rejects_out)
    assert result.version.num_records == 3
    assert [r.content for rec in ws.open("mixed").records() for r in rec.messages if r.role == "user"] == ["a", "c", "d"]
    found = {(r.line, r.field) for r in result.rejects}
    assert found == {(2, None), (3, "output"), (5, "instruction"), (7, None)}
    assert "UTF-8" in next(r.message for r in result.rejects if r.line == 7)
    assert hashlib.sha256(src.read_bytes()).hexdigest() == before and src.stat().st_mtime_ns == mtime
    side = [json.loads(l) for l in rejects_out.read_text().splitlines()]
    assert [r["line"] for r in side] == [2, 3, 5, 7]
    stored = ws.rejects_path("mixed").read_text().splitlines()
    assert len(stored) == 4
    info = ws.head("mixed")
    assert info.source["sha256"] == before and info.source["format"] == "alpaca" and info.rejects == 4


def test_dataset_names_are_validated(ws):
    with pytest.raises(StoreError, match="dataset name"):
        ws.write_version("../escape", [conv(0)], {"name": "x"})
    with pytest.raises(StoreError, match="no dataset named"):
        ws.open("missing")
