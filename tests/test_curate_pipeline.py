"""The curation pipeline: versions with lineage, side table, determinism, interruption,
overrides and splits — with small ops written here so the contract is tested on its own."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from pydantic import BaseModel

from studio.curation import op_base
from studio.curation.op_base import Change, CurationOp, OpContext, OpInput, OpResult, Removal
from studio.curation.pipeline import amend_curated, load_origin, load_side_table, run_pipeline
from studio.recipes import RecipeError, load_recipe
from studio.curation.text import row_text
from studio.records import Record, Turn
from studio.store import Workspace


class WordConfig(BaseModel):
    word: str = "spam"


class DropWord(CurationOp):
    name, title, summary, category = "drop_word", "Drop word", "drops rows containing a word", "filter"
    config_model = WordConfig

    def run(self, data, config, ctx):
        keep, removals = [], {}
        for i, row in enumerate(data.rows()):
            hit = config.word in row_text(row)
            keep.append(not hit)
            if hit:
                removals[i] = Removal("contains word", {"word": config.word})
        return OpResult(keep, removals)


class NoConfig(BaseModel):
    pass


class FirstWins(CurationOp):
    name, title, summary, category = "first_wins", "Exact dedup", "keeps the first of equal texts", "dedup"
    config_model = NoConfig

    def run(self, data, config, ctx):
        seen, keep, removals = {}, [], {}
        for i, row in enumerate(data.rows()):
            text = row_text(row)
            if text in seen:
                keep.append(False)
                removals[i] = Removal("duplicate", {}, duplicate_of=seen[text], similarity=1.0)
            else:
                seen[text] = i
                keep.append(True)
        return OpResult(keep, removals)


class Shout(CurationOp):
    name, title, summary, category = "shout", "Shout", "upper-cases answers containing 'loud'", "transform"
    config_model = NoConfig

    def run(self, data, config, ctx):
        changes = {}
        for i, row in enumerate(data.rows()):
            last = row["messages"][-1]
            if "loud" in row_text(row):
                new = json.loads(json.dumps(row))
                new["messages"][-1]["content"] = last["content"].upper()
                changes[i] = Change(new, "shouted", {"chars": len(last["content"])})
        return OpResult([True] * len(data), changes=changes)


class SplitConfig(BaseModel):
    every: int = 2


class EveryOther(CurationOp):
    name, title, summary, category = "every_other", "Split", "alternating split", "split"
    config_model = SplitConfig
    makes_splits = True

    def run(self, data, config, ctx):
        n = len(data)
        return OpResult([True] * n, outputs={"train": [i for i in range(n) if i % config.every],
                                             "test": [i for i in range(n) if not i % config.every]})


OPS = {op.name: op for op in (DropWord(), FirstWins(), Shout(), EveryOther())}


def rec(q: str, a: str) -> Record:
    return Record([Turn("user", q), Turn("assistant", a)])


ROWS = [rec("hello", "hi"), rec("buy spam", "no"), rec("hello", "hi"), rec("be loud", "okay then"),
        rec("more spam", "no"), rec("unique", "yes"), rec("hello", "hi")]


@pytest.fixture
def ws(tmp_path):
    ws = Workspace.init(tmp_path / "ws")
    ws.write_version("d", ROWS, {"name": "import"})
    return ws


def recipe(**extra):
    return load_recipe({"dataset": "d", "steps": [{"op": "drop_word"}, {"op": "first_wins"}, {"op": "shout"}], **extra})


def contents(ws, ref):
    return [[t.content for t in r.messages] for r in ws.open(ref).records()]


def test_run_writes_a_version_with_lineage_and_a_side_table(ws):
    base = ws.head("d")
    result = run_pipeline(ws, recipe(), OPS)
    v = result.version
    assert v.parent == base.id and v.operation["name"] == "curate" and v.operation["input"] == f"d@{base.id}"
    assert [s["op"] for s in v.operation["recipe"]["steps"]] == ["drop_word", "first_wins", "shout"]
    assert contents(ws, "d") == [["hello", "hi"], ["be loud", "OKAY THEN"], ["unique", "yes"]]
    assert [(s.rows_in, s.removed, s.changed, s.rows_out) for s in result.steps] == [(7, 2, 0, 5), (5, 2, 0, 3), (3, 0, 1, 3)]
    side = load_side_table(ws, "d").to_list()
    assert [(r["op"], r["action"], r["source_index"], r["duplicate_of"]) for r in side] == [
        ("drop_word", "removed", 1, None), ("drop_word", "removed", 4, None),
        ("first_wins", "removed", 2, 0), ("first_wins", "removed", 6, 0), ("shout", "changed", 3, None)]
    assert json.loads(side[0]["detail"]) == {"word": "spam"}
    assert side[4]["messages"][-1]["content"] == "okay then"  # the row before it changed
    assert load_origin(ws, "d").tolist() == [0, 3, 5]


def test_same_recipe_twice_gives_the_same_version(ws):
    first = run_pipeline(ws, recipe(), OPS).version
    ws.write_version("d", ROWS, {"name": "import"})  # back to the raw data as head
    second = run_pipeline(ws, recipe(), OPS).version
    assert first.id == second.id


def test_output_to_another_dataset_and_overrides_in_the_recipe(ws):
    r = load_recipe({"dataset": "d", "output": "clean", "steps": [{"op": "drop_word"}]}, ["steps.0.word=hello"])
    result = run_pipeline(ws, r, OPS)
    assert result.version.dataset == "clean" and result.steps[0].removed == 3
    assert ws.head("d").num_records == 7


def test_dry_run_and_preview_write_nothing(ws):
    before = [v.id for v in ws.versions("d")]
    dry = run_pipeline(ws, recipe(), OPS, dry_run=True)
    assert dry.version is None and dry.steps[1].removed == 2
    assert dry.steps[1].examples[0]["duplicate_row"]["messages"][0]["content"] == "hello"
    preview = run_pipeline(ws, recipe(), OPS, limit=3)
    assert preview.dry_run and preview.steps[0].rows_in == 3 and preview.steps[1].removed == 1
    assert [v.id for v in ws.versions("d")] == before
    assert not list((ws.root / "tmp").iterdir())


def test_a_failing_or_cancelled_run_leaves_the_previous_head(ws):
    head = ws.head("d").id

    class Boom(CurationOp):
        name, title, summary, category, config_model = "boom", "Boom", "raises", "filter", NoConfig

        def run(self, data, config, ctx):
            raise RuntimeError("op crashed")

    with pytest.raises(RuntimeError):
        run_pipeline(ws, load_recipe({"dataset": "d", "steps": [{"op": "drop_word"}, {"op": "boom"}]}),
                     {**OPS, "boom": Boom()})
    calls = iter([False, True])
    with pytest.raises(InterruptedError):
        run_pipeline(ws, recipe(), OPS, cancelled=lambda: next(calls, True))
    assert ws.head("d").id == head and len(ws.versions("d")) == 1
    assert not list((ws.root / "tmp").iterdir())


def test_kill_9_during_a_run_leaves_the_previous_head(ws):
    head = ws.head("d").id
    script = textwrap.dedent(f"""
        import time
        from pydantic import BaseModel
        from studio.curation.op_base import CurationOp, OpResult
        from studio.curation.pipeline import run_pipeline
        from studio.recipes import load_recipe
        from studio.store import Workspace
        class C(BaseModel):
            pass
        class Slow(CurationOp):
            name, title, summary, category, config_model = "slow", "s", "s", "filter", C
            def run(self, data, config, ctx):
                print("running", flush=True)
                time.sleep(60)
        ws = Workspace({str(ws.root)!r})
        run_pipeline(ws, load_recipe({{"dataset": "d", "steps": [{{"op": "slow"}}]}}), {{"slow": Slow()}})
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "running"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert ws.head("d").id == head and [v.id for v in ws.versions("d")] == [head]


def test_restore_and_drop_overrides_make_new_versions(ws):
    curated = run_pipeline(ws, recipe(), OPS).version
    side = load_side_table(ws, "d").to_list()
    dup_entry = next(i for i, r in enumerate(side) if r["source_index"] == 2)
    change_entry = next(i for i, r in enumerate(side) if r["action"] == "changed")
    restored = amend_curated(ws, f"d@{curated.id}", restore=[dup_entry, change_entry], note="keep these")
    assert restored.parent == curated.id and restored.operation["name"] == "override"
    # Back in input order; the changed row has its original content again.
    assert contents(ws, "d") == [["hello", "hi"], ["hello", "hi"], ["be loud", "okay then"], ["unique", "yes"]]
    assert load_origin(ws, "d").tolist() == [0, 2, 3, 5]
    assert len(load_side_table(ws, "d")) == 3
    dropped = amend_curated(ws, "d", drop=[3], note="off-topic")
    assert contents(ws, "d") == [["hello", "hi"], ["hello", "hi"], ["be loud", "okay then"]]
    last = load_side_table(ws, f"d@{dropped.id}").to_list()[-1]
    assert (last["op"], last["reason"], last["source_index"]) == ("review", "off-topic", 5)
    again = amend_curated(ws, "d", restore=[len(load_side_table(ws, "d")) - 1])
    assert contents(ws, f"d@{again.id}")[-1] == ["unique", "yes"]


def test_split_writes_one_dataset_per_output(ws):
    r = load_recipe({"dataset": "d", "output": "d", "steps": [{"op": "drop_word"}, {"op": "every_other"}]})
    result = run_pipeline(ws, r, OPS)
    assert set(result.outputs) == {"train", "test"}
    assert ws.head("d-train").num_records + ws.head("d-test").num_records == 5
    assert ws.head("d-train").parent == ws.head("d").id
    assert load_origin(ws, "d-train").tolist() == [2, 5]


@pytest.mark.parametrize("data,error", [
    ({"dataset": "d", "steps": [{"op": "nope"}]}, "step 0: unknown op 'nope'"),
    ({"dataset": "d", "steps": [{"op": "drop_word", "word": 3}]}, "step 0 (drop_word): invalid WordConfig: word"),
    ({"dataset": "d", "steps": [{"op": "every_other"}, {"op": "shout"}]}, "a split must be the last step"),
    ({"dataset": "d", "steps": []}, "steps"),
    ({"dataset": "d", "steps": [{"op": "shout"}], "extra": 1}, "extra"),
])
def test_recipe_errors_name_the_step_and_field(ws, data, error):
    from studio.curation.pipeline import resolve_steps

    with pytest.raises(RecipeError, match=error.replace("(", r"\(").replace(")", r"\)")):
        resolve_steps(load_recipe(data), OPS)


def test_recipe_yaml_and_bad_override(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("# studio curate r.yaml\ndataset: d\nsteps:\n  - op: drop_word\n    word: x\n")
    assert load_recipe(path, ["steps.0.word=y"]).steps[0].options() == {"word": "y"}
    with pytest.raises(RecipeError, match="no step 5"):
        load_recipe(path, ["steps.5.word=y"])
    path.write_text("dataset: [unclosed\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(path)


def test_map_rows_in_worker_processes_equals_in_process(ws, monkeypatch):
    ws.write_version("big", [rec(f"q{i}", f"a{i}") for i in range(2500)], {"name": "t"})
    data = OpInput(ws.version_dir("big") / "data.arrow")
    serial = OpContext(num_proc=1).map_rows(data, row_text, part="prompt")
    monkeypatch.setattr(op_base, "PARALLEL_MIN_ROWS", 100)
    monkeypatch.setattr(op_base, "CHUNK_ROWS", 700)
    events = []
    parallel = OpContext(num_proc=2, emit=events.append).map_rows(data, row_text, part="prompt")
    assert parallel == serial and serial[1234] == "q1234"
    assert events[-1]["done"] == 2500


def test_split_indices_are_mapped_through_rows_the_split_step_removed(ws):
    class SplitAndDrop(CurationOp):
        name, title, summary, category, config_model = "split_drop", "s", "s", "split", NoConfig
        makes_splits = True

        def run(self, data, config, ctx):
            n = len(data)
            keep = [i != 0 for i in range(n)]  # drops row 0, then splits the rest by input index
            return OpResult(keep, {0: Removal("first")}, outputs={"a": [0, 1, 2], "b": list(range(3, n))})

    result = run_pipeline(ws, load_recipe({"dataset": "d", "steps": [{"op": "split_drop"}]}), {"split_drop": SplitAndDrop()})
    assert load_origin(ws, "d-a").tolist() == [1, 2]
    assert load_origin(ws, "d-b").tolist() == [3, 4, 5, 6]
    assert result.outputs["b"].num_records == 4
