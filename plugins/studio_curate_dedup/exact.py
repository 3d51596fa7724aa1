"""``exact_dedup``: rows whose normalised text is identical; the first occurrence is kept.

Texts are read column-wise from the Arrow file, normalised and hashed (xxh3-128) in worker
processes; grouping the 128-bit keys is one numpy lexsort."""
from __future__ import annotations


import numpy as np
import xxhash
from pydantic import BaseModel, ConfigDict, Field

from studio.curation.op_base import CurationOp, OpContext, OpInput, OpResult
from studio.curation.text import normalise
from studio_curate_dedup.common import (
    PART_HELP, PartSpec, as_parts, check_cancel, map_chunks, parts_validator, range_part_texts,
    result_from_roots,
)

# Punctuation and symbols: anything that is neither a word character nor whitespace, and "_"
# (which \w counts as a word character).


class ExactDedupConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    part: PartSpec = Field("all", description=PART_HELP)
    lowercase: bool = Field(True, description="compare case-insensitively (Unicode case folding)")
    collapse_whitespace: bool = Field(True, description="treat runs of whitespace as one space and "
                                                        "ignore leading/trailing whitespace")
    strip_punctuation: bool = Field(False, description="ignore punctuation and symbols")
    unicode_nfkc: bool = Field(True, description="apply Unicode NFKC normalisation first (full-width "
                                                 "forms, ligatures, compatibility characters)")
    skip_empty: bool = Field(True, description="rows whose compared text is empty are never "
                                               "duplicates of each other")

    _split_parts = parts_validator()


def exact_chunk(path: str, lo: int, hi: int, parts: list[str], skip_empty: bool, **norm: bool
                ) -> tuple[bytes, np.ndarray]:
    """Worker task for rows [lo, hi): (16-byte xxh3-128 digest of each row's normalised text,
    packed; mask of rows with no text, which are never duplicates when skip_empty).
    Module level: it is pickled into worker processes."""
    per_part = range_part_texts(path, lo, hi, parts)
    digest = xxhash.xxh3_128_digest
    out = bytearray()
    empty = np.zeros(hi - lo, dtype=bool)
    for i, texts in enumerate(zip(*per_part)):
        normalised = [normalise(t, **norm) for t in texts]
        if not any(normalised):
            empty[i] = True
        # NUL joins parts: "a b" + "c" and "a" + "b c" stay different.
        out += digest("\x00".join(normalised).encode("utf-8", "surrogatepass"))
    if not skip_empty:
        empty[:] = False
    return bytes(out), empty


def group_keys(digests: bytes, empty: np.ndarray) -> np.ndarray:
    """For each row, the index of the first row with the same digest (itself when it is the first
    or is empty)."""
    n = len(empty)
    roots = np.arange(n, dtype=np.int64)
    words = np.frombuffer(digests, dtype="<u8").reshape(-1, 2)
    rows = np.flatnonzero(~empty)
    if len(rows) < 2:
        return roots
    words = words[rows]
    order = np.lexsort((words[:, 1], words[:, 0]))  # stable: equal keys stay in row order
    hi, lo = words[order, 0], words[order, 1]
    starts = np.ones(len(order), dtype=bool)
    starts[1:] = (hi[1:] != hi[:-1]) | (lo[1:] != lo[:-1])
    first = np.maximum.accumulate(np.where(starts, np.arange(len(order)), 0))
    roots[rows[order]] = rows[order[first]]
    return roots


class ExactDedup(CurationOp):
    name = "exact_dedup"
    title = "Exact duplicates"
    summary = "remove rows whose normalised text (case, whitespace, Unicode, optional punctuation) repeats an earlier row"
    category = "dedup"
    config_model = ExactDedupConfig

    def run(self, data: OpInput, config: ExactDedupConfig, ctx: OpContext) -> OpResult:
        parts = as_parts(config.part)
        norm = dict(lowercase=config.lowercase, collapse_whitespace=config.collapse_whitespace,
                    strip_punctuation=config.strip_punctuation, unicode_nfkc=config.unicode_nfkc)
        # Whole chunks per task (not ctx.map_rows' row at a time): texts come column-wise from
        # Arrow and the digests come back as one bytes object per chunk.
        chunks = map_chunks(ctx, data, exact_chunk, "normalise + hash", parts=parts,
                            skip_empty=config.skip_empty, **norm)
        check_cancel(ctx)
        digests = b"".join(c[0] for c in chunks)
        empty = np.concatenate([c[1] for c in chunks]) if chunks else np.zeros(0, dtype=bool)
        roots = group_keys(digests, empty)
        part = parts if len(parts) > 1 else parts[0]
        result, stats = result_from_roots(roots, "exact duplicate", np.ones(len(roots)),
                                          lambda i, root: {"part": part})
        result.report = {**stats, "empty_rows": int(empty.sum()), "part": part,
                         "normalisation": norm}
        return result


__all__ = ["ExactDedup", "ExactDedupConfig", "exact_chunk", "group_keys", "normalise"]
