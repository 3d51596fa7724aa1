"""exact_dedup and minhash_dedup on Ray Data (studio_curate_dedup.ray_dedup) give the local ops'
results, by ``_pos``: the same removed rows, kept rows, similarities, details and reports, on
planted exact copies, near copies, chains and buckets of several rows, with rows dropped first so
that ``_pos`` has gaps."""
from __future__ import annotations

import random

import numpy as np
import pytest

from studio.curation.distributed import POS, EngineContext
from studio.curation.op_base import OpContext, OpInput
from studio.plugins import get_host
from studio.records import Record, Turn, arrow_schema
from studio_curate_dedup.common import components
from studio_curate_dedup.minhash_lsh import bucket_pairs

ray = pytest.importorskip("ray", reason="the Ray engine is an optional extra")
pa = pytest.importorskip("pyarrow")


@pytest.fixture(scope="module")
def ray_data():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    # Sort-based shuffles: the hash shuffle starts aggregator actors, seconds per groupby on 2 cores.
    # The result does not depend on it.
    context.shuffle_strategy = "sort_shuffle_pull_based"
    yield ray.data
    ray.shutdown()


@pytest.fixture(scope="module")
def ops():
    return get_host().items("curation_op")


# --- planted data -----------------------------------------------------------------------------

SYLLABLES = ["ka", "lo", "mi", "nu", "pe", "ra", "si", "to", "vu", "ze", "an", "or", "el", "ix", "ub"]


def vocabulary(rng: random.Random, size: int = 4000) -> list[str]:
    words = set()
    while len(words) < size:
        words.add("".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4))))
    return sorted(words)


def substitute(words: list[str], count: int, rng: random.Random, vocab: list[str], lo: int = 0,
               hi: int | None = None) -> list[str]:
    out = list(words)
    for i in rng.sample(range(lo, hi or len(out)), count):
        out[i] = rng.choice(vocab)
    return out


def planted_records(seed: int = 7, bases: int = 700) -> list[Record]:
    """Unrelated bases (8-word prompt, 80-word response) and, for some, one or two exact copies
    (case and spacing changed), near copies (2 words replaced), chains a ~ b ~ c (3 words replaced at the
    start, then 3 more at the end: c is far from a), groups of 3-4 near copies, copies that
    differ only in the prompt; and empty conversations. Shuffled."""
    rng = random.Random(seed)
    vocab = vocabulary(rng)
    pairs: list[tuple[str, str]] = []
    for _ in range(bases):
        prompt, response = [rng.choice(vocab) for _ in range(8)], [rng.choice(vocab) for _ in range(80)]
        pairs.append((" ".join(prompt), " ".join(response)))
        kind = rng.random()
        if kind < 0.15:
            pairs += [("  " + " ".join(prompt).upper(), "\n".join(response) + " "),
                      (" ".join(prompt), " ".join(response))][:rng.randint(1, 2)]
        elif kind < 0.35:
            pairs.append((" ".join(prompt), " ".join(substitute(response, 2, rng, vocab))))
        elif kind < 0.5:
            b = substitute(response, 3, rng, vocab, 0, 40)
            c = substitute(b, 3, rng, vocab, 40, 80)
            pairs += [(" ".join(prompt), " ".join(b)), (" ".join(prompt), " ".join(c))]
        elif kind < 0.6:
            pairs += [(" ".join(prompt), " ".join(substitute(response, 1, rng, vocab)))
                      for _ in range(rng.randint(3, 4))]
        elif kind < 0.7:
            pairs.append((" ".join(substitute(prompt, 3, rng, vocab)), " ".join(response)))
    pairs += [("", "")] * 6 + [("   ", "\n")] * 3
    rng.shuffle(pairs)
    return [Record([Turn("user", p), Turn("assistant", r)]) for p, r in pairs]


@pytest.fixture(scope="module")
def planted(tmp_path_factory, ray_data):
    """(local input, Ray rows, the _pos of each local row): the records with every fifth row
    dropped, as an Arrow file for the local op and as a Ray Dataset of several blocks with _pos."""
    records = planted_records()
    schema = arrow_schema()
    table = pa.Table.from_pylist([r.to_row() for r in records], schema=schema)
    kept = np.flatnonzero(np.arange(table.num_rows) % 5 != 3)
    table = table.take(pa.array(kept))
    path = tmp_path_factory.mktemp("ray-dedup") / "data.arrow"
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
        writer.write_table(table)
    with_pos = table.append_column(POS, pa.array(kept, pa.int64()))
    blocks = [with_pos.slice(lo, 500) for lo in range(0, with_pos.num_rows, 500)]
    rows = ray_data.from_arrow(blocks).materialize()
    return OpInput(path), rows, kept


# --- comparison -------------------------------------------------------------------------------

def local_and_ray(ops, name: str, planted, seed: int = 3, **config):
    data, rows, positions = planted
    op = ops[name]
    cfg = op.config_model(**config)
    local = op.run(data, cfg, OpContext(num_proc=1, seed=seed))
    events = []
    on_ray = op.run_on_ray(rows, cfg, EngineContext(seed=seed, rows=len(positions), num_cpus=2, emit=events.append))
    assert events and all(e["event"] == "progress" for e in events)
    return local, on_ray, positions


def assert_same(local, on_ray, positions: np.ndarray) -> None:
    """The Ray result is the local OpResult by _pos: row i of the local op is positions[i]."""
    removed = sorted(local.removals)
    removals = [local.removals[i] for i in removed]
    assert on_ray.pos.dtype == np.int64 and on_ray.root.dtype == np.int64
    assert on_ray.pos.tolist() == positions[removed].tolist()
    assert on_ray.root.tolist() == positions[[r.duplicate_of for r in removals]].tolist()
    assert [round(float(s), 4) for s in on_ray.similarity] == [r.similarity for r in removals]
    assert on_ray.detail == [r.detail for r in removals]
    assert {r.reason for r in removals} <= {on_ray.reason}
    assert on_ray.report == local.report


# --- tests ------------------------------------------------------------------------------------

def test_exact_on_ray_equals_the_local_op(ops, planted):
    local, on_ray, positions = local_and_ray(ops, "exact_dedup", planted)
    assert local.report["removed"] >= 50 and local.report["empty_rows"] >= 5  # the planting worked
    assert local.report["largest_cluster"] >= 3
    assert_same(local, on_ray, positions)
    # Two parts compared together, and empty texts grouped like any other.
    local, on_ray, positions = local_and_ray(ops, "exact_dedup", planted, part=["prompt", "response"],
                                             strip_punctuation=True, skip_empty=False)
    assert local.report["empty_rows"] == 0 and any(r.detail["part"] == ["prompt", "response"]
                                                   for r in local.removals.values())
    assert_same(local, on_ray, positions)


def test_minhash_on_ray_equals_the_local_op(ops, planted):
    local, on_ray, positions = local_and_ray(ops, "minhash_dedup", planted, threshold=0.7)
    details = [r.detail for r in local.removals.values()]
    assert local.report["removed"] >= 150 and local.report["largest_cluster"] >= 4
    assert any(d.get("chained") for d in details)  # a ~ b ~ c with c removed through b
    assert local.report["candidate_pairs"] > local.report["verified_pairs"] > 0
    assert local.report["rows_without_shingles"] >= 5
    assert_same(local, on_ray, positions)


def test_minhash_on_ray_with_two_parts_unverified_and_explicit_bands(ops, planted):
    local, on_ray, positions = local_and_ray(ops, "minhash_dedup", planted, seed=11, part=["prompt", "response"],
                                             bands=16, rows=4, verify=False, num_perm=64)
    assert local.report["verified_pairs"] is None and local.report["removed"] >= 150
    assert_same(local, on_ray, positions)


def test_ray_components_equal_the_local_union_find(ray_data):
    """Long paths, stars and random edges over gapped node ids: large-star / small-star rounds
    root every node at the smallest node of its component, as ``components`` does."""
    from studio_curate_dedup.ray_dedup import _component_roots

    rng = np.random.default_rng(5)
    ids = np.sort(rng.choice(10_000, size=3000, replace=False))
    path = np.arange(0, 400)  # one long chain, its nodes visited in shuffled order
    shuffled = rng.permutation(path)
    u = [shuffled[:-1], np.full(50, 500), rng.integers(600, 3000, 800)]
    v = [shuffled[1:], np.arange(501, 551), rng.integers(600, 3000, 800)]
    u, v = np.concatenate(u), np.concatenate(v)
    u, v = u[u != v], v[u != v]
    edges = ray_data.from_arrow(pa.table({"u": ids[u], "v": ids[v]})).repartition(4)
    pos, root = _component_roots(edges, 5, EngineContext(seed=0, rows=len(ids), num_cpus=2))
    roots = components(len(ids), u, v)
    removed = np.flatnonzero(roots != np.arange(len(ids)))
    assert pos.tolist() == ids[removed].tolist()
    assert root.tolist() == ids[roots[removed]].tolist()
    assert root[pos == ids[399]].tolist() == [ids[0]]


def test_bucket_pairs_chain_members_in_ascending_order():
    """A bucket's pairs are (smallest, member) and (previous, member) over its members in
    ascending order, whatever order the sort leaves equal keys in: the Ray engine, which groups
    buckets by key, makes the same pairs."""
    rng = np.random.default_rng(0)
    keys = rng.integers(0, 4, 300).astype(np.uint64)  # large buckets: an unstable sort reorders them
    rows_idx = np.sort(rng.choice(10_000, size=300, replace=False))
    u, v = bucket_pairs(keys, rows_idx)
    expected = set()
    for key in np.unique(keys):
        members = rows_idx[keys == key]
        expected |= {(members[0], m) for m in members[1:]} | set(zip(members[:-1], members[1:]))
    assert set(zip(u.tolist(), v.tolist())) == {(int(a), int(b)) for a, b in expected}


def test_ray_ops_on_rows_without_text(ops, ray_data, tmp_path):
    schema = arrow_schema()
    records = [Record([Turn("user", ""), Turn("assistant", " ")]) for _ in range(4)]
    table = pa.Table.from_pylist([r.to_row() for r in records], schema=schema)
    path = tmp_path / "data.arrow"
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
        writer.write_table(table)
    positions = np.array([2, 5, 6, 9])
    rows = ray_data.from_arrow(table.append_column(POS, pa.array(positions, pa.int64()))).materialize()
    for name in ("exact_dedup", "minhash_dedup"):
        op = ops[name]
        cfg = op.config_model()
        local = op.run(OpInput(path), cfg, OpContext(num_proc=1, seed=1))
        on_ray = op.run_on_ray(rows, cfg, EngineContext(seed=1, rows=4, num_cpus=2))
        assert len(on_ray.pos) == 0
        assert_same(local, on_ray, positions)


def test_ray_dedup_stops_when_cancelled(ops, planted):
    _, rows, positions = planted
    for name in ("exact_dedup", "minhash_dedup"):
        op = ops[name]
        events = []
        ctx = EngineContext(seed=1, rows=len(positions), num_cpus=2, emit=events.append, cancelled=lambda: True)
        with pytest.raises(InterruptedError):
            op.run_on_ray(rows, op.config_model(), ctx)
        assert events[-1]["done"] == events[-1]["total"] == len(positions)  # stopped after the first stage
