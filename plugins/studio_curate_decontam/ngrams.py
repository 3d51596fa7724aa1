"""The n-gram index of benchmark items and matching one training row against it.

Words are lower-cased runs of letters and digits (punctuation, case and spacing never hide an
overlap). Each word becomes an integer id from the benchmarks' vocabulary; a training word the
benchmarks never use cannot be part of a shared n-gram, so it splits the row into runs and only
runs as long as the shortest gram are looked at.

Items shorter than ``n`` words (many TruthfulQA and MMLU questions) would never match an n-gram,
so with ``short_items`` each such text of at least ``min_short_words`` words is indexed whole, as
one shorter gram. Grams are stored as the hash of their tuple of word ids (integer tuples hash the
same in every process, unlike strings), one table per gram length; a row whose windows share no
hash with a table is dismissed by a single set operation in C, the common case.
"""
from __future__ import annotations

import os
import pickle
import re
from itertools import repeat
from dataclasses import dataclass, field
from typing import Any

from studio.curation.text import row_text

WORD = re.compile(r"[^\W_]+")
# Loaded indexes, per process (pool workers load theirs once, from the pickled file).
_LOADED: dict[str, "NgramIndex"] = {}


def words_of(text: str) -> list[str]:
    return WORD.findall(text.lower())


@dataclass
class NgramIndex:
    n: int
    vocab: dict[str, int] = field(default_factory=dict)
    # gram length -> gram hash -> item ref, or a tuple of refs when several items share the gram
    tables: dict[int, dict[int, Any]] = field(default_factory=dict)
    # Hashes of the first ``shortest`` word ids of every gram: one C-level test dismisses a run for
    # every gram length at once.
    prefixes: set[int] = field(default_factory=set)
    shortest: int = 0
    grams: int = 0


def build_index(items_texts: list[list[str]], n: int, short_items: bool, min_short_words: int,
                max_items_per_ngram: int) -> tuple[NgramIndex, list[int]]:
    """The index over items (each a list of texts) and each item's number of distinct grams."""
    shortest = min(n, min_short_words) if short_items else n
    index = NgramIndex(n=n, shortest=shortest)
    vocab = index.vocab
    prefixes = index.prefixes
    tables: dict[int, dict[int, Any]] = {}
    totals = []
    for ref, texts in enumerate(items_texts):
        own: set[tuple[int, int]] = set()  # (length, hash)
        for text in texts:
            ids = [vocab.setdefault(w, len(vocab)) for w in words_of(text)]
            if len(ids) >= n:
                grams_of = list(zip(*(ids[k:] for k in range(n))))
                own.update((n, hash(g)) for g in grams_of)
                prefixes.update(hash(g[:shortest]) for g in grams_of)
            elif short_items and len(ids) >= min_short_words:
                own.add((len(ids), hash(tuple(ids))))
                prefixes.add(hash(tuple(ids[:shortest])))
        totals.append(len(own))
        for length, h in own:
            table = tables.setdefault(length, {})
            seen = table.get(h)
            if seen is None:
                table[h] = ref
            elif isinstance(seen, int):
                table[h] = (seen, ref)
            elif len(seen) <= max_items_per_ngram:
                table[h] = seen + (ref,)
    for table in tables.values():
        # Grams shared by many items are boilerplate ("which of the following is"), not leakage.
        for h in [h for h, refs in table.items() if isinstance(refs, tuple) and len(refs) > max_items_per_ngram]:
            del table[h]
        index.grams += len(table)
    index.tables = dict(sorted(tables.items(), reverse=True))
    return index, totals


def save_index(index: NgramIndex, path: str) -> None:
    with open(path, "wb") as fh:
        pickle.dump(index, fh, protocol=pickle.HIGHEST_PROTOCOL)
    _LOADED[path] = index


def load_index(path: str) -> NgramIndex:
    index = _LOADED.get(path)
    if index is None:
        # Pool workers outlive a step (the pipeline keeps one pool per run): drop indexes of
        # finished steps, whose files are gone, before loading another.
        for stale in [p for p in _LOADED if not os.path.exists(p)]:
            del _LOADED[stale]
        with open(path, "rb") as fh:
            index = _LOADED[path] = pickle.load(fh)
    return index


def forget_index(path: str) -> None:
    _LOADED.pop(path, None)


def _runs(ids: list[int], shortest: int):
    """Stretches of benchmark-vocabulary words long enough to hold a gram, with their offsets."""
    start, total = 0, len(ids)
    while start < total:
        try:
            end = ids.index(-1, start)
        except ValueError:
            end = total
        if end - start >= shortest:
            yield start, ids[start:end]
        start = end + 1


def match_row(row: dict[str, Any], index_path: str, part: str) -> dict[int, tuple[int, str]] | None:
    """``{item ref: (distinct grams shared, first shared gram as text)}``, or None."""
    index = load_index(index_path)
    if not index.tables:
        return None
    shortest = index.shortest
    prefixes = index.prefixes
    words = words_of(row_text(row, part))
    if len(words) < shortest:
        return None
    ids = list(map(index.vocab.get, words, repeat(-1, len(words))))  # -1: not a benchmark word
    hits: dict[int, dict[int, tuple[int, int]]] | None = None
    for offset, run in _runs(ids, shortest):
        if prefixes.isdisjoint(map(hash, zip(*(run[k:] for k in range(shortest))))):
            continue  # no gram of any length starts anywhere in this run
        for length, table in index.tables.items():
            if len(run) < length:
                continue
            # The common case, no shared gram at all, is decided in C.
            if table.keys().isdisjoint(map(hash, zip(*(run[k:] for k in range(length))))):
                continue
            for i, h in enumerate(map(hash, zip(*(run[k:] for k in range(length))))):
                refs = table.get(h)
                if refs is None:
                    continue
                if hits is None:
                    hits = {}
                for ref in (refs,) if isinstance(refs, int) else refs:
                    hits.setdefault(ref, {}).setdefault(h, (offset + i, length))
    if not hits:
        return None
    out = {}
    for ref, grams in hits.items():
        pos, length = min(grams.values())
        out[ref] = (len(grams), " ".join(words[pos:pos + length]))
    return out
