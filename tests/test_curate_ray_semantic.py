"""semantic_dedup on Ray Data (``SemanticDedup.run_on_ray``) gives the local op's result, mapped to
``_pos``: the same removed rows, kept rows, similarities (bit for bit), details and report, on
planted paraphrases and copies among real sample records, with ``_pos`` not contiguous and the
embeddings spread over several encoder batches and similarity blocks."""
from __future__ import annotations

import random

import numpy as np
import pyarrow as pa
import pytest

from conftest import DATASETS
from studio.curation.distributed import POS, EngineContext
from studio.curation.op_base import OpContext, OpInput
from studio.data.convert import read_file
from studio.plugins import get_host
from studio.records import Record, Turn
from studio.store import Workspace

ray = pytest.importorskip("ray", reason="the Ray engine is the optional extra alignment-studio[ray]")

# Rewordings written for this test; each pair shares almost no word 3-gram.
PARAPHRASES = [
    ("How do I reverse a list in Python?", "In Python, how can a list be reversed?"),
    ("What is the capital city of France?", "Which city serves as France's capital?"),
    ("Give me three tips for sleeping better at night.", "Share a few tips to sleep better at night, please."),
    ("Explain how photosynthesis works.", "Can you explain the way photosynthesis works?"),
    ("Write a short poem about the ocean.", "Compose a brief poem about the sea."),
    ("Why is the sky blue?", "What makes the sky appear blue?"),
    ("How many legs does a spider have?", "What is the number of legs on a spider?"),
    ("List some ways to reduce stress at work.", "What are ways of reducing stress in the workplace?"),
    ("How do I change a flat tire on my car?", "What are the steps for changing a car's flat tire?"),
    ("Summarize the causes of the First World War.", "Give a summary of what caused World War One."),
]
# Each a chain at the threshold 0.8: the first two and the last two are similar enough (MiniLM:
# 0.83-0.9), the first and the last about 0.76-0.81, so the last row's nearest match is not its
# cluster's kept row ("chained").
CHAINS = [
    ("How do I bake bread at home?", "How do I bake bread at home without yeast?",
     "How do I bake gluten-free bread at home without yeast or eggs?"),
    ("How to learn French.", "How to learn French quickly.",
     "How to learn French quickly before a trip to Paris next month."),
]
# Questions on one template: close in meaning to each other, many pairs a little below the
# threshold.
TOPICS = ["France", "Spain", "Italy", "Japan", "Kenya", "Peru", "Canada", "Norway", "Egypt", "Chile",
          "Vietnam", "Ghana", "Poland", "Nepal", "Mexico", "Sweden", "Brazil", "India", "Greece", "Iceland",
          "Morocco", "Portugal", "Thailand", "Ireland"]
TEMPLATES = ["What is the capital of {}?", "Describe the cuisine of {}.", "What language is spoken in {}?",
             "When is the best season to visit {}?"]
THRESHOLD = 0.8


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def op():
    return get_host().items("curation_op")["semantic_dedup"]


@pytest.fixture(scope="module", autouse=True)
def _encoder_cache():
    from studio_curate_dedup.embeddings import clear_encoder_cache

    yield
    clear_encoder_cache()


def planted_records() -> list[Record]:
    rng = random.Random(7)
    samples = []
    for name in ("dolly.jsonl", "alpaca.json", "lima.jsonl", "openai_chat.jsonl", "prompts.jsonl",
                 "self_instruct_seeds.jsonl"):
        samples += read_file(DATASETS / name, get_host().formats()).records
    records = list(samples)
    records += [Record([Turn("user", t.format(topic))]) for topic in TOPICS for t in TEMPLATES]
    records += [Record([Turn("user", a)]) for a, _ in PARAPHRASES]
    records += [Record([Turn("user", b)]) for _, b in PARAPHRASES]
    for record in rng.sample(samples, 40):  # copies with case and spacing changes
        records.append(Record([Turn(t.role, "  " + (t.content or "").upper() + " ") for t in record.messages]))
    records += [Record([Turn("user", " \n ")]) for _ in range(3)]  # nothing to embed
    rng.shuffle(records)
    return records + [Record([Turn("user", t)]) for chain in CHAINS for t in chain]  # in chain order


def ray_rows(table: pa.Table, pos: np.ndarray):
    """The engine's view of the rows: canonical columns plus _pos, in several blocks."""
    table = table.append_column(POS, pa.array(pos, pa.int64()))
    cuts = list(range(0, table.num_rows, 70))
    return ray.data.from_arrow([table.slice(lo, 70) for lo in cuts]).materialize()


def local_similarities(config, texts: list[str], removed: list[int], roots: list[int]) -> np.ndarray:
    """The unrounded similarities the local op computes for these removals."""
    from studio_curate_dedup.embeddings import has_text, load_encoder, similarity_to_root

    rows = np.flatnonzero(has_text(texts))
    at = {int(r): k for k, r in enumerate(rows)}
    emb = load_encoder(config.model, config.device, False, config.max_length).encode(
        [texts[i] for i in rows], config.batch_size)
    return similarity_to_root(emb[[at[i] for i in removed]], emb[[at[r] for r in roots]]).astype(np.float64)


@pytest.mark.slow
def test_ray_result_equals_the_local_op_by_pos(tmp_path, local_ray, op):
    from studio_curate_dedup.embeddings import texts_of

    ws = Workspace.init(tmp_path / "ws")
    info = ws.write_version("planted", planted_records(), {"name": "t"})
    data = OpInput(ws.root / "data" / "planted" / "versions" / info.id / "data.arrow")
    n = len(data)
    # Small batches and blocks: many encoder batches, several similarity blocks.
    config = op.config_model(threshold=THRESHOLD, batch_size=16, block_size=64, max_length=128)
    local = op.run(data, config, OpContext(num_proc=1))
    pos = np.sort(np.random.default_rng(3).choice(10 * n, n, replace=False)).astype(np.int64)

    events = []
    got = op.run_on_ray(ray_rows(data.table, pos), config,
                        EngineContext(seed=0, rows=n, num_cpus=2, emit=events.append))

    removed = sorted(local.removals)
    assert len(removed) >= 30, "the planted copies and paraphrases are found"
    assert got.reason == "semantic duplicate"
    assert got.pos.tolist() == pos[removed].tolist()
    assert got.root.tolist() == [int(pos[local.removals[i].duplicate_of]) for i in removed]
    assert [round(float(s), 4) for s in got.similarity] == [local.removals[i].similarity for i in removed]
    assert got.detail == [local.removals[i].detail for i in removed]
    assert sum(bool(d.get("chained")) for d in got.detail) >= len(CHAINS)
    assert got.report == local.report
    assert got.report["rows_without_text"] == 3 and got.report["device"] == "cpu"
    assert got.cluster_stats(n) == {k: local.report[k] for k in got.cluster_stats(n)}
    # Bit for bit: the same encoder batches and the same tile arithmetic as the local op.
    texts = texts_of(data.table, ["all"])
    expected = local_similarities(config, texts, removed, [local.removals[i].duplicate_of for i in removed])
    assert got.similarity.dtype == np.float64 and np.array_equal(got.similarity, expected)
    stages = {e["what"] for e in events if e["event"] == "progress"}
    assert {"texts", "embed", "neighbours"} <= stages
    blocks = -(-(n - 3) // 64)
    last_tiles = [e for e in events if e["what"] == "neighbours"][-1]
    assert blocks >= 3 and last_tiles["done"] == last_tiles["total"] == blocks * (blocks + 1) // 2


def test_too_few_texts_load_no_model_and_match_the_local_report(tmp_path, local_ray, op):
    from studio_curate_dedup import embeddings

    ws = Workspace.init(tmp_path / "ws")
    records = [Record([Turn("user", "  ")]), Record([Turn("user", "Only one row has text.")]),
               Record([Turn("user", "")])]
    info = ws.write_version("few", records, {"name": "t"})
    data = OpInput(ws.root / "data" / "few" / "versions" / info.id / "data.arrow")
    config = op.config_model(model="no-such-org/no-such-model")  # would fail if it were loaded
    local = op.run(data, config, OpContext(num_proc=1))
    embeddings.clear_encoder_cache()
    got = op.run_on_ray(ray_rows(data.table, np.array([4, 9, 30])), config, EngineContext(seed=0, rows=3, num_cpus=2))
    assert len(got.pos) == len(got.root) == 0 and got.detail == []
    assert got.report == local.report and got.report["rows_without_text"] == 2


def two_rows():
    from studio.records import arrow_schema

    rows = [{"kind": "conversation", "messages": [{"role": "user", "content": c, "weight": None}]}
            for c in ("Hello there!", "Hi there!")]
    table = pa.Table.from_pylist(rows, schema=arrow_schema())
    return ray.data.from_arrow(table.append_column(POS, pa.array([0, 1], pa.int64())))


def test_a_model_that_cannot_load_fails_as_on_the_local_engine(local_ray, op):
    config = op.config_model(model="no-such-org/no-such-model")
    with pytest.raises(ValueError, match="cannot load embedding model 'no-such-org/no-such-model'"):
        op.run_on_ray(two_rows(), config, EngineContext(seed=0, rows=2, num_cpus=2))


def test_a_cancelled_run_stops_before_embedding(local_ray, op):
    with pytest.raises(InterruptedError):
        op.run_on_ray(two_rows(), op.config_model(), EngineContext(seed=0, rows=2, num_cpus=2, cancelled=lambda: True))
