"""What ``exact_dedup`` computes on either engine: the digest of each row's normalised text, and
the first row of each group of equal digests."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import xxhash

from studio.curation.text import normalise
from studio_curate_dedup.common import part_texts

REASON = "exact duplicate"


def normalisation(config: Any) -> dict[str, bool]:
    """The ``normalise`` options of an ExactDedupConfig (also the report's "normalisation")."""
    return dict(lowercase=config.lowercase, collapse_whitespace=config.collapse_whitespace,
                strip_punctuation=config.strip_punctuation, unicode_nfkc=config.unicode_nfkc)


def exact_digests(table, parts: Sequence[str], skip_empty: bool, **norm: bool) -> tuple[bytes, np.ndarray]:
    """For the rows of an Arrow table with the canonical text columns: (16-byte xxh3-128 digest of
    each row's normalised text, packed; mask of rows with no text, which are never duplicates when
    skip_empty)."""
    per_part = [part_texts(table, part) for part in parts]
    digest = xxhash.xxh3_128_digest
    out = bytearray()
    empty = np.zeros(table.num_rows, dtype=bool)
    for i, texts in enumerate(zip(*per_part)):
        normalised = [normalise(t, **norm) for t in texts]
        if not any(normalised):
            empty[i] = True
        # NUL joins parts: "a b" + "c" and "a" + "b c" stay different.
        out += digest("\x00".join(normalised).encode("utf-8", "surrogatepass"))
    if not skip_empty:
        empty[:] = False
    return bytes(out), empty


def digest_words(digests: bytes) -> np.ndarray:
    """Packed 16-byte digests as an (n, 2) array of uint64 words."""
    return np.frombuffer(digests, dtype="<u8").reshape(-1, 2)


def first_equal(words: np.ndarray) -> np.ndarray:
    """For (n, 2) uint64 keys, the index of the first row with the same key (itself when it is
    the first)."""
    n = len(words)
    if n < 2:
        return np.arange(n, dtype=np.int64)
    order = np.lexsort((words[:, 1], words[:, 0]))  # stable: equal keys stay in row order
    hi, lo = words[order, 0], words[order, 1]
    starts = np.ones(n, dtype=bool)
    starts[1:] = (hi[1:] != hi[:-1]) | (lo[1:] != lo[:-1])
    first = np.maximum.accumulate(np.where(starts, np.arange(n), 0))
    out = np.empty(n, dtype=np.int64)
    out[order] = order[first]
    return out


def group_keys(digests: bytes, empty: np.ndarray) -> np.ndarray:
    """For each row, the index of the first row with the same digest (itself when it is the first
    or is empty)."""
    roots = np.arange(len(empty), dtype=np.int64)
    rows = np.flatnonzero(~empty)
    roots[rows] = rows[first_equal(digest_words(digests)[rows])]
    return roots


def exact_report(stats: dict[str, Any], empty_rows: int, parts: list[str], norm: dict[str, bool]) -> dict[str, Any]:
    return {**stats, "empty_rows": int(empty_rows), "part": parts if len(parts) > 1 else parts[0],
            "normalisation": norm}
