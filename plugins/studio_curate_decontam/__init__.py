"""Benchmark decontamination: the ``decontaminate`` curation op.

Removes training rows that share word n-grams (13 by default, as in GPT-3's contamination study)
with items of the benchmark files the user names: GSM8K, HumanEval, TruthfulQA and MT-Bench through
their format plugins, MMLU/ARC-shaped or unknown files through a format-agnostic extraction (see
:mod:`studio_curate_decontam.benchmarks`). The index is built once per run, pickled to a temporary
file, and every worker process loads it once.

A row is removed when, for some benchmark item, it shares at least ``min_matches`` distinct grams
and at least ``min_fraction`` of that item's grams. Its removal lists every overlapping item
(benchmark file, item id and row index, shared grams, the first shared gram as text); the report
counts removed rows and leaked items per benchmark.
"""
from __future__ import annotations

import os
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from studio.curation.op_base import CurationOp, OpContext, OpInput, OpResult, Removal
from studio.curation.text import TextPart
from studio.hookspecs import hookimpl
from studio_curate_decontam.benchmarks import benchmark_files, read_benchmark
from studio_curate_decontam.ngrams import build_index, forget_index, match_row, save_index


class DecontamConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    benchmarks: list[str] = Field([], description="benchmark files or folders (JSONL/JSON/CSV/Parquet, .gz too): "
                                              "GSM8K, HumanEval, TruthfulQA, MT-Bench, MMLU/ARC-shaped or any "
                                              "file with question/prompt/choices/answer fields")
    n: int = Field(13, ge=3, le=50, description="n-gram length in words (lower-cased, punctuation ignored)")
    min_matches: int = Field(1, ge=1, description="min distinct n-grams a row must share with one benchmark item")
    min_fraction: float = Field(0.0, ge=0, le=1, description="min share of the item's n-grams the row must contain "
                                                             "(0: any overlap counts)")
    part: TextPart = Field("all", description="text of each training row to compare: all, prompt, response, user, "
                                              "assistant, chosen or rejected")
    include_answers: bool = Field(True, description="index benchmark answers and solutions too, not only questions")
    short_items: bool = Field(True, description="match benchmark texts shorter than n words whole (e.g. short "
                                                "TruthfulQA questions), when they have at least min_short_words")
    min_short_words: int = Field(8, ge=3, description="shortest benchmark text matched whole")
    max_items_per_ngram: int = Field(20, ge=1, description="ignore n-grams shared by more benchmark items than "
                                                           "this (template text, not leakage)")
    formats: dict[str, str] = Field({}, description="format per benchmark path when detection guesses wrong "
                                                    "(a format name, or 'generic' for the field-based extraction)")
    max_matches_in_detail: int = Field(5, ge=1, description="overlapping items listed per removed row")


class Decontaminate(CurationOp):
    name = "decontaminate"
    title = "Benchmark decontamination"
    summary = "remove rows sharing 13-gram overlaps with benchmark files (GSM8K, HumanEval, TruthfulQA, MMLU...)"
    category = "filter"
    config_model = DecontamConfig

    def run(self, data: OpInput, config: DecontamConfig, ctx: OpContext) -> OpResult:
        from studio.plugins import get_host

        if not config.benchmarks:
            raise ValueError("decontaminate needs at least one benchmark file in 'benchmarks'")
        base = Path(ctx.base_dir)
        paths = [Path(p).expanduser() for p in config.benchmarks]
        overrides = {str((p if p.is_absolute() else base / p).resolve()): fmt
                     for p, fmt in ((Path(k).expanduser(), v) for k, v in config.formats.items())}
        files = benchmark_files([p if p.is_absolute() else base / p for p in paths])
        if not files:
            raise ValueError("decontaminate: no benchmark files found in " + ", ".join(config.benchmarks))
        names = _display_names(files)
        formats = get_host().formats()
        items_texts: list[list[str]] = []
        owners: list[tuple[int, str, int]] = []  # (benchmark, item id, row index)
        benchmarks: list[dict[str, Any]] = []
        for b, path in enumerate(files):
            if ctx.cancelled():
                raise InterruptedError("cancelled")
            ctx.progress(b, len(files), f"reading {names[b]}")
            how, items = read_benchmark(path, formats, config.include_answers, overrides.get(str(path.resolve())))
            benchmarks.append({"name": names[b], "path": str(path), "read_as": how, "items": len(items)})
            for item in items:
                items_texts.append(item.texts)
                owners.append((b, item.id, item.index))
        index, totals = build_index(items_texts, config.n, config.short_items, config.min_short_words,
                                    config.max_items_per_ngram)
        fd, index_path = tempfile.mkstemp(prefix="studio-decontam-", suffix=".pkl")
        os.close(fd)
        try:
            save_index(index, index_path)
            found = ctx.map_rows(data, match_row, what="matching benchmark n-grams", index_path=index_path,
                                 part=config.part)
        finally:
            forget_index(index_path)
            os.unlink(index_path)
        return self._result(found, config, owners, totals, benchmarks, index.grams)

    def _result(self, found, config, owners, totals, benchmarks, grams) -> OpResult:
        result = OpResult.keep_all(len(found))
        rows_per_benchmark: Counter = Counter()
        items_hit: dict[int, set[int]] = {}
        for i, hits in enumerate(found):
            if not hits:
                continue
            matches = []
            for ref, (shared, gram) in hits.items():
                fraction = shared / totals[ref] if totals[ref] else 0.0
                if shared >= config.min_matches and fraction >= config.min_fraction:
                    matches.append((shared, fraction, ref, gram))
            if not matches:
                continue
            matches.sort(key=lambda m: (-m[0], -m[1], m[2]))
            for b in {owners[ref][0] for _, _, ref, _ in matches}:
                rows_per_benchmark[b] += 1
            for _, _, ref, _ in matches:
                items_hit.setdefault(owners[ref][0], set()).add(ref)
            best = matches[0]
            result.keep[i] = False
            result.removals[i] = Removal("benchmark overlap", {
                "rule": f"{config.n}-gram overlap",
                "value": best[0],
                "threshold": {"min_matches": config.min_matches, "min_fraction": config.min_fraction},
                "matches": [{"benchmark": benchmarks[owners[ref][0]]["name"], "item": owners[ref][1],
                             "index": owners[ref][2], "ngrams": shared, "fraction": round(fraction, 4),
                             "ngram": gram} for shared, fraction, ref, gram in matches[:config.max_matches_in_detail]],
                "benchmarks_matched": len({owners[ref][0] for _, _, ref, _ in matches}),
                "items_matched": len(matches),
            })
        for b, info in enumerate(benchmarks):
            info["rows_removed"] = rows_per_benchmark.get(b, 0)
            info["items_leaked"] = len(items_hit.get(b, ()))
        result.report = {"rows": len(found), "removed": len(result.removals), "kept": len(found) - len(result.removals),
                         "n": config.n, "ngrams_indexed": grams, "benchmarks": benchmarks}
        return result


def _display_names(files: list[Path]) -> list[str]:
    names = [f.name for f in files]
    if len(set(names)) == len(names):
        return names
    return [str(f) for f in files]


@hookimpl
def register_curation_ops(register):
    register(Decontaminate())
