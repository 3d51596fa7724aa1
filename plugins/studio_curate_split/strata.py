"""Seeded orders of rows, optionally stratified, and what to stratify by.

A stratified order interleaves the strata evenly: each row's key is its (random) rank inside its
stratum plus a per-stratum random offset, divided by the stratum's size. Any consecutive slice of
that order then holds every stratum in proportion (within one row per stratum), so one order
serves splits of any sizes, fractions or counts, and samples of any size.
"""
from __future__ import annotations

import json
import zlib
from typing import Any

import numpy as np

NO_VALUE = "(none)"


def stratum_values(table, key: str) -> list[str]:
    """The value of ``key`` per row: ``kind``, ``label``, ``tools`` (has tools or not), a meta field
    (``category`` or ``meta.category``)."""
    if key in ("kind", "label"):
        return [NO_VALUE if v is None else str(v).lower() for v in table.column(key).to_pylist()]
    if key == "tools":
        return ["tools" if v else "no tools" for v in table.column("tools").to_pylist()]
    field = key[5:] if key.startswith("meta.") else key
    out = []
    for raw in table.column("meta").to_pylist():
        value = json.loads(raw).get(field) if raw else None
        out.append(NO_VALUE if value is None else value if isinstance(value, str) else json.dumps(value, sort_keys=True))
    return out


def rng_for(seed: int, *names: str) -> np.random.Generator:
    """A generator that depends on the seed and on names (not on call order)."""
    return np.random.default_rng([seed & 0xFFFFFFFF, *(zlib.crc32(n.encode()) for n in names)])


def seeded_order(n: int, seed: int, strata: list[str] | None = None) -> np.ndarray:
    rng = rng_for(seed, "order")
    perm = rng.permutation(n)
    if strata is None or n == 0:
        return perm
    names, codes = np.unique(np.asarray(strata, dtype=object).astype(str), return_inverse=True)
    codes = codes[perm]
    sizes = np.bincount(codes, minlength=len(names))
    by_code = np.argsort(codes, kind="stable")
    starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    rank = np.empty(n, dtype=np.float64)
    rank[by_code] = np.arange(n) - starts[codes[by_code]]
    offsets = rng.random(len(names))
    key = (rank + offsets[codes]) / sizes[codes]
    return perm[np.argsort(key, kind="stable")]


def allocate(n: int, sizes: dict[str, Any]) -> dict[str, int]:
    """Row counts per name: ints are counts, floats fractions of ``n`` (largest remainder, so
    fractions summing to 1 cover every row exactly)."""
    counts = {name: int(v) for name, v in sizes.items() if isinstance(v, int)}
    fractions = {name: float(v) for name, v in sizes.items() if not isinstance(v, int)}
    if sum(counts.values()) > n:
        raise ValueError(f"split counts add up to {sum(counts.values())} rows but there are only {n}")
    if sum(fractions.values()) > 1 + 1e-9:
        raise ValueError(f"split fractions add up to {sum(fractions.values()):.4f}, more than 1")
    if fractions:
        wanted = {name: f * n for name, f in fractions.items()}
        target = min(n - sum(counts.values()), round(sum(wanted.values())))
        floors = {name: int(np.floor(w)) for name, w in wanted.items()}
        spare = target - sum(floors.values())
        if spare < 0:
            raise ValueError(f"split counts and fractions together need more than the {n} rows there are")
        for name in sorted(wanted, key=lambda k: (-(wanted[k] - floors[k]), list(sizes).index(k)))[:max(spare, 0)]:
            floors[name] += 1
        counts.update(floors)
    return {name: counts[name] for name in sizes}
