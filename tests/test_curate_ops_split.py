"""split, sample and mix (studio_curate_split): proportions, stratification per category,
determinism, no overlap, mix ratios and provenance."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from studio.curation.op_base import OpContext, OpInput
from studio.data.convert import read_file
from studio.plugins import get_host
from studio.records import Record, Turn
from studio.store import Workspace

from conftest import DATASETS, realdata_file

CATEGORIES = {"open_qa": 500, "brainstorming": 300, "classification": 150, "summarization": 40, "creative_writing": 10}


def op(name):
    return get_host().items("curation_op")[name]


def run(name: str, data: OpInput, ctx: OpContext | None = None, **config):
    return op(name).run(data, op(name).config_model(**config), ctx or OpContext())


def dolly_like() -> list[Record]:
    rows = []
    for category, count in CATEGORIES.items():
        for i in range(count):
            rows.append(Record([Turn("user", f"{category} question {i}"), Turn("assistant", f"answer {i}")],
                               meta={"category": category, "n": len(rows)}))
    # Interleave so that input order says nothing about the category.
    return [rows[i] for i in sorted(range(len(rows)), key=lambda i: (i * 7919) % len(rows))]


@pytest.fixture
def ws(tmp_path):
    return Workspace.init(tmp_path / "ws")


def store(ws: Workspace, name: str, records: list[Record]) -> OpInput:
    info = ws.write_version(name, records, {"name": "t"})
    return OpInput(ws.root / "data" / name / "versions" / info.id / "data.arrow")


def categories_of(data: OpInput) -> list[str]:
    return [json.loads(m)["category"] for m in data.column("meta")]


# --- split -------------------------------------------------------------------------------------


def test_split_fractions_cover_every_row_once(ws):
    data = store(ws, "d", dolly_like())
    result = run("split", data, sizes={"train": 0.8, "validation": 0.1, "test": 0.1}, seed=1)
    sizes = {k: len(v) for k, v in result.outputs.items()}
    assert sizes == {"train": 800, "validation": 100, "test": 100}
    everything = [i for part in result.outputs.values() for i in part]
    assert sorted(everything) == list(range(1000))  # no overlap, nothing lost
    assert all(part == sorted(part) for part in result.outputs.values())  # input order kept
    assert all(result.keep) and not result.removals
    # Shuffled, not a contiguous block of the input.
    assert result.outputs["test"] != list(range(900, 1000)) and max(result.outputs["test"]) > 500


def test_split_is_deterministic_and_seed_dependent(ws):
    data = store(ws, "d", dolly_like())
    a = run("split", data, seed=7).outputs
    b = run("split", data, seed=7).outputs
    c = run("split", data, seed=8).outputs
    assert a == b and a != c
    # No seed in the config: the pipeline's seed decides.
    assert run("split", data, OpContext(seed=7)).outputs == a


def test_split_stratified_by_dolly_category(ws):
    data = store(ws, "d", dolly_like())
    cats = categories_of(data)
    result = run("split", data, sizes={"train": 0.7, "validation": 0.2, "test": 0.1}, stratify_by="category", seed=3)
    for name, fraction in (("train", 0.7), ("validation", 0.2), ("test", 0.1)):
        got = Counter(cats[i] for i in result.outputs[name])
        for category, total in CATEGORIES.items():
            assert abs(got[category] - total * fraction) <= 1, (name, category, got[category], total * fraction)
    assert result.report["strata"]["test"]["creative_writing"] == 1
    # Without stratification, the rare category's share in a small split drifts more.
    plain = [run("split", data, sizes={"train": 0.9, "test": 0.1}, seed=s).outputs["test"] for s in range(20)]
    strat = [run("split", data, sizes={"train": 0.9, "test": 0.1}, seed=s, stratify_by="meta.category").outputs["test"]
             for s in range(20)]
    spread = lambda parts: max(abs(Counter(cats[i] for i in p)["summarization"] - 4) for p in parts)  # noqa: E731
    assert spread(strat) <= 1 < spread(plain)


def test_split_counts_kind_and_unassigned_rows(ws):
    records = dolly_like()[:90] + [Record([Turn("user", "q")], [Turn("assistant", "a")], [Turn("assistant", "b")])
                                   for _ in range(10)]
    data = store(ws, "d", records)
    result = run("split", data, sizes={"test": 20, "validation": 0.1}, stratify_by="kind", seed=0)
    assert {k: len(v) for k, v in result.outputs.items()} == {"test": 20, "validation": 10}
    kinds = data.column("kind")
    assert Counter(kinds[i] for i in result.outputs["test"]) == {"conversation": 18, "preference": 2}
    # Unassigned rows are in no output; keep stays all-true so output indices stay input positions.
    assert result.report["unassigned"] == 70 and all(result.keep) and not result.removals
    with pytest.raises(ValueError, match="only 100"):
        run("split", data, sizes={"a": 80, "b": 30})
    with pytest.raises(ValueError):
        op("split").config_model(sizes={"a": 0.7, "b": 0.5})


def test_split_real_alpaca_file(ws):
    records = read_file(realdata_file("alpaca/llamafactory_alpaca_en_demo.json"), get_host().formats()).records
    data = store(ws, "alpaca", records)
    result = run("split", data, sizes={"train": 0.95, "test": 0.05}, seed=42)
    assert {k: len(v) for k, v in result.outputs.items()} == {"train": 949, "test": 50}
    assert not set(result.outputs["train"]) & set(result.outputs["test"])


# --- sample ------------------------------------------------------------------------------------


def test_sample_n_fraction_and_stratified(ws):
    data = store(ws, "d", dolly_like())
    cats = categories_of(data)
    result = run("sample", data, n=100, seed=5)
    assert sum(result.keep) == 100 and len(result.removals) == 900
    assert {r.reason for r in result.removals.values()} == {"not sampled"}
    assert run("sample", data, n=100, seed=5).keep == result.keep
    assert run("sample", data, n=100, seed=6).keep != result.keep
    assert sum(run("sample", data, fraction=0.25, seed=1).keep) == 250
    strat = run("sample", data, n=200, stratify_by="category", seed=9)
    kept = Counter(cats[i] for i, k in enumerate(strat.keep) if k)
    assert kept == {"open_qa": 100, "brainstorming": 60, "classification": 30, "summarization": 8, "creative_writing": 2}
    assert sum(run("sample", data, n=5000).keep) == 1000
    with pytest.raises(ValueError, match="not both"):
        op("sample").config_model(n=3, fraction=0.5)


def test_sample_on_project_dolly_sample_by_category(ws):
    records = read_file(DATASETS / "dolly.jsonl", get_host().formats()).records
    data = store(ws, "dolly", records)
    result = run("sample", data, fraction=0.5, stratify_by="category", seed=0)
    cats = categories_of(data)
    everything, kept = Counter(cats), Counter(c for c, k in zip(cats, result.keep) if k)
    for category, total in everything.items():
        assert abs(kept[category] - total / 2) <= 1


# --- mix ---------------------------------------------------------------------------------------


def labelled(prefix: str, n: int) -> list[Record]:
    return [Record([Turn("user", f"{prefix} {i}"), Turn("assistant", "a")], meta={"src": prefix}) for i in range(n)]


def test_mix_by_weight_keeps_current_rows_and_records_provenance(ws):
    current = store(ws, "main", labelled("main", 700))
    other = ws.write_version("code", labelled("code", 1000), {"name": "t"})
    result = run("mix", current, OpContext(workspace=ws), sources=[{"dataset": f"code@{other.id}", "weight": 0.3}],
                 seed=1)
    assert all(result.keep)
    assert len(result.added) == 300 and len(result.added_from) == 300
    assert {a["dataset"] for a in result.added_from} == {"code"} and {a["version"] for a in result.added_from} == {other.id}
    indices = [a["index"] for a in result.added_from]
    assert len(set(indices)) == 300  # without replacement
    view = ws.open(f"code@{other.id}")
    for row, origin in zip(result.added[:20], result.added_from[:20]):
        assert Record.from_row(row) == view.record(origin["index"])
    shares = {s["dataset"]: s["share"] for s in result.report["sources"]}
    assert shares == {"(current)": 0.7, f"code@{other.id}": 0.3}
    again = run("mix", current, OpContext(workspace=ws), sources=[{"dataset": "code", "weight": 0.3}], seed=1)
    assert again.added_from == result.added_from  # deterministic
    assert run("mix", current, OpContext(workspace=ws), sources=[{"dataset": "code", "weight": 0.3}],
               seed=2).added_from != result.added_from


def test_mix_total_counts_subsampling_and_shortfall(ws):
    current = store(ws, "main", labelled("main", 500))
    ws.write_version("a", labelled("a", 400), {"name": "t"})
    ws.write_version("b", labelled("b", 50), {"name": "t"})
    ctx = OpContext(workspace=ws, seed=3)
    result = run("mix", current, ctx, sources=[{"dataset": "a", "weight": 0.5}, {"dataset": "b", "count": 20}],
                 current_weight=0.5, total=420)
    # 20 fixed rows from b, the other 400 split 50/50 between the current rows and a.
    assert sum(result.keep) == 200 and len(result.removals) == 300
    assert Counter(a["dataset"] for a in result.added_from) == {"a": 200, "b": 20}
    assert {r.reason for r in result.removals.values()} == {"not selected by mix"}
    # b has only 50 rows: asking for 80 without replacement takes all 50 and reports the shortfall.
    short = run("mix", current, ctx, sources=[{"dataset": "b", "count": 80}])
    assert all(short.keep) and len(short.added) == 50
    assert short.report["sources"][1]["shortfall"] == 30
    upsampled = run("mix", current, ctx, sources=[{"dataset": "b", "count": 80}], replace=True)
    assert len(upsampled.added) == 80 and len({a["index"] for a in upsampled.added_from}) == 50
    with pytest.raises(ValueError, match="current rows need a share"):
        run("mix", current, ctx, sources=[{"dataset": "a", "weight": 0.6}, {"dataset": "b", "weight": 0.4}])


def test_mix_exact_ratio_without_current_rows(ws):
    current = store(ws, "main", labelled("main", 100))
    ws.write_version("a", labelled("a", 300), {"name": "t"})
    ws.write_version("b", labelled("b", 1000), {"name": "t"})
    result = run("mix", current, OpContext(workspace=ws), current_weight=0,
                 sources=[{"dataset": "a", "weight": 0.25}, {"dataset": "b", "weight": 0.75}])
    # The largest 1:3 mix that a (300 rows) can supply: 300 + 900.
    assert not any(result.keep)
    assert Counter(a["dataset"] for a in result.added_from) == {"a": 300, "b": 900}


def test_mix_needs_a_workspace_and_sources(ws):
    current = store(ws, "main", labelled("main", 5))
    with pytest.raises(ValueError, match="workspace"):
        run("mix", current, sources=[{"dataset": "x", "weight": 0.5}])
    with pytest.raises(ValueError, match="at least one source"):
        run("mix", current, OpContext(workspace=ws))
    with pytest.raises(ValueError):
        op("mix").config_model(sources=[{"dataset": "x", "weight": 0.5, "count": 3}])


def test_split_ops_registered_with_documented_configs():
    for name, category in (("split", "split"), ("sample", "split"), ("mix", "mix")):
        item = op(name)
        assert item.category == category
        for field_name, info in item.config_model.model_fields.items():
            assert info.description, f"{name}.{field_name}"
        item.config_model()
