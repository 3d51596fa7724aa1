"""Review by hand (studio.curation.review) and ``studio review``: journaled edits, resume after a
kill, undo, commit into a new version with a restorable side table, flags, and a million-row
commit that streams."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from studio.curation.pipeline import amend_curated, load_origin, load_side_table
from studio.curation.review import (
    FLAGS_FILE, ReviewError, ReviewSession, journal_path, pending_reviews, read_flags, record_from_json,
    record_to_json,
)
from studio.records import Record, Turn
from studio.store import Workspace

ROOT = Path(__file__).resolve().parents[1]


def pair(i: int) -> Record:
    return Record([Turn("user", f"prompt {i}")], chosen=[Turn("assistant", f"good {i}")],
                  rejected=[Turn("assistant", f"bad {i}")], meta={"id": i})


def chat(i: int) -> Record:
    return Record([Turn("user", f"question {i}"), Turn("assistant", f"answer {i}")])


@pytest.fixture
def ws(tmp_path) -> Workspace:
    ws = Workspace.init(tmp_path / "ws")
    ws.write_version("pairs", [pair(i) for i in range(6)], operation={"name": "import"})
    ws.write_version("chat", [chat(i) for i in range(5)], operation={"name": "import"})
    return ws


def chosen_texts(ws: Workspace, ref: str) -> list[str]:
    return [r.chosen[0].content for r in ws.open(ref).page(0, 1000)]


# --- record JSON --------------------------------------------------------------------------------


def test_record_json_round_trips_and_is_validated():
    record = Record([Turn("system", "Be brief."), Turn("user", "hi"), Turn("assistant", "hello", weight=0.0)],
                    tools=json.dumps([{"name": "f"}]), meta={"source": "x"})
    assert record_from_json(record_to_json(record)) == record
    assert record_from_json(record_to_json(pair(1))) == pair(1)
    for bad, message in [
        ({"messages": [{"role": "robot", "content": "x"}]}, "is not one of"),
        ({"messages": [{"role": "user", "content": 3}]}, "expected a string"),
        ({"messages": [{"role": "user", "content": "x"}], "chosen": []}, "needs both chosen and rejected"),
        ({"messages": [{"role": "user", "content": "x"}], "label": "yes"}, "label"),
        ({"messages": [{"role": "user", "content": "x"}], "colour": "red"}, "unknown key(s) colour"),
        ({"messages": []}, "at least one turn"),
        ([], "JSON object"),
    ]:
        with pytest.raises(ReviewError, match=message.replace("(", r"\(").replace(")", r"\)")):
            record_from_json(bad)


# --- the session ----------------------------------------------------------------------------------


def test_every_action_then_commit_gives_the_expected_records(ws):
    parent = ws.head("pairs")
    session = ReviewSession(ws, "pairs")
    session.flag(0, "check the tone")
    session.swap(1)
    session.reject(2, "both answers wrong")
    session.accept(3)
    session.delete(4, note="duplicate of 3")
    edited = record_to_json(pair(5))
    edited["chosen"][0]["content"] = "much better 5"
    session.edit(5, edited)
    assert session.counts() == {"flagged": 1, "unflagged": 0, "edited": 1, "swapped": 1, "deleted": 1,
                                "accepted": 1, "rejected": 1}
    assert session.effective(1).chosen[0].content == "bad 1"  # what the commit will write
    result = session.commit("first pass")
    info = result.version
    assert result.new_version and info.parent == parent.id and info.num_records == 4
    assert info.operation["name"] == "review" and info.operation["note"] == "first pass"
    assert info.operation["counts"]["deleted"] == 1 and info.operation["removed"] == 2
    rows = ws.open("pairs").page(0, 10)
    assert [r.meta["id"] for r in rows] == [0, 1, 3, 5]
    assert [r.chosen[0].content for r in rows] == ["good 0", "bad 1", "good 3", "much better 5"]
    assert rows[1].rejected[0].content == "good 1"
    # Removed and changed rows are in the side table as they were, with reasons.
    side = load_side_table(ws, "pairs").to_list()
    assert [(s["action"], s["reason"], s["source_index"], s["op"]) for s in side] == [
        ("changed", "swapped in review", 1, "review"),
        ("removed", "rejected in review", 2, "review"),
        ("removed", "deleted in review", 4, "review"),
        ("changed", "edited in review", 5, "review"),
    ]
    assert json.loads(side[1]["detail"])["note"] == "both answers wrong"
    assert side[3]["chosen"][0]["content"] == "good 5"  # the row before the edit
    assert load_origin(ws, "pairs").tolist() == [0, 1, 3, 5]
    flags = read_flags(ws, "pairs")
    assert flags["flags"] == [{"index": 0, "source_index": 0, "note": "check the tone"}]
    assert flags["accepted"] == [2]  # record 3 is the third row of the new version
    # The journal is gone (committed) and kept inside the new version.
    assert not journal_path(ws, "pairs", parent.id).exists()
    assert (ws.version_dir("pairs") / "review-journal.jsonl").is_file()
    assert pending_reviews(ws, "pairs") == []


def test_review_removals_are_restored_with_amend_curated(ws):
    session = ReviewSession(ws, "pairs")
    session.delete(1)
    session.reject(3)
    edited = record_to_json(pair(4))
    edited["chosen"][0]["content"] = "edited"
    session.edit(4, edited)
    session.commit()
    assert [r.meta["id"] for r in ws.open("pairs").page(0, 10)] == [0, 2, 4, 5]
    side = load_side_table(ws, "pairs").to_list()
    restore = [i for i, s in enumerate(side) if s["source_index"] in (1, 4)]
    amend_curated(ws, "pairs", restore=restore, note="keep 1, undo the edit")
    assert chosen_texts(ws, "pairs") == ["good 0", "good 1", "good 2", "good 4", "good 5"]


def test_an_earlier_curation_side_table_carries_over_and_stays_restorable(ws):
    amend_curated(ws, "chat", drop=[0], note="dropped by a curator")  # a version with a side table
    session = ReviewSession(ws, "chat")
    assert session.effective(0).messages[0].content == "question 1"
    session.delete(1)  # "question 2", source index 2
    session.commit()
    assert [r.messages[0].content for r in ws.open("chat").page(0, 10)] == ["question 1", "question 3", "question 4"]
    side = load_side_table(ws, "chat").to_list()
    assert [s["source_index"] for s in side] == [0, 2]
    amend_curated(ws, "chat", restore=[0, 1])
    assert [r.messages[0].content for r in ws.open("chat").page(0, 10)] == [f"question {i}" for i in range(5)]


def test_undo_and_toggles(ws):
    session = ReviewSession(ws, "pairs")
    session.swap(0)
    session.swap(0)  # swapping back leaves nothing pending
    assert session.pending == 0
    session.flag([1, 2], "look")
    session.delete(3)
    assert session.undo() == [3]
    assert session.pending == 2 and not session.state(3).deleted
    assert session.undo() == [1, 2]  # one action, one undo, however many records it named
    assert session.pending == 0
    assert session.undo() == [0]
    assert session.state(0).swapped
    session.revert(0)
    assert session.pending == 0


def test_resume_after_the_process_is_killed(ws):
    """A review process killed mid-way (SIGKILL) loses none of its journaled edits; a torn last
    line is ignored and the next edit appends cleanly."""
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(ROOT)!r})
        from studio.store import Workspace
        from studio.curation.review import ReviewSession
        s = ReviewSession(Workspace({str(ws.root)!r}), "pairs")
        s.flag(0, "odd")
        s.delete(2)
        s.swap(3)
        s.undo()
        s.reject(5)
        with open(s.path, "a", encoding="utf-8") as fh:
            fh.write('{{"op": "delete", "indi')  # a write cut short by the kill
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr
    session = ReviewSession(ws, "pairs")
    assert session.pending == 3
    assert session.is_flagged(0) and session.flag_note(0) == "odd"
    assert session.state(2).deleted and session.state(5).verdict == "rejected"
    assert not session.state(3).swapped  # the undo was journaled too
    session.accept(1)  # appends after the torn line is cut off
    lines = session.path.read_text(encoding="utf-8").splitlines()
    assert all(json.loads(line) for line in lines)
    assert ReviewSession(ws, "pairs").counts()["accepted"] == 1
    assert ReviewSession(ws, "pairs").undo() == [1]  # the undo history survives too


def test_two_sessions_on_one_version_see_each_other(ws):
    tui, cli = ReviewSession(ws, "pairs"), ReviewSession(ws, "pairs")
    tui.flag(0)
    cli.delete(1)
    assert tui.pending == 2 and cli.pending == 2
    tui.discard()
    assert cli.pending == 0


def test_flags_carry_over_and_a_flags_only_commit_keeps_the_version(ws):
    session = ReviewSession(ws, "chat")
    session.flag(2, "unsure")
    session.delete(0)
    session.commit()
    head = ws.head("chat")
    session = ReviewSession(ws, "chat")
    assert session.is_flagged(1) and session.flag_note(1) == "unsure"  # record 2 is now record 1
    assert session.pending == 0
    session.unflag(1)
    session.flag(3, "too short")
    result = session.commit()
    assert not result.new_version and result.version.id == head.id
    assert ws.head("chat").id == head.id and len(ws.versions("chat")) == 2
    flags = json.loads((ws.version_dir("chat") / FLAGS_FILE).read_text(encoding="utf-8"))
    assert flags["flags"] == [{"index": 3, "source_index": 4, "note": "too short"}]


def test_errors_are_clear(ws):
    session = ReviewSession(ws, "chat")
    with pytest.raises(ReviewError, match="outside 0..4"):
        session.flag(5)
    with pytest.raises(ReviewError, match="is a conversation; swap applies to preference pairs"):
        session.swap(0)
    with pytest.raises(ReviewError, match="unknown key"):
        session.edit(0, {"messages": [{"role": "user", "content": "x"}], "oops": 1})
    with pytest.raises(ReviewError, match="nothing to commit"):
        session.commit()
    assert not session.path.exists()  # nothing was journaled
    session.flag(0)
    session.commit()
    with pytest.raises(ReviewError, match="committed or discarded"):
        session.flag(1)


# --- the CLI ------------------------------------------------------------------------------------


def run_cli(capsys, ws: Workspace, *argv: str) -> tuple[int, str, str]:
    from studio import cli

    code = cli.main(["--workspace", str(ws.root), *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_review_flow(ws, capsys, tmp_path):
    code, out, _ = run_cli(capsys, ws, "review", "flag", "pairs", "0", "3", "--note", "odd tone")
    assert code == 0 and "2 pending" in out
    run_cli(capsys, ws, "review", "swap", "pairs", "1")
    run_cli(capsys, ws, "review", "reject", "pairs", "2", "--note", "both bad")
    record = record_to_json(pair(4))
    record["chosen"][0]["content"] = "rewritten"
    path = tmp_path / "rec.json"
    path.write_text(json.dumps(record), encoding="utf-8")
    code, out, _ = run_cli(capsys, ws, "review", "edit", "pairs", "4", "--file", str(path))
    assert code == 0 and "edited record 4" in out
    code, out, _ = run_cli(capsys, ws, "review", "show", "pairs", "--json")
    shown = json.loads(out)
    assert shown["pending"] == 5 and shown["counts"]["flagged"] == 2 and shown["counts"]["rejected"] == 1
    assert [r["index"] for r in shown["records_reviewed"]] == [0, 1, 2, 3, 4]
    code, out, _ = run_cli(capsys, ws, "review", "show", "pairs")
    assert "#0: flagged (odd tone)" in out and "#2: rejected, note: both bad" in out and "#4: edited" in out
    code, out, _ = run_cli(capsys, ws, "review", "commit", "pairs", "--note", "cli pass", "--json")
    committed = json.loads(out)
    assert committed["records"] == 5 and committed["new_version"] and committed["flags"] == 2
    assert chosen_texts(ws, "pairs") == ["good 0", "bad 1", "good 3", "rewritten", "good 5"]
    # Committed flags are listed by show.
    code, out, _ = run_cli(capsys, ws, "review", "show", "pairs")
    assert "#0: flagged (odd tone) [committed]" in out and "#2: flagged (odd tone) [committed]" in out


def test_cli_errors_and_discard(ws, capsys, tmp_path):
    code, _, err = run_cli(capsys, ws, "review", "accept", "chat", "0")
    assert code == 1 and "accept applies to preference pairs" in err
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    code, _, err = run_cli(capsys, ws, "review", "edit", "chat", "0", "--file", str(bad))
    assert code == 1 and "not valid JSON" in err
    code, _, err = run_cli(capsys, ws, "review", "delete", "chat", "99")
    assert code == 1 and "outside 0..4" in err
    run_cli(capsys, ws, "review", "delete", "chat", "1", "2")
    code, out, _ = run_cli(capsys, ws, "review", "discard", "chat")
    assert code == 0 and "discarded 2" in out
    code, _, err = run_cli(capsys, ws, "review", "commit", "chat")
    assert code == 1 and "nothing to commit" in err


# --- a million rows -----------------------------------------------------------------------------


def million_table(n: int):
    """1M conversations built in Arrow directly (building Records would take longer than the test)."""
    import numpy as np
    import pyarrow as pa

    from studio.records import arrow_schema

    schema = arrow_schema()
    turn_type = schema.field("messages").type.value_type
    roles = pa.array(np.tile(np.array(["user", "assistant"], dtype=object), n), pa.string())
    contents = pa.array([f"{'question' if j % 2 == 0 else 'answer'} {j // 2}" for j in range(2 * n)], pa.string())
    turns = pa.StructArray.from_arrays([roles, contents, pa.nulls(2 * n, pa.float64())], fields=list(turn_type))
    messages = pa.ListArray.from_arrays(pa.array(np.arange(0, 2 * n + 1, 2, dtype=np.int32)), turns)
    return pa.table({"kind": pa.array(["conversation"] * n), "messages": messages,
                     "chosen": pa.nulls(n, schema.field("chosen").type),
                     "rejected": pa.nulls(n, schema.field("rejected").type),
                     "label": pa.nulls(n, pa.bool_()), "tools": pa.nulls(n, pa.string()),
                     "meta": pa.nulls(n, pa.string())}, schema=schema)


@pytest.mark.slow
def test_million_row_commit_streams_in_batches(tmp_path):
    """The commit of a 1M-row review runs in a fresh process whose peak memory is measured: rows
    as Python objects all at once would need well over a gigabyte; batches need a few MB."""
    n = 1_000_000
    ws = Workspace.init(tmp_path / "big")
    ws.write_version("big", million_table(n), operation={"name": "synthetic"})
    session = ReviewSession(ws, "big")
    session.delete([0, 500_000, n - 1])
    session.flag(123_456, "look")
    session.edit(999_000, {"messages": [{"role": "user", "content": "edited question"},
                                        {"role": "assistant", "content": "edited answer"}]})
    assert len(session.states) == 5  # sparse: only what was touched
    script = textwrap.dedent(f"""
        import json, resource, sys
        sys.path.insert(0, {str(ROOT)!r})
        from studio.store import Workspace
        from studio.curation.review import ReviewSession
        session = ReviewSession(Workspace({str(ws.root)!r}), "big")  # resumes from the journal
        session.view.record(0)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        result = session.commit("big review")
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(json.dumps({{"grew_kib": after - before, "records": result.version.num_records}}))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["records"] == n - 3
    assert report["grew_kib"] < 300 * 1024, f"peak memory grew by {report['grew_kib'] / 1024:.0f} MiB"
    view = ws.open("big")
    assert view.record(0).messages[0].content == "question 1"
    assert view.record(499_998).messages[0].content == "question 499999"
    assert view.record(499_999).messages[0].content == "question 500001"
    assert view.record(998_998).messages[0].content == "edited question"
    assert view.record(n - 4).messages[0].content == "question 999998"
    assert read_flags(ws, "big")["flags"] == [{"index": 123_455, "source_index": 123_456, "note": "look"}]
    assert len(load_side_table(ws, "big")) == 4
