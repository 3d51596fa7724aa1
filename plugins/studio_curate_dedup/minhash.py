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

Steps 1-3 run in worker processes over chunks of the memory-mapped Arrow file.
"""
from __future__ import annotations

import sys
from functools import lru_cache
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from studio.curation.op_base import CurationOp, OpContext, OpInput, OpResult
from studio_curate_dedup.common import (
    PART_HELP, PartSpec, as_parts, check_cancel, components, map_chunks, parts_validator,
    result_from_roots, texts_of_range,
)

MAX_HASH32 = np.uint32(0xFFFFFFFF)
# Shingle hashes permuted at once: 16k x 128 perms x 8 bytes = 16 MB.
BLOCK_SHINGLES = 16_384
# Unicode word characters for RE2 (pyarrow's regex engine), where \w is ASCII only.
WORD_SPLIT = r"[^\p{L}\p{N}\p{M}_]+"


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


# --- choosing bands and rows ------------------------------------------------------------------

def _error_masses(threshold: float, bands: np.ndarray, rows: np.ndarray, degree: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """False-positive mass (integral over s in [0, threshold] of the probability that a pair of
    similarity s shares a bucket, 1 - (1 - s^r)^b) and false-negative mass (integral over
    [threshold, 1] of (1 - s^r)^b) for each (bands, rows).

    Both integrands are polynomials of degree b*r <= degree, so Gauss-Legendre quadrature with
    degree/2 + 1 nodes integrates them exactly (datasketch calls scipy's adaptive quad per pair)."""
    nodes, weights = np.polynomial.legendre.leggauss(degree // 2 + 2)
    bands = np.asarray(bands, dtype=np.float64)[:, None]
    rows = np.asarray(rows, dtype=np.float64)[:, None]

    def integral(lo: float, hi: float, false_negative: bool) -> np.ndarray:
        if hi <= lo:
            return np.zeros(len(bands))
        s = (hi - lo) / 2 * nodes[None, :] + (hi + lo) / 2
        miss = (1.0 - s ** rows) ** bands  # P(no band shared)
        f = miss if false_negative else 1.0 - miss
        return (f * weights[None, :]).sum(axis=1) * (hi - lo) / 2

    return integral(0.0, threshold, False), integral(threshold, 1.0, True)


def lsh_error_probabilities(threshold: float, num_perm: int
                            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(bands, rows, fp, fn) for every bands * rows <= num_perm, in datasketch's search order
    (bands ascending, then rows)."""
    pairs = [(b, r) for b in range(1, num_perm + 1) for r in range(1, num_perm // b + 1)]
    bands = np.array([p[0] for p in pairs])
    rows = np.array([p[1] for p in pairs])
    fp, fn = _error_masses(threshold, bands, rows, num_perm)
    return bands, rows, fp, fn


@lru_cache(maxsize=64)
def optimal_bands_rows(threshold: float, num_perm: int, false_positive_weight: float = 0.5,
                       false_negative_weight: float = 0.5) -> tuple[int, int]:
    """(bands, rows) minimising fp_weight * FP + fn_weight * FN, as datasketch's
    ``_optimal_param`` (first minimum in the same search order)."""
    bands, rows, fp, fn = lsh_error_probabilities(threshold, num_perm)
    error = fp * false_positive_weight + fn * false_negative_weight
    best = int(np.argmin(error))
    return int(bands[best]), int(rows[best])


def collision_probability(similarity: float | np.ndarray, bands: int, rows: int):
    """Probability that two rows with this Jaccard similarity become a candidate pair."""
    return 1.0 - (1.0 - np.asarray(similarity, dtype=np.float64) ** rows) ** bands


# --- hashing ----------------------------------------------------------------------------------

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser (a bijection of uint64 with full avalanche), in place."""
    x ^= x >> np.uint64(30)
    x *= _M1
    x ^= x >> np.uint64(27)
    x *= _M2
    x ^= x >> np.uint64(31)
    return x


@lru_cache(maxsize=8)
def ngram_weights(n: int) -> np.ndarray:
    """Odd 64-bit multipliers, one per n-gram position (fixed: shingle hashes must not depend on
    the permutation seed, so that two runs agree on what a shingle is)."""
    rng = np.random.Generator(np.random.PCG64(0x5EED_5A1E))
    return rng.integers(0, 2**63, size=n, dtype=np.uint64) * np.uint64(2) + np.uint64(1)


@lru_cache(maxsize=8)
def permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(a, b) of the permutations h -> (a*h + b) mod 2^64, whose high 32 bits are compared;
    a is odd so each is a bijection of the 64-bit shingle hashes."""
    rng = np.random.Generator(np.random.PCG64(seed))
    a = rng.integers(0, 2**63, size=num_perm, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    b = rng.integers(0, 2**64 - 1, size=num_perm, dtype=np.uint64, endpoint=True)
    return a, b


@lru_cache(maxsize=2)
def _ascii_word_table(lowercase: bool) -> bytes:
    """``bytes.translate`` table for ASCII text: word characters [A-Za-z0-9_] stay (A-Z
    lower-cased when asked), every other ASCII byte becomes a space; bytes >= 0x80 are untouched
    (the table is only used on rows that have none)."""
    table = bytearray(b" " * 128 + bytes(range(128, 256)))
    for c in b"0123456789_abcdefghijklmnopqrstuvwxyz":
        table[c] = c
    for c in b"ABCDEFGHIJKLMNOPQRSTUVWXYZ":
        table[c] = c + 32 if lowercase else c
    return bytes(table)


def _word_tokens(arr, lowercase: bool, unicode_nfkc: bool):
    """(flat tokens, row of each token) of a large_string array.

    The Unicode rule (split on anything but letters, digits, marks and "_", by RE2) costs ~15 ns a
    character; rows that are pure ASCII (most English data) get the same tokens from a byte map
    and a whitespace split at a fraction of that."""
    import pyarrow as pa
    import pyarrow.compute as pc

    def by_regex(a):
        if unicode_nfkc:
            a = pc.utf8_normalize(a, form="NFKC")
        if lowercase:
            a = pc.utf8_lower(a)
        return pc.split_pattern_regex(a, pattern=WORD_SPLIT)

    def by_bytes(a):
        validity, offsets, data = a.buffers()
        mapped = data.to_pybytes().translate(_ascii_word_table(lowercase)) if data is not None else b""
        a = pa.LargeStringArray.from_buffers(len(a), offsets, pa.py_buffer(mapped), validity, offset=a.offset)
        return pc.ascii_split_whitespace(a)

    def flatten(lists, rows):
        flat = pc.list_flatten(lists)
        parents = np.asarray(pc.list_parent_indices(lists).to_numpy(zero_copy_only=False), dtype=np.int64)
        keep = np.asarray(pc.greater(pc.binary_length(flat), 0).to_numpy(zero_copy_only=False), dtype=bool)
        return flat.filter(pa.array(keep)), rows[parents[keep]]

    rows = np.arange(len(arr))
    ascii_rows = np.asarray(pc.string_is_ascii(arr).to_numpy(zero_copy_only=False), dtype=bool)
    if ascii_rows.all():
        return flatten(by_bytes(arr), rows)
    if not ascii_rows.any():
        return flatten(by_regex(arr), rows)
    mask = pa.array(ascii_rows)
    fast, fast_rows = flatten(by_bytes(arr.filter(mask)), rows[ascii_rows])
    slow, slow_rows = flatten(by_regex(arr.filter(pc.invert(mask))), rows[~ascii_rows])
    parents = np.concatenate([fast_rows, slow_rows])
    order = np.argsort(parents, kind="stable")  # back to row order, tokens in text order
    return pa.concat_arrays([fast, slow]).take(pa.array(order)), parents[order]


def token_hashes(texts, shingle: str, lowercase: bool, unicode_nfkc: bool) -> tuple[np.ndarray, np.ndarray]:
    """(uint64 hash of every token, tokens per row) of a list or Arrow array of texts: words
    (runs of letters, digits, marks and "_") or code points (whitespace runs count as one space)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import xxhash

    arr = texts if isinstance(texts, pa.Array) else pa.array(texts, type=pa.large_string())
    if arr.type != pa.large_string():
        arr = arr.cast(pa.large_string())
    n = len(arr)
    if shingle == "char":
        if unicode_nfkc:
            arr = pc.utf8_normalize(arr, form="NFKC")
        if lowercase:
            arr = pc.utf8_lower(arr)
        arr = pc.utf8_trim_whitespace(pc.replace_substring_regex(arr, pattern=r"\s+", replacement=" "))
        counts = np.asarray(pc.utf8_length(arr).to_numpy(zero_copy_only=False), dtype=np.int64)
        joined = "".join(arr.to_pylist())
        points = np.frombuffer(joined.encode("utf-32-le", "surrogatepass"), dtype="<u4").astype(np.uint64)
        return mix64(points + np.uint64(0x9E3779B97F4A7C15)), counts
    flat, parents = _word_tokens(arr, lowercase, unicode_nfkc)
    counts = np.bincount(parents, minlength=n).astype(np.int64)
    if len(flat) == 0:
        return np.zeros(0, dtype=np.uint64), counts
    # Hash each distinct word once per chunk (by its UTF-8 bytes: deterministic across runs).
    encoded = pc.dictionary_encode(flat)
    vocab = np.fromiter((xxhash.xxh3_64_intdigest(w.encode("utf-8")) for w in encoded.dictionary.to_pylist()),
                        dtype=np.uint64, count=len(encoded.dictionary))
    return vocab[encoded.indices.to_numpy(zero_copy_only=False)], counts


def shingle_hashes(tokens: np.ndarray, counts: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(uint64 hash of every n-gram of every row, n-grams per row). A row with fewer than n tokens
    gives one shingle of all its tokens; a row with none gives none."""
    total = len(tokens)
    counts = counts.astype(np.int64)
    if total == 0:
        return np.zeros(0, dtype=np.uint64), np.zeros(len(counts), dtype=np.int64)
    ends = np.cumsum(counts)
    starts = ends - counts
    row_of = np.repeat(np.arange(len(counts)), counts)
    room = ends[row_of] - np.arange(total)  # tokens from this position to the row's end
    weights = ngram_weights(n)
    acc = tokens * weights[0]
    for j in range(1, n):
        term = np.zeros(total, dtype=np.uint64)
        term[: total - j] = tokens[j:] * weights[j]
        term[room <= j] = 0
        acc += term
    first = np.zeros(total, dtype=bool)
    first[starts[counts > 0]] = True
    keep = (room >= n) | (first & (counts[row_of] < n))
    return mix64(acc[keep]), np.bincount(row_of[keep], minlength=len(counts)).astype(np.int64)


def minhash_signatures(shingles: np.ndarray, counts: np.ndarray, a: np.ndarray, b: np.ndarray,
                       block: int = BLOCK_SHINGLES) -> np.ndarray:
    """MinHash signatures, transposed: (num_perm, rows) uint32, each permutation's values
    contiguous; rows without shingles get all 0xFFFFFFFF.

    The permuted hashes are laid out (num_perm, shingles) so that the per-row minimum
    (``reduceat`` over each row's run of shingles) runs along contiguous memory: ten times faster
    than reducing along the other axis."""
    rows = len(counts)
    sig_t = np.full((len(a), rows), MAX_HASH32, dtype=np.uint32)
    offsets = np.zeros(rows + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    total = int(offsets[-1])
    little = sys.byteorder == "little"
    product = np.empty((len(a), min(block, max(total, 1))), dtype=np.uint64)
    a_col, b_col = a[:, None], b[:, None]
    for s0 in range(0, total, block):
        s1 = min(total, s0 + block)
        m = product[:, : s1 - s0]
        np.multiply(a_col, shingles[None, s0:s1], out=m)
        m += b_col
        high = m.view(np.uint32)[:, 1::2] if little else (m >> np.uint64(32)).astype(np.uint32)
        # rows that have shingles inside [s0, s1)
        r0 = int(np.searchsorted(offsets[1:], s0, side="right"))
        r1 = int(np.searchsorted(offsets[:-1], s1, side="left"))
        idx = np.arange(r0, r1)
        idx = idx[counts[idx] > 0]
        seg = np.maximum(offsets[idx], s0) - s0
        mins = np.minimum.reduceat(high, seg, axis=1)
        # a row spanning two blocks keeps the smaller of its two partial minima
        sig_t[:, idx] = np.minimum(sig_t[:, idx], mins)
    return sig_t


def signatures_of_texts(texts, shingle: str, ngram: int, num_perm: int, seed: int,
                        lowercase: bool = True, unicode_nfkc: bool = True, transposed: bool = False
                        ) -> tuple[np.ndarray, np.ndarray]:
    """(signatures (rows, num_perm), or (num_perm, rows) when transposed; shingles per row)."""
    tokens, counts = token_hashes(texts, shingle, lowercase, unicode_nfkc)
    shingles, per_row = shingle_hashes(tokens, counts, ngram)
    a, b = permutations(num_perm, seed)
    sig_t = minhash_signatures(shingles, per_row, a, b)
    return (sig_t if transposed else sig_t.T), per_row


def signature_chunk(path: str, lo: int, hi: int, parts: list[str], **options) -> tuple[np.ndarray, np.ndarray]:
    """Worker task: transposed signatures of rows [lo, hi) of the Arrow file (module level: it is
    pickled)."""
    return signatures_of_texts(texts_of_range(path, lo, hi, parts), transposed=True, **options)


# --- LSH --------------------------------------------------------------------------------------

def band_keys(sig_t: np.ndarray, band: int, rows: int) -> np.ndarray:
    """A 64-bit bucket key per row for this band, from the transposed (num_perm, rows) signatures
    (each permutation's values contiguous): a weighted sum of the already random 32-bit values,
    mixed once. A rare key collision only costs a verification."""
    weights = ngram_weights(rows)
    key = np.full(sig_t.shape[1], ((band + 1) * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF, dtype=np.uint64)
    for j in range(rows):
        key += sig_t[band * rows + j].astype(np.uint64) * weights[j]
    return mix64(key)


def bucket_pairs(keys: np.ndarray, rows_idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairs connecting every bucket: (smallest member, member) and (neighbour, member) in the
    sorted order, which connect a bucket without enumerating all its pairs."""
    order = np.argsort(keys)  # introsort: deterministic, faster than a stable sort
    sorted_keys = keys[order]
    same = sorted_keys[1:] == sorted_keys[:-1]
    if not same.any():
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    shared = np.zeros(len(order), dtype=bool)  # positions in buckets of two or more
    shared[1:] |= same
    shared[:-1] |= same
    pos = np.flatnonzero(shared)
    members = rows_idx[order[pos]]
    group_keys = sorted_keys[pos]
    starts = np.ones(len(pos), dtype=bool)
    starts[1:] = group_keys[1:] != group_keys[:-1]
    group = np.cumsum(starts) - 1
    smallest = np.minimum.reduceat(members, np.flatnonzero(starts))[group]
    chained = ~starts
    u = np.concatenate([smallest, members[np.flatnonzero(chained) - 1]])
    v = np.concatenate([members, members[chained]])
    distinct = u != v
    return u[distinct], v[distinct]


def unique_pairs(u: np.ndarray, v: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = np.minimum(u, v), np.maximum(u, v)
    code = np.unique(lo.astype(np.int64) * n + hi)
    return code // n, code % n


def estimated_jaccard(sig_t: np.ndarray, u: np.ndarray, v: np.ndarray, block: int = 65_536) -> np.ndarray:
    """Share of equal signature values of each pair (u[i], v[i]); sig_t is (num_perm, rows)."""
    out = np.empty(len(u), dtype=np.float64)
    for s in range(0, len(u), block):
        uu, vv = u[s:s + block], v[s:s + block]
        equal = np.zeros(len(uu), dtype=np.int64)
        for row in sig_t:
            equal += row[uu] == row[vv]
        out[s:s + block] = equal / len(sig_t)
    return out


class MinHashDedup(CurationOp):
    name = "minhash_dedup"
    title = "Near duplicates (MinHash LSH)"
    summary = "remove rows whose word or character n-gram sets overlap an earlier row's above a Jaccard threshold"
    category = "dedup"
    config_model = MinHashDedupConfig

    def run(self, data: OpInput, config: MinHashDedupConfig, ctx: OpContext) -> OpResult:
        n = len(data)
        parts = as_parts(config.part)
        if config.bands is not None:
            bands, rows = config.bands, config.rows
        else:
            bands, rows = optimal_bands_rows(config.threshold, config.num_perm, *config.weights())
        seed = ctx.seed if config.seed is None else config.seed
        options = dict(shingle=config.shingle, ngram=config.ngram, num_perm=config.num_perm, seed=seed,
                       lowercase=config.lowercase, unicode_nfkc=config.unicode_nfkc)
        # num_perm x n x 4 bytes (51 MB per 100k rows at 128), filled in place as chunks arrive;
        # transposed so that each band reads contiguous memory.
        sig = np.empty((config.num_perm, n), dtype=np.uint32)
        shingles = np.zeros(n, dtype=np.int64)

        def consume(lo: int, hi: int, chunk: tuple[np.ndarray, np.ndarray]) -> None:
            sig[:, lo:hi] = chunk[0]
            shingles[lo:hi] = chunk[1]

        map_chunks(ctx, data, signature_chunk, "minhash signatures", consume=consume, parts=parts, **options)
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

        def detail(i: int, root: int) -> dict[str, Any]:
            # similarity (on the Removal) is to the kept row; when the row joined the cluster
            # through another duplicate, its own closest match says how near it really is.
            out: dict[str, Any] = {"nearest_similarity": round(float(nearest_sim[i]), 4)}
            if nearest[i] != root:
                out["chained"] = True
            return out

        result, stats = result_from_roots(roots, "near duplicate (minhash)", to_root, detail)
        fp, fn = _errors_at(config.threshold, bands, rows)
        result.report = {
            **stats, "bands": bands, "rows_per_band": rows, "num_perm": config.num_perm,
            "threshold": config.threshold, "shingle": config.shingle, "ngram": config.ngram,
            "seed": seed, "rows_without_shingles": int(n - len(has_text)),
            "candidate_pairs": int(candidates), "verified_pairs": int(len(u)) if config.verify else None,
            "false_positive_mass": round(fp, 5), "false_negative_mass": round(fn, 5),
            "candidate_probability_at_threshold": round(float(collision_probability(config.threshold, bands, rows)), 4),
            "part": parts if len(parts) > 1 else parts[0],
        }
        return result


def strongest_edge(n: int, u: np.ndarray, v: np.ndarray, sim: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each row, its most similar neighbour among the accepted pairs (-1 when none)."""
    nodes = np.concatenate([u, v])
    other = np.concatenate([v, u])
    s = np.concatenate([sim, sim])
    nearest = np.full(n, -1, dtype=np.int64)
    best = np.zeros(n)
    if len(nodes):
        order = np.lexsort((other, -s, nodes))  # per node: highest similarity, then lowest index
        nodes, other, s = nodes[order], other[order], s[order]
        firsts = np.concatenate([[True], nodes[1:] != nodes[:-1]])
        nearest[nodes[firsts]] = other[firsts]
        best[nodes[firsts]] = s[firsts]
    return nearest, best


def _errors_at(threshold: float, bands: int, rows: int) -> tuple[float, float]:
    fp, fn = _error_masses(threshold, np.array([bands]), np.array([rows]), bands * rows)
    return float(fp[0]), float(fn[0])
