"""The distributed path: row-local ops as Arrow batch functions, run shard by shard in separate
processes the way an engine's workers would, give what the single-machine pipeline gives."""
from __future__ import annotations

import pickle
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import pyarrow as pa
import pytest

from conftest import DATASETS
from studio.curation.distributed import batch_function, exact_keys
from studio.curation.pipeline import run_pipeline
from studio.recipes import load_recipe
from studio.data.workflows import import_file
from studio.plugins import get_host
from studio.store import Workspace

STEPS = [("response_filter", {}), ("refusal_filter", {}), ("pii_redact", {})]


def _run_shard(shard: bytes) -> bytes:
    table = pickle.loads(shard)
    for name, config in STEPS:
        table = batch_function(name, config)(table)
    return pickle.dumps(table)


def test_sharded_batch_functions_match_the_pipeline(tmp_path):
    ws = Workspace.init(tmp_path / "ws")
    host = get_host()
    import_file(ws, DATASETS / "dolly_noisy.jsonl", host.formats(), name="noisy")
    recipe = load_recipe({"dataset": "noisy", "output": "clean", "steps": [{"op": n, **c} for n, c in STEPS]})
    expected = ws.open(f"clean@{run_pipeline(ws, recipe, host.items('curation_op')).version.id}")._table
    source = ws.open("noisy")._table
    shards = [source.slice(lo, 7) for lo in range(0, source.num_rows, 7)]
    # Functions travel to workers by pickle, as Ray or Spark would ship them.
    pickle.dumps(batch_function("refusal_filter", {}))
    with ProcessPoolExecutor(2, mp_context=get_context("spawn")) as pool:
        parts = [pickle.loads(b) for b in pool.map(_run_shard, [pickle.dumps(s) for s in shards])]
    got = pa.concat_tables(parts)
    assert got.to_pylist() == expected.select(got.column_names).to_pylist()
    assert got.num_rows == 24 - 4  # empty, cut-off, refusal, boilerplate


def test_reasons_mode_keeps_every_row_and_names_why():
    ws_rows = [{"kind": "conversation", "messages": [{"role": "user", "content": "hi", "weight": None},
                                                     {"role": "assistant", "content": c, "weight": None}],
                "chosen": None, "rejected": None, "label": None, "tools": None, "meta": None}
               for c in ("Hello there!", "As an AI language model, I cannot.")]
    table = batch_function("refusal_filter", with_reasons=True)(pa.Table.from_pylist(ws_rows))
    assert table.column("curation_reason").to_pylist() == [None, "AI boilerplate"]


def test_whole_dataset_ops_are_refused_and_exact_keys_group_like_exact_dedup():
    with pytest.raises(ValueError, match="whole dataset"):
        batch_function("minhash_dedup")
    with pytest.raises(ValueError, match="whole dataset"):
        batch_function("split")
    rows = [{"kind": "conversation", "messages": [{"role": "user", "content": t, "weight": None}],
             "chosen": None, "rejected": None, "label": None, "tools": None, "meta": None}
            for t in ("Hello  World", "hello world", "Hello, world")]
    keys = exact_keys(pa.Table.from_pylist(rows)).column("curation_key").to_pylist()
    assert keys[0] == keys[1] != keys[2]
