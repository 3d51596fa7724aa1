"""What ``minhash_dedup`` computes on either engine: LSH band choice, MinHash signatures, bucket
keys and candidate pairs, estimated Jaccard, and the report (the pipeline is described in
:mod:`studio_curate_dedup.minhash`)."""
from __future__ import annotations

import sys
from functools import lru_cache
from typing import Any

import numpy as np

from studio_curate_dedup.common import table_texts

REASON = "near duplicate (minhash)"
MAX_HASH32 = np.uint32(0xFFFFFFFF)
# Shingle hashes permuted at once: 16k x 128 perms x 8 bytes = 16 MB.
BLOCK_SHINGLES = 16_384
# Unicode word characters for RE2 (pyarrow's regex engine), where \w is ASCII only.
WORD_SPLIT = r"[^\p{L}\p{N}\p{M}_]+"


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


def signatures_of_table(table, parts: list[str], **options) -> tuple[np.ndarray, np.ndarray]:
    """(transposed signatures (num_perm, rows), shingles per row) of the rows of an Arrow table
    with the canonical text columns."""
    return signatures_of_texts(table_texts(table, parts), transposed=True, **options)


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
    """Pairs connecting every bucket of one band (see :func:`sorted_bucket_pairs`); ``rows_idx``
    ascending, so that the stable sort lists each bucket's members in ascending order and the
    pairs do not depend on how a sort orders equal keys (the Ray engine makes the same pairs)."""
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    return sorted_bucket_pairs(sorted_keys[1:] == sorted_keys[:-1], rows_idx[order])


def sorted_bucket_pairs(same: np.ndarray, members: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairs connecting every bucket: (smallest member, member) and (previous member, member),
    which connect a bucket without enumerating all its pairs. ``members`` lists the buckets one
    after the other, each in ascending order; ``same[i]`` says members[i + 1] is in the bucket
    of members[i]."""
    if not same.any():
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    shared = np.zeros(len(members), dtype=bool)  # positions in buckets of two or more
    shared[1:] |= same
    shared[:-1] |= same
    pos = np.flatnonzero(shared)
    members = members[pos]
    starts = np.ones(len(pos), dtype=bool)
    starts[1:] = ~same[pos[1:] - 1]
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


def strongest_edge(n: int, u: np.ndarray, v: np.ndarray, sim: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each row, its most similar neighbour among the accepted pairs (-1 when none)."""
    nearest = np.full(n, -1, dtype=np.int64)
    best = np.zeros(n)
    nodes, other, s = strongest_edges(u, v, sim)
    nearest[nodes] = other
    best[nodes] = s
    return nearest, best


def strongest_edges(u: np.ndarray, v: np.ndarray, sim: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(nodes, most similar neighbour, its similarity) for every node of the pairs, ascending;
    ties go to the lowest neighbour."""
    return strongest_directed(np.concatenate([u, v]), np.concatenate([v, u]), np.concatenate([sim, sim]))


def strongest_directed(nodes: np.ndarray, other: np.ndarray, s: np.ndarray
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`strongest_edges` of directed edges nodes[i] -> other[i] (each pair listed both ways)."""
    nodes, other, s = nodes.astype(np.int64), other.astype(np.int64), s.astype(np.float64)
    if not len(nodes):
        return nodes, other, s
    order = np.lexsort((other, -s, nodes))  # per node: highest similarity, then lowest index
    nodes, other, s = nodes[order], other[order], s[order]
    firsts = np.concatenate([[True], nodes[1:] != nodes[:-1]])
    return nodes[firsts], other[firsts], s[firsts]


def near_detail(nearest_similarity: float, nearest: int, root: int) -> dict[str, Any]:
    """A removed row's Removal.detail. Its similarity (on the Removal) is to the kept row; when
    the row joined the cluster through another duplicate, its own closest match says how near
    it really is."""
    out: dict[str, Any] = {"nearest_similarity": round(float(nearest_similarity), 4)}
    if nearest != root:
        out["chained"] = True
    return out


def lsh_shape(config: Any) -> tuple[int, int]:
    """(bands, rows per band) of a MinHashDedupConfig: its own, or the best for its threshold."""
    if config.bands is not None:
        return config.bands, config.rows
    return optimal_bands_rows(config.threshold, config.num_perm, *config.weights())


def signature_options(config: Any, seed: int) -> dict[str, Any]:
    """Keyword arguments of :func:`signatures_of_texts` for a MinHashDedupConfig."""
    return dict(shingle=config.shingle, ngram=config.ngram, num_perm=config.num_perm, seed=seed,
                lowercase=config.lowercase, unicode_nfkc=config.unicode_nfkc)


def minhash_report(stats: dict[str, Any], config: Any, parts: list[str], seed: int, bands: int, rows: int,
                   without_shingles: int, candidates: int, verified: int) -> dict[str, Any]:
    fp, fn = _errors_at(config.threshold, bands, rows)
    return {
        **stats, "bands": bands, "rows_per_band": rows, "num_perm": config.num_perm,
        "threshold": config.threshold, "shingle": config.shingle, "ngram": config.ngram,
        "seed": seed, "rows_without_shingles": int(without_shingles),
        "candidate_pairs": int(candidates), "verified_pairs": int(verified) if config.verify else None,
        "false_positive_mass": round(fp, 5), "false_negative_mass": round(fn, 5),
        "candidate_probability_at_threshold": round(float(collision_probability(config.threshold, bands, rows)), 4),
        "part": parts if len(parts) > 1 else parts[0],
    }


def _errors_at(threshold: float, bands: int, rows: int) -> tuple[float, float]:
    fp, fn = _error_masses(threshold, np.array([bands]), np.array([rows]), bands * rows)
    return float(fp[0]), float(fn[0])
