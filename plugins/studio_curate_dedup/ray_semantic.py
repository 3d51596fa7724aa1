"""``semantic_dedup`` on the Ray engine: the local op's result, by ``_pos``, from the same functions
(:mod:`studio_curate_dedup.embeddings`) run in Ray workers.

1. Texts (a map step): each row's text length and whether it has text. The driver orders the rows
   with text as the local encoder does (longest first, ties by position) and cuts that order into
   ``batch_size`` batches, so every text is padded with the same neighbours as on the local
   engine: a text's embedding moves by about 1e-7 with its batch, enough to flip a pair sitting
   at the threshold.
2. Embeddings: a group-by on that batch number; each group is one forward pass in an actor that
   loads the encoder once (one actor per CPU, or per GPU when the cluster has them).
3. Neighbours: the driver puts the embeddings in row order (rows x dim float32, what the local op
   holds) and cuts them into ``block_size`` blocks in the object store; Ray tasks compute the
   upper-triangle tiles (block i x block j, j >= i) with the local op's own tile function and
   return the pairs above the threshold.
4. Clusters: the driver folds the pairs into the local op's cluster builder (O(rows) memory)
   and gathers only the removed rows and their kept rows to compute similarities.

Ray is imported inside the functions: loading the plugin never imports it."""
from __future__ import annotations

from typing import Any

import numpy as np

from studio.curation.distributed import POS, Duplicates, EngineContext
from studio_curate_dedup.common import as_parts
from studio_curate_dedup.embeddings import (
    MODEL_ERROR, REASON, ClusterBuilder, base_report, default_model_path, encoding_order, has_text, load_encoder,
    model_settings, semantic_duplicates, texts_of, tile_pairs,
)

EMBEDDING = "embedding"
BATCH = "encoder_batch"
TEXT = "text"


def semantic_on_ray(rows, config, ctx: EngineContext) -> Duplicates:
    """``semantic_dedup`` over a materialised Ray Dataset of the step's rows (canonical columns
    and ``_pos``); the removed rows with their kept rows, similarities, details and report exactly
    as the local op gives them for the same rows in ``_pos`` order."""
    import ray

    parts = as_parts(config.part)
    ctx.check()
    ctx.progress(0, ctx.rows, "texts")
    pos, length, with_text = _text_lengths(rows, parts)
    n = len(pos)
    text_pos, text_len = pos[with_text], length[with_text]
    report = base_report(config.model, config.threshold, parts, n, len(text_pos))
    if len(text_pos) < 2:  # nothing to compare: do not load a model
        empty = Duplicates(REASON, np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0), [])
        empty.report = {**empty.cluster_stats(n), **report, "similar_pairs": 0}
        return empty
    ctx.progress(n, n, "texts")
    ctx.check()

    gpus = int(ray.cluster_resources().get("GPU", 0)) if config.device in ("auto", "cuda") else 0
    device = config.device if config.device != "auto" else ("cuda" if gpus else "cpu")
    batch_of = np.empty(len(text_pos), np.int64)
    batch_of[encoding_order(text_len)] = np.arange(len(text_pos)) // config.batch_size
    emb = _embed(rows, parts, text_pos, batch_of, config, device, gpus, ctx)
    ctx.check()

    blocks = [ray.put(np.ascontiguousarray(emb[lo:lo + config.block_size]))
              for lo in range(0, len(emb), config.block_size)]
    del emb  # the blocks in the object store hold them now
    builder = ClusterBuilder(len(text_pos))
    _neighbours(blocks, config.block_size, config.threshold, builder, ctx)
    ctx.check()
    dups = semantic_duplicates(builder, lambda index: _gather(blocks, config.block_size, index))
    result = Duplicates(REASON, text_pos[dups.rows], text_pos[dups.roots], dups.similarity, dups.detail)
    pooling = model_settings(config.model or default_model_path())[1]
    result.report = {**result.cluster_stats(n), **report, "pooling": pooling, "device": device,
                     "similar_pairs": dups.pairs}
    return result


# --- 1. texts ---------------------------------------------------------------------------------

def _lengths_of_batch(batch, parts: list[str]):
    import pyarrow as pa

    texts = texts_of(batch, parts)
    return pa.table({POS: batch.column(POS),
                     "length": pa.array(np.fromiter(map(len, texts), np.int64, count=len(texts))),
                     "has_text": pa.array(has_text(texts))})


def _text_lengths(rows, parts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(_pos, text length, has text) of every row, in ``_pos`` order."""
    narrow = rows.map_batches(_lengths_of_batch, fn_kwargs={"parts": parts}, batch_format="pyarrow")
    columns: dict[str, list[np.ndarray]] = {POS: [], "length": [], "has_text": []}
    for batch in narrow.iter_batches(batch_size=None, batch_format="pyarrow"):
        for name in columns:
            columns[name].append(batch.column(name).to_numpy())
    pos, length, flag = (np.concatenate(columns[name]) if columns[name] else np.zeros(0, dtype)
                         for name, dtype in ((POS, np.int64), ("length", np.int64), ("has_text", bool)))
    order = np.argsort(pos, kind="stable")
    return pos[order].astype(np.int64), length[order], flag[order].astype(bool)


# --- 2. embeddings ----------------------------------------------------------------------------

def _texts_of_batch(batch, parts: list[str], index):
    """The rows with text, with their text and the encoder batch the driver gave them."""
    import pyarrow as pa
    import ray

    text_pos, batch_of = ray.get(index) if isinstance(index, ray.ObjectRef) else index
    pos = batch.column(POS).to_numpy()
    at = np.minimum(np.searchsorted(text_pos, pos), len(text_pos) - 1)
    mine = text_pos[at] == pos
    batch = batch.filter(pa.array(mine))
    return pa.table({POS: batch.column(POS), TEXT: pa.array(texts_of(batch, parts), pa.large_string()),
                     BATCH: pa.array(batch_of[at[mine]])})


class _EmbedBatch:
    """One encoder per actor; a call embeds one of the local op's batches in one forward pass."""

    def __init__(self, model: str | None, device: str, trust_remote_code: bool, max_length: int | None):
        self.encoder = load_encoder(model, device, trust_remote_code, max_length)

    def __call__(self, group):
        import pyarrow as pa

        # In _pos order, the encoder's own ordering (longest first, ties by index) is the local one.
        group = group.sort_by(POS)
        texts = group.column(TEXT).to_pylist()
        emb = self.encoder.encode(texts, batch_size=max(1, len(texts)))
        flat = pa.array(emb.reshape(-1), pa.float32())
        return pa.table({POS: group.column(POS), EMBEDDING: pa.FixedSizeListArray.from_arrays(flat, emb.shape[1])})


def _embed(rows, parts, text_pos, batch_of, config, device: str, gpus: int, ctx: EngineContext) -> np.ndarray:
    """The embeddings of the rows with text, in ``_pos`` order (float32, normalised)."""
    import ray
    from ray.data import ActorPoolStrategy

    batches = int(batch_of.max()) + 1
    index = ray.put((text_pos, batch_of))
    texts = rows.map_batches(_texts_of_batch, fn_kwargs={"parts": parts, "index": index}, batch_format="pyarrow")
    actors = max(1, min(batches, gpus or ctx.num_cpus))
    embedded = texts.groupby(BATCH, num_partitions=max(1, min(batches, 2 * ctx.num_cpus))).map_groups(
        _EmbedBatch, batch_format="pyarrow",
        fn_constructor_kwargs={"model": config.model, "device": device,
                               "trust_remote_code": config.trust_remote_code, "max_length": config.max_length},
        compute=ActorPoolStrategy(min_size=1, max_size=actors), num_gpus=1 if gpus else None)
    ctx.progress(0, len(text_pos), "embed")
    emb: np.ndarray | None = None
    done = 0
    try:
        for part in embedded.iter_batches(batch_size=None, batch_format="pyarrow"):
            ctx.check()
            if not part.num_rows:
                continue
            column = part.column(EMBEDDING).combine_chunks()
            vectors = column.flatten().to_numpy().reshape(part.num_rows, column.type.list_size)
            if emb is None:
                emb = np.zeros((len(text_pos), vectors.shape[1]), np.float32)
            emb[np.searchsorted(text_pos, part.column(POS).to_numpy())] = vectors
            done += part.num_rows
            ctx.progress(done, len(text_pos), "embed")
    except ray.exceptions.RayError as exc:
        # An actor that cannot load the model dies; say it as the local op does.
        reason = next((line for line in str(exc).splitlines()
                       if line.startswith(f"ValueError: {MODEL_ERROR}")), None)
        if reason is None:
            raise
        raise ValueError(reason.removeprefix("ValueError: ")) from exc
    if done != len(text_pos) or emb is None:
        raise RuntimeError(f"semantic_dedup on Ray: {done} embeddings for {len(text_pos)} rows with text")
    return emb


# --- 3. neighbours ----------------------------------------------------------------------------

def _tile(a: np.ndarray, b: np.ndarray, lo: int, lo2: int, threshold: float):
    return tile_pairs(a, b, lo, lo2, threshold)


def _neighbours(blocks: list, block_size: int, threshold: float, builder: ClusterBuilder,
                ctx: EngineContext) -> None:
    """Every upper-triangle tile as a Ray task, a few per CPU in flight; their pairs go into the
    builder as they come (its clusters and nearest neighbours do not depend on the order)."""
    import ray

    tile = ray.remote(num_cpus=1)(_tile)
    tiles = [(i, j) for i in range(len(blocks)) for j in range(i, len(blocks))]
    limit = max(2, 2 * ctx.num_cpus)
    pending: dict[Any, tuple[int, int]] = {}
    done = 0
    ctx.progress(0, len(tiles), "neighbours")
    todo = iter(tiles)
    try:
        while True:
            for i, j in todo:
                pending[tile.remote(blocks[i], blocks[j], i * block_size, j * block_size, threshold)] = (i, j)
                if len(pending) >= limit:
                    break
            if not pending:
                return
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                pending.pop(ref)
                u, v, s = ray.get(ref)
                if len(u):
                    builder.add(u, v, s)
                done += 1
            ctx.progress(done, len(tiles), "neighbours")
            ctx.check()
    finally:
        for ref in pending:
            ray.cancel(ref)


# --- 4. similarities to the kept rows ---------------------------------------------------------

def _take(block: np.ndarray, index: np.ndarray) -> np.ndarray:
    return block[index]


def _gather(blocks: list, block_size: int, index: np.ndarray) -> np.ndarray:
    """The embeddings of these rows (indices among rows with text), each block asked only for
    its own rows."""
    import ray

    take = ray.remote(num_cpus=1)(_take)
    which = index // block_size
    parts = {int(b): take.remote(blocks[b], index[which == b] - b * block_size) for b in np.unique(which)}
    if not parts:
        return np.zeros((0, 0), np.float32)
    fetched = dict(zip(parts, ray.get(list(parts.values()))))
    out = np.empty((len(index), next(iter(fetched.values())).shape[1]), np.float32)
    for b, rows in fetched.items():
        out[which == b] = rows
    return out
