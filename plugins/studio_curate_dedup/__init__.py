"""Deduplication ops: exact (normalised text hash), near-duplicate (MinHash LSH) and semantic
(sentence-embedding cosine). Importing this package stays light: numpy, pyarrow and xxhash only;
torch and transformers are imported inside ``semantic_dedup.run``."""
from __future__ import annotations

from studio.hookspecs import hookimpl
from studio_curate_dedup.exact import ExactDedup
from studio_curate_dedup.minhash import MinHashDedup
from studio_curate_dedup.semantic import SemanticDedup

__all__ = ["ExactDedup", "MinHashDedup", "SemanticDedup"]


@hookimpl
def register_curation_ops(register):
    register(ExactDedup())
    register(MinHashDedup())
    register(SemanticDedup())
