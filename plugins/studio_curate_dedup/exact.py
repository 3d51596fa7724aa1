"""``exact_dedup``: rows whose normalised text is identical; the first occurrence is kept.

Texts are read column-wise from the Arrow file, normalised and hashed (xxh3-128) in worker
processes; grouping the 128-bit keys is one numpy lexsort."""
from __future__ import annotations


import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from studio.curation.op_base import CurationOp, OpContext, OpInput, OpResult
from studio.curation.text import normalise
from studio_curate_dedup.common import (
    PART_HELP, PartSpec, as_parts, check_cancel, map_chunks, parts_validator, range_table,
    result_from_roots,
)
from studio_curate_dedup.exact_keys import REASON, exact_digests, exact_report, group_keys, normalisation
from studio_curate_dedup.ray_dedup import exact_on_ray


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
    """Worker task: :func:`exact_digests` of rows [lo, hi) of the Arrow file (module level: it
    is pickled into worker processes)."""
    return exact_digests(range_table(path, lo, hi), parts, skip_empty, **norm)


class ExactDedup(CurationOp):
    name = "exact_dedup"
    title = "Exact duplicates"
    summary = "remove rows whose normalised text (case, whitespace, Unicode, optional punctuation) repeats an earlier row"
    category = "dedup"
    config_model = ExactDedupConfig

    def run(self, data: OpInput, config: ExactDedupConfig, ctx: OpContext) -> OpResult:
        parts = as_parts(config.part)
        norm = normalisation(config)
        # Whole chunks per task (not ctx.map_rows' row at a time): texts come column-wise from
        # Arrow and the digests come back as one bytes object per chunk.
        chunks = map_chunks(ctx, data, exact_chunk, "normalise + hash", parts=parts,
                            skip_empty=config.skip_empty, **norm)
        check_cancel(ctx)
        digests = b"".join(c[0] for c in chunks)
        empty = np.concatenate([c[1] for c in chunks]) if chunks else np.zeros(0, dtype=bool)
        roots = group_keys(digests, empty)
        part = parts if len(parts) > 1 else parts[0]
        result, stats = result_from_roots(roots, REASON, np.ones(len(roots)),
                                          lambda i, root: {"part": part})
        result.report = exact_report(stats, int(empty.sum()), parts, norm)
        return result

    def run_on_ray(self, rows, config: ExactDedupConfig, ctx):
        """The same result on Ray Data (see :mod:`studio_curate_dedup.ray_dedup`)."""
        return exact_on_ray(rows, config, ctx)


__all__ = ["ExactDedup", "ExactDedupConfig", "exact_chunk", "group_keys", "normalise"]
