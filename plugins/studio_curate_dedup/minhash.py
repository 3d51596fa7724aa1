"""``minhash_dedup``: near duplicates by MinHash LSH, implemented with numpy.

Pipeline, all vectorised over a chunk of rows rather than looped per shingle:

1. tokens: pyarrow splits the (NFKC, lower-cased) texts into words (pure-ASCII rows through a
   byte map and a whitespace split, the others with a Unicode regex), or takes code points for
   character shingles; each distinct word is hashed once (xxh3-64) per chunk;
2. shingles: the hash of every n-gram is a position-weighted sum of its token hashes passed
   through the splitmix64 finaliser (a row shorter than ``ngram`` is one shingle);
3. signatures: ``num_perm`` seeded multiply-add permutations of the 64-bit shingle hashes, the
   high 32 bits kept, minimum per row (``np.minimum.reduceat``), in bounded blocks;
4. LSH: ``bands`` x ``rows`` of the signature are hashed to bucket keys; rows sharing a bucket in
   any band are candidate pairs (each bucket member is paired with the bucket's first row and with
   the previous member, which connects the bucket without enumerating all its pairs);
5. verification (optional): pairs whose estimated Jaccard is below the threshold are dropped;
6. union-find over the pairs; the first row of each cluster is kept.

Steps 1-3 run in worker processes over chunks of the memory-mapped Arrow file. The computations
live in :mod:`studio_curate_dedup.minhash_lsh`, which the Ray engine's version
(:mod:`studio_curate_dedup.ray_dedup`) shares.
"""
from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from studio.curation.op_base import CurationOp, OpContext, OpInput, OpResult
from studio_curate_dedup.common import (
    PART_HELP, PartSpec, as_parts, check_cancel, components, map_chunks, parts_validator, range_table,
    result_from_roots,
)
from studio_curate_dedup.minhash_lsh import (  # the names other modules import from here, too
    REASON, band_keys, bucket_pairs, estimated_jaccard, lsh_error_probabilities, lsh_shape, minhash_report,
    near_detail, optimal_bands_rows, signature_options, signatures_of_table, signatures_of_texts, strongest_edge,
    unique_pairs,
)
from studio_curate_dedup.ray_dedup import minhash_on_ray


class MinHashDedupConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    part: PartSpec = Field("all", description=PART_HELP)
    shingle: Literal["word", "char"] = Field(
        "word", description="shingles are n-grams of words, or of characters (better for text "
                            "without spaces between words, e.g. Chinese, and for very short texts)")
    ngram: int = Field(3, ge=1, le=64, description="shingle size: words (or characters) per n-gram")
    num_perm: int = Field(128, ge=8, le=2048, description="number of MinHash permutations (signature length)")
    threshold: float = Field(0.7, gt=0.0, le=1.0,
                             description="Jaccard similarity of shingle sets above which rows are duplicates")
    bands: int | None = Field(None, ge=1, description="LSH bands; with rows, overrides the choice made "
                                                      "from the threshold (bands x rows <= num_perm)")
    rows: int | None = Field(None, ge=1, description="signature rows per LSH band (set with bands)")
    false_positive_weight: float | None = Field(
        None, ge=0.0, description="weight of false positives when choosing bands/rows for the threshold "
                                  "(default 0.1 with verify: a false candidate only costs a signature "
                                  "comparison; 0.5 without, as datasketch)")
    false_negative_weight: float | None = Field(
        None, ge=0.0, description="weight of false negatives when choosing bands/rows for the threshold "
                                  "(default 0.9 with verify, 0.5 without)")
    verify: bool = Field(True, description="keep only candidate pairs whose estimated Jaccard "
                                           "(signature agreement) reaches the threshold")
    lowercase: bool = Field(True, description="lower-case text before shingling")
    unicode_nfkc: bool = Field(True, description="apply Unicode NFKC normalisation before shingling")
    seed: int | None = Field(None, description="seed of the permutations (default: the recipe's seed)")

    _split_parts = parts_validator()

    @model_validator(mode="after")
    def _bands_and_rows(self):
        if (self.bands is None) != (self.rows is None):
            raise ValueError("set both bands and rows, or neither (then the threshold chooses them)")
        if self.bands is not None and self.bands * self.rows > self.num_perm:
            raise ValueError(f"bands x rows = {self.bands * self.rows} exceeds num_perm = {self.num_perm}")
        fp, fn = self.weights()
        if fp + fn <= 0:
            raise ValueError("false_positive_weight + false_negative_weight must be positive")
        return self

    def weights(self) -> tuple[float, float]:
        """(false positive, false negative) weights. datasketch weighs both 0.5, which puts the
        S-curve's midpoint above the threshold (num_perm 128, threshold 0.7: 14 x 9, a pair at
        Jaccard 0.7 becomes a candidate with probability 0.44, at 0.8 with 0.87). Verified
        candidates make false positives cheap, so the default then favours recall (20 x 6: 0.92
        at 0.7, 0.998 at 0.8)."""
        default = (0.1, 0.9) if self.verify else (0.5, 0.5)
        return (default[0] if self.false_positive_weight is None else self.false_positive_weight,
                default[1] if self.false_negative_weight is None else self.false_negative_weight)


def signature_chunk(path: str, lo: int, hi: int, parts: list[str], **options) -> tuple[np.ndarray, np.ndarray]:
    """Worker task: transposed signatures of rows [lo, hi) of the Arrow file (module level: it is
    pickled)."""
    return signatures_of_table(range_table(path, lo, hi), parts, **options)


class MinHashDedup(CurationOp):
    name = "minhash_dedup"
    title = "Near duplicates (MinHash LSH)"
    summary = "remove rows whose word or character n-gram sets overlap an earlier row's above a Jaccard threshold"
    category = "dedup"
    config_model = MinHashDedupConfig

    def run(self, data: OpInput, config: MinHashDedupConfig, ctx: OpContext) -> OpResult:
        n = len(data)
        parts = as_parts(config.part)
        bands, rows = lsh_shape(config)
        seed = ctx.seed if config.seed is None else config.seed
        # num_perm x n x 4 bytes (51 MB per 100k rows at 128), filled in place as chunks arrive;
        # transposed so that each band reads contiguous memory.
        sig = np.empty((config.num_perm, n), dtype=np.uint32)
        shingles = np.zeros(n, dtype=np.int64)

        def consume(lo: int, hi: int, chunk: tuple[np.ndarray, np.ndarray]) -> None:
            sig[:, lo:hi] = chunk[0]
            shingles[lo:hi] = chunk[1]

        map_chunks(ctx, data, signature_chunk, "minhash signatures", consume=consume, parts=parts,
                   **signature_options(config, seed))
        has_text = np.flatnonzero(shingles > 0)

        us, vs = [], []
        for band in range(bands):
            check_cancel(ctx)
            ctx.progress(band, bands, "lsh buckets")
            u, v = bucket_pairs(band_keys(sig, band, rows)[has_text], has_text)
            us.append(u)
            vs.append(v)
        ctx.progress(bands, bands, "lsh buckets")
        u, v = unique_pairs(np.concatenate(us or [np.zeros(0, np.int64)]),
                            np.concatenate(vs or [np.zeros(0, np.int64)]), max(n, 1))
        candidates = len(u)
        check_cancel(ctx)
        sim = estimated_jaccard(sig, u, v)
        if config.verify:
            ok = sim >= config.threshold
            u, v, sim = u[ok], v[ok], sim[ok]
        roots = components(n, u, v)
        check_cancel(ctx)
        dup = np.flatnonzero(roots != np.arange(n))
        to_root = np.ones(n)
        to_root[dup] = estimated_jaccard(sig, dup, roots[dup])
        nearest, nearest_sim = strongest_edge(n, u, v, sim)
        result, stats = result_from_roots(roots, REASON, to_root,
                                          lambda i, root: near_detail(nearest_sim[i], nearest[i], root))
        result.report = minhash_report(stats, config, parts, seed, bands, rows, n - len(has_text),
                                       candidates, len(u))
        return result

    def run_on_ray(self, rows, config: MinHashDedupConfig, ctx):
        """The same result on Ray Data (see :mod:`studio_curate_dedup.ray_dedup`)."""
        return minhash_on_ray(rows, config, ctx)


__all__ = ["MinHashDedup", "MinHashDedupConfig", "lsh_error_probabilities", "optimal_bands_rows",
           "signature_chunk", "signatures_of_texts", "strongest_edge"]
