"""``exact_dedup`` and ``minhash_dedup`` on Ray Data, with the local ops' results by ``_pos``
(the contract is :mod:`studio.curation.distributed`). Ray is imported only inside functions, so
the plugin imports without it.

Rows are never collected on the driver: maps turn them into narrow columns (digests, signatures,
band keys) and every grouping is a Ray ``groupby``. A groupby here is on a *shard* column (the
grouping key modulo a shard count) and its ``map_groups`` function finishes the grouping inside
the shard with numpy: all rows of one key land in the same shard, and one call per shard rather
than per key (most LSH buckets hold one row) keeps the work vectorised. The driver holds only
arrays of the removed rows.

MinHash on Ray:

1. signatures (the local op's own code) of the rows that have shingles, keyed by ``_pos``;
2. (band, key) rows, grouped into buckets; each bucket's members, ascending, give the same star +
   chain pairs as the local ``bucket_pairs``;
3. verification: a pair's signatures meet through two groupings by row (the first makes the
   pairs distinct and carries the signature of ``u`` to the shard of ``v``, the second compares
   it with ``v``'s), scored by the local ``estimated_jaccard``;
4. connected components by alternating large-star / small-star rounds (Kiveris et al., 2014)
   until every component is a star around its smallest ``_pos``: the local ``components`` root;
5. the similarity of each removed row to its root (as in 3) and its most similar neighbour.

That is about a dozen groupbys (two per components round). With Ray's default hash shuffle each
starts aggregator actors: seconds apiece on a small cluster (100k rows on 2 CPUs: minutes). A
sort-based shuffle (``DataContext.shuffle_strategy = "sort_shuffle_pull_based"``, or the
environment variable ``RAY_DATA_DEFAULT_SHUFFLE_STRATEGY``) costs well under a second each.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from studio.curation.distributed import POS, Duplicates, EngineContext
from studio_curate_dedup.common import CHUNK_ROWS, as_parts
from studio_curate_dedup.exact_keys import REASON as EXACT_REASON
from studio_curate_dedup.exact_keys import digest_words, exact_digests, exact_report, first_equal, normalisation
from studio_curate_dedup.minhash_lsh import REASON as NEAR_REASON
from studio_curate_dedup.minhash_lsh import (
    band_keys, estimated_jaccard, lsh_shape, minhash_report, near_detail, signature_options,
    signatures_of_table, sorted_bucket_pairs, strongest_directed,
)

# Rows of a grouped dataset per shard, about: bounds the memory of one map_groups call.
SHARD_ROWS = 200_000
# Large-star / small-star needs O(log^2 n) rounds; this only stops a bug from looping forever.
MAX_ROUNDS = 200


def _shards(rows: int, num_cpus: int) -> int:
    return max(2 * max(num_cpus, 1), -(-rows // SHARD_ROWS))


def _by_shard(ds, shards: int):
    """Grouped by the shard column; with a hash shuffle, one partition per shard (Ray's default
    of 200 partitions costs seconds of aggregator start-up per groupby on a small cluster)."""
    return ds.groupby("shard", num_partitions=shards)


def _column(table: pa.Table, name: str, dtype=np.int64) -> np.ndarray:
    """A column of a block or batch (possibly several chunks) as one numpy array."""
    return np.asarray(table.column(name).to_numpy(), dtype=dtype)


def _collect(ds, columns: dict[str, Any]) -> dict[str, np.ndarray]:
    """The dataset's columns as numpy arrays on the driver (only for O(removed rows) data)."""
    import ray

    tables = [t for t in ray.get(ds.to_arrow_refs()) if t.num_rows]
    if not tables:
        return {name: np.zeros(0, dtype) for name, dtype in columns.items()}
    table = pa.concat_tables(tables)
    return {name: _column(table, name, dtype) for name, dtype in columns.items()}


# --- exact ------------------------------------------------------------------------------------

def _exact_keys(batch: pa.Table, parts: list[str], skip_empty: bool, norm: dict[str, bool],
                shards: int) -> pa.Table:
    """The rows that have text, as (shard, _pos, digest words)."""
    digests, empty = exact_digests(batch, parts, skip_empty, **norm)
    words = digest_words(digests)[~empty]
    return pa.table({"shard": (words[:, 0] % np.uint64(shards)).astype(np.int64),
                     POS: _column(batch, POS)[~empty], "k0": words[:, 0], "k1": words[:, 1]})


def _exact_group(shard: pa.Table) -> pa.Table:
    """Rows of the shard that repeat an earlier row's digest, with that first row."""
    pos = _column(shard, POS)
    order = np.argsort(pos)
    pos = pos[order]
    words = np.stack([_column(shard, "k0", np.uint64)[order], _column(shard, "k1", np.uint64)[order]], axis=1)
    first = first_equal(words)
    dup = first != np.arange(len(pos))
    return pa.table({POS: pos[dup], "root": pos[first[dup]]})


def exact_on_ray(rows, config: Any, ctx: EngineContext) -> Duplicates:
    """``exact_dedup`` over a Ray Dataset of rows with ``_pos``."""
    n = rows.count()
    parts = as_parts(config.part)
    norm = normalisation(config)
    ctx.progress(0, n, "normalise + hash")
    shards = _shards(n, ctx.num_cpus)
    keys = rows.map_batches(_exact_keys, batch_format="pyarrow", batch_size=CHUNK_ROWS,
                            fn_kwargs=dict(parts=parts, skip_empty=config.skip_empty, norm=norm,
                                           shards=shards)).materialize()
    with_text = keys.count()
    ctx.progress(n, n, "normalise + hash")
    ctx.check()
    removed = {POS: np.zeros(0, np.int64), "root": np.zeros(0, np.int64)}
    if with_text > 1:
        removed = _collect(_by_shard(keys, shards).map_groups(_exact_group, batch_format="pyarrow"),
                           {POS: np.int64, "root": np.int64})
    order = np.argsort(removed[POS])
    pos, root = removed[POS][order], removed["root"][order]
    part = parts if len(parts) > 1 else parts[0]
    result = Duplicates(reason=EXACT_REASON, pos=pos, root=root, similarity=np.ones(len(pos)),
                        detail=[{"part": part} for _ in range(len(pos))])
    # Rows left out of the keys are the empty ones (none unless skip_empty).
    result.report = exact_report(result.cluster_stats(n), n - with_text, parts, norm)
    return result


# --- signatures travelling between shards -----------------------------------------------------
# One schema for a row's own signature (other = -1) and for a pair (pos, other) that carries the
# signature of `other` or none yet (null), so that the two can be unioned and grouped by `pos`.

def _signature_type(num_perm: int) -> pa.DataType:
    return pa.binary(4 * num_perm)


def _signature_column(sig: np.ndarray) -> pa.Array:
    """(rows, num_perm) uint32 -> one fixed-size binary value per row."""
    sig = np.ascontiguousarray(sig, dtype=np.uint32)
    return pa.FixedSizeBinaryArray.from_buffers(_signature_type(sig.shape[1]), len(sig),
                                                [None, pa.py_buffer(sig.tobytes())])


def _signature_matrix(column, num_perm: int) -> np.ndarray:
    """A fixed-size binary column (no nulls) -> (rows, num_perm) uint32."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if len(arr) == 0:
        return np.zeros((0, num_perm), np.uint32)
    width = 4 * num_perm
    raw = np.frombuffer(arr.buffers()[1], dtype=np.uint8)[arr.offset * width:(arr.offset + len(arr)) * width]
    return raw.view(np.uint32).reshape(len(arr), num_perm)


def _carrier(shard: np.ndarray, pos: np.ndarray, other: np.ndarray, sig: pa.Array) -> pa.Table:
    return pa.table({"shard": shard.astype(np.int64), "pos": pos.astype(np.int64),
                     "other": other.astype(np.int64), "sig": sig})


def _own_and_pairs(table: pa.Table, num_perm: int):
    """Split a shard into its rows' own signatures and the pairs: (pair pos, pair other, the
    pair's carried signatures column, the own signature of each pair's pos)."""
    pos, other = _column(table, "pos"), _column(table, "other")
    own = other < 0
    own_pos = pos[own]
    order = np.argsort(own_pos)
    own_pos = own_pos[order]
    own_sig = _signature_matrix(table.column("sig").filter(pa.array(own)), num_perm)[order]
    pairs = ~own
    at = np.searchsorted(own_pos, pos[pairs])
    if len(at) and (at.max() >= len(own_pos) or not np.array_equal(own_pos[at], pos[pairs])):
        raise RuntimeError("a pair names a row without a signature")
    return pos[pairs], other[pairs], table.column("sig").filter(pa.array(pairs)), own_sig[at]


def _signature_rows(batch: pa.Table, parts: list[str], options: dict[str, Any], shards: int) -> pa.Table:
    """The rows that have shingles, as their own signature rows."""
    sig_t, shingles = signatures_of_table(batch, parts, **options)
    has = shingles > 0
    pos = _column(batch, POS)[has]
    return _carrier(pos % shards, pos, np.full(len(pos), -1), _signature_column(sig_t.T[has]))


def _pair_rows(batch: pa.Table, num_perm: int, shards: int) -> pa.Table:
    """Pairs (u, v) as rows of u's shard, carrying nothing yet."""
    u, v = _column(batch, "u"), _column(batch, "v")
    return _carrier(u % shards, u, v, pa.nulls(len(u), _signature_type(num_perm)))


def _distinct(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Indices of the first occurrence of each distinct pair (u[i], v[i])."""
    order = np.lexsort((v, u))
    first = np.ones(len(order), dtype=bool)
    first[1:] = (u[order][1:] != u[order][:-1]) | (v[order][1:] != v[order][:-1])
    return np.sort(order[first])


def _only_rows(batch: pa.Table, rows: np.ndarray) -> pa.Table:
    """The signature rows of these _pos (sorted)."""
    return batch.filter(pa.array(np.isin(_column(batch, "pos"), rows, assume_unique=True)))


def _carry_signature(shard: pa.Table, num_perm: int, shards: int) -> pa.Table:
    """Each distinct pair (u, v) of the shard moves to v's shard with u's signature (a pair can
    come from several LSH bands, and all its copies are in u's shard)."""
    u, v, _, sig_u = _own_and_pairs(shard, num_perm)
    first = _distinct(u, v)
    return _carrier(v[first] % shards, v[first], u[first], _signature_column(sig_u[first]))


def _compare_signatures(shard: pa.Table, num_perm: int, min_similarity: float | None) -> pa.Table:
    """Each pair (u, v) of v's shard with its estimated Jaccard (the local op's own)."""
    v, u, carried, sig_v = _own_and_pairs(shard, num_perm)
    sig_u = _signature_matrix(carried, num_perm)
    m = len(u)
    sim = estimated_jaccard(np.concatenate([sig_u, sig_v]).T, np.arange(m), np.arange(m, 2 * m))
    keep = sim >= min_similarity if min_similarity is not None else np.ones(m, dtype=bool)
    return pa.table({"u": u[keep], "v": v[keep], "sim": sim[keep]})


def _carry(pairs, signatures, num_perm: int, shards: int):
    """Pairs (u, v) -> the distinct pairs as rows of v's shard carrying u's signature."""
    ends = pairs.map_batches(_pair_rows, batch_format="pyarrow", fn_kwargs=dict(num_perm=num_perm, shards=shards))
    return _by_shard(signatures.union(ends), shards).map_groups(
        _carry_signature, batch_format="pyarrow", fn_kwargs=dict(num_perm=num_perm, shards=shards))


def _compare(carried, signatures, num_perm: int, shards: int, min_similarity: float | None = None):
    """Carried pairs -> (u, v, sim), pairs below min_similarity dropped."""
    return _by_shard(signatures.union(carried), shards).map_groups(
        _compare_signatures, batch_format="pyarrow", fn_kwargs=dict(num_perm=num_perm, min_similarity=min_similarity))


# --- candidate pairs --------------------------------------------------------------------------

def _band_rows(batch: pa.Table, bands: int, rows: int, num_perm: int, shards: int) -> pa.Table:
    """(shard, band, key, _pos) for every band of every row with shingles."""
    sig_t = np.ascontiguousarray(_signature_matrix(batch.column("sig"), num_perm).T)
    pos = _column(batch, "pos")
    keys = np.concatenate([band_keys(sig_t, band, rows) for band in range(bands)]) if len(pos) else np.zeros(0, np.uint64)
    return pa.table({"shard": (keys % np.uint64(shards)).astype(np.int64),
                     "band": np.repeat(np.arange(bands, dtype=np.int32), len(pos)),
                     "key": keys, POS: np.tile(pos, bands)})


def _bucket_group(shard: pa.Table) -> pa.Table:
    """The pairs of the buckets in this shard, as (smaller, larger) and distinct: each (band, key)
    run, members ascending, gives the local ``bucket_pairs``' star and chain pairs."""
    band, key, pos = _column(shard, "band", np.int32), _column(shard, "key", np.uint64), _column(shard, POS)
    order = np.lexsort((pos, key, band))
    band, key, pos = band[order], key[order], pos[order]
    u, v = sorted_bucket_pairs((band[1:] == band[:-1]) & (key[1:] == key[:-1]), pos)
    lo, hi = np.minimum(u, v), np.maximum(u, v)
    first = _distinct(lo, hi)
    return pa.table({"u": lo[first], "v": hi[first]})


# --- connected components ---------------------------------------------------------------------
# Edges are (u, v) rows. Large-star: every node links its larger neighbours to the smallest of
# itself and its neighbours. Small-star: every node links itself and its smaller neighbours to
# the smallest of them. Alternating the two ends with every component a star whose centre is its
# smallest node; the large-star step notices (no node then has two smaller neighbours, or a
# smaller and a larger one) and leaves such a graph as it is.

def _directed(batch: pa.Table, both: bool, shards: int) -> pa.Table:
    """Edges as (node, neighbour) rows in the node's shard: both ways, or from the larger end."""
    u, v = _column(batch, "u"), _column(batch, "v")
    real = u >= 0  # drops the per-shard count rows of a large-star step
    u, v = u[real], v[real]
    if both:
        node, nb = np.concatenate([u, v]), np.concatenate([v, u])
    else:
        node, nb = np.maximum(u, v), np.minimum(u, v)
    return pa.table({"shard": node % shards, "node": node, "nb": nb})


def _neighbourhoods(shard: pa.Table):
    """(node, neighbour) sorted and distinct, the first row of each node, and each row's node."""
    node, nb = _column(shard, "node"), _column(shard, "nb")
    order = np.lexsort((nb, node))
    node, nb = node[order], nb[order]
    keep = np.ones(len(node), dtype=bool)
    keep[1:] = (node[1:] != node[:-1]) | (nb[1:] != nb[:-1])
    node, nb = node[keep], nb[keep]
    starts = np.ones(len(node), dtype=bool)
    starts[1:] = node[1:] != node[:-1]
    return node, nb, np.flatnonzero(starts), np.cumsum(starts) - 1


def _large_star(shard: pa.Table) -> pa.Table:
    node, nb, firsts, group = _neighbourhoods(shard)
    smallest = np.minimum(nb[firsts], node[firsts])  # neighbours are ascending
    smaller = np.add.reduceat((nb < node).astype(np.int64), firsts) if len(node) else np.zeros(0, np.int64)
    larger = np.add.reduceat((nb > node).astype(np.int64), firsts) if len(node) else np.zeros(0, np.int64)
    unsettled = int(((smaller > 1) | ((smaller == 1) & (larger > 0))).sum())
    up = nb > node
    # One extra row (u = -1) carries the shard's count of nodes that are not yet star leaves/centres.
    return pa.table({"u": np.append(nb[up], -1), "v": np.append(smallest[group][up], -1),
                     "unsettled": np.append(np.zeros(int(up.sum()), np.int64), unsettled)})


def _small_star(shard: pa.Table) -> pa.Table:
    node, nb, firsts, group = _neighbourhoods(shard)  # every neighbour is smaller than its node
    smallest = nb[firsts]
    later = np.ones(len(node), dtype=bool)
    later[firsts] = False
    return pa.table({"u": np.concatenate([nb[later], node[firsts]]),
                     "v": np.concatenate([smallest[group][later], smallest])})


def _unsettled_rows(batch: pa.Table) -> pa.Table:
    """The per-shard count rows of a large-star step."""
    return batch.filter(pa.array(_column(batch, "u") < 0))


def _component_roots(edges, shards: int, ctx: EngineContext) -> tuple[np.ndarray, np.ndarray]:
    """(every node that is not its component's smallest, that smallest node), by _pos."""
    for _ in range(MAX_ROUNDS):
        ctx.check()
        directed = edges.map_batches(_directed, batch_format="pyarrow", fn_kwargs=dict(both=True, shards=shards))
        edges = _by_shard(directed, shards).map_groups(_large_star, batch_format="pyarrow").materialize()
        counts = _collect(edges.map_batches(_unsettled_rows, batch_format="pyarrow"), {"unsettled": np.int64})
        if counts["unsettled"].sum() == 0:
            break
        directed = edges.map_batches(_directed, batch_format="pyarrow", fn_kwargs=dict(both=False, shards=shards))
        edges = _by_shard(directed, shards).map_groups(_small_star, batch_format="pyarrow").materialize()
    else:
        raise RuntimeError(f"connected components did not settle in {MAX_ROUNDS} rounds")
    stars = _collect(edges, {"u": np.int64, "v": np.int64})
    real = stars["u"] >= 0
    order = np.argsort(stars["u"][real])
    return stars["u"][real][order], stars["v"][real][order]


# --- nearest neighbours -----------------------------------------------------------------------

def _directed_similarity(batch: pa.Table, shards: int) -> pa.Table:
    u, v, sim = _column(batch, "u"), _column(batch, "v"), _column(batch, "sim", np.float64)
    node = np.concatenate([u, v])
    return pa.table({"shard": node % shards, "node": node, "other": np.concatenate([v, u]),
                     "sim": np.concatenate([sim, sim])})


def _strongest_group(shard: pa.Table) -> pa.Table:
    node, other, sim = strongest_directed(_column(shard, "node"), _column(shard, "other"),
                                          _column(shard, "sim", np.float64))
    return pa.table({"node": node, "nearest": other, "sim": sim})


# --- minhash ----------------------------------------------------------------------------------

def minhash_on_ray(rows, config: Any, ctx: EngineContext) -> Duplicates:
    """``minhash_dedup`` over a Ray Dataset of rows with ``_pos``."""
    import ray.data

    n = rows.count()
    parts = as_parts(config.part)
    bands, per_band = lsh_shape(config)
    seed = ctx.seed if config.seed is None else config.seed
    num_perm = config.num_perm
    node_shards = _shards(n, ctx.num_cpus)

    ctx.progress(0, n, "minhash signatures")
    signatures = rows.map_batches(
        _signature_rows, batch_format="pyarrow", batch_size=CHUNK_ROWS,
        fn_kwargs=dict(parts=parts, options=signature_options(config, seed), shards=node_shards)).materialize()
    with_shingles = signatures.count()
    ctx.progress(n, n, "minhash signatures")
    ctx.check()

    ctx.progress(0, bands, "lsh buckets")
    band_shards = _shards(with_shingles * bands, ctx.num_cpus)
    carried = None
    candidates = 0
    if with_shingles > 1:
        band_rows = signatures.map_batches(
            _band_rows, batch_format="pyarrow",
            fn_kwargs=dict(bands=bands, rows=per_band, num_perm=num_perm, shards=band_shards))
        bucketed = _by_shard(band_rows, band_shards).map_groups(_bucket_group, batch_format="pyarrow")
        # The first half of verification also makes the pairs distinct: their number is known here.
        carried = _carry(bucketed, signatures, num_perm, node_shards).materialize()
        candidates = carried.count()
    ctx.progress(bands, bands, "lsh buckets")
    ctx.check()

    verified = 0
    pos = root = np.zeros(0, np.int64)
    if candidates:
        ctx.progress(0, candidates, "verify pairs")
        scored = _compare(carried, signatures, num_perm, node_shards,
                          config.threshold if config.verify else None).materialize()
        verified = scored.count()
        ctx.progress(candidates, candidates, "verify pairs")
        ctx.check()
        if verified:
            ctx.progress(0, 1, "connected components")
            pos, root = _component_roots(scored.select_columns(["u", "v"]), node_shards, ctx)
            ctx.progress(1, 1, "connected components")
            ctx.check()
    similarity = np.ones(len(pos))
    detail: list[dict[str, Any]] = []
    if len(pos):
        ctx.progress(0, len(pos), "similarity to the kept rows")
        removed = ray.data.from_arrow(pa.table({"u": pos, "v": root}))
        # Only the signatures of cluster members travel (the driver's arrays name them).
        members = signatures.map_batches(_only_rows, batch_format="pyarrow",
                                         fn_kwargs=dict(rows=np.union1d(pos, root)))
        to_root = _collect(_compare(_carry(removed, members, num_perm, node_shards), members, num_perm, node_shards),
                           {"u": np.int64, "sim": np.float64})
        order = np.argsort(to_root["u"])
        similarity = to_root["sim"][order]
        if not np.array_equal(to_root["u"][order], pos):
            raise RuntimeError("a removed row lost its similarity to the kept row")
        directed = scored.map_batches(_directed_similarity, batch_format="pyarrow", fn_kwargs=dict(shards=node_shards))
        near = _collect(_by_shard(directed, node_shards).map_groups(_strongest_group, batch_format="pyarrow"),
                        {"node": np.int64, "nearest": np.int64, "sim": np.float64})
        order = np.argsort(near["node"])
        at = order[np.searchsorted(near["node"], pos, sorter=order)]
        detail = [near_detail(s, nb, r) for s, nb, r in
                  zip(near["sim"][at].tolist(), near["nearest"][at].tolist(), root.tolist())]
        ctx.progress(len(pos), len(pos), "similarity to the kept rows")
    result = Duplicates(reason=NEAR_REASON, pos=pos, root=root, similarity=similarity, detail=detail)
    result.report = minhash_report(result.cluster_stats(n), config, parts, seed, bands, per_band,
                                   n - with_shingles, candidates, verified)
    return result
