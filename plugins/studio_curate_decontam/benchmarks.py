"""Reading benchmark files into items: ``(item id, row index, texts)``.

Files the format plugins recognise as benchmarks (gsm8k, humaneval, truthfulqa, mt_bench, or any
other format) are read through them: an item's texts are its user turns (the questions) and, with
``include_answers``, its assistant turns. Files shaped like MMLU or ARC (``choices``, ``answerKey``,
a ``question`` object with a ``stem``), and files no format recognises, go through a small
format-agnostic extraction: question/prompt/stem text, the question followed by its choices, and
answer text. No new format plugin is needed to decontaminate against an odd benchmark file.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from studio.data import containers
from studio.data.reading import DetectionError, apply_column_map, detect

BENCHMARK_SUFFIXES = (".jsonl", ".json", ".ndjson", ".csv", ".parquet", ".pq")
# Passages/contexts are left out on purpose: they are Wikipedia and web text that training data
# legitimately shares; the question is what must not leak.
QUESTION_KEYS = ("question", "prompt", "query", "problem", "instruction", "input", "stem", "sentence", "goal",
                 "Question")
ANSWER_KEYS = ("answer", "answers", "output", "response", "solution", "canonical_solution", "target",
               "best_answer", "Best Answer", "Correct Answers", "reference", "explanation", "rationale")
CHOICE_KEYS = ("choices", "options", "endings", "candidates")
ID_KEYS = ("id", "task_id", "question_id", "qid", "uid", "idx", "ID")
# MMLU's CSV files have no header: question, A, B, C, D, answer letter.
MMLU_COLUMNS = 6


@dataclass
class Item:
    id: str
    index: int
    texts: list[str]


def benchmark_files(paths: list[Path]) -> list[Path]:
    out = []
    for path in paths:
        if path.is_dir():
            out.extend(sorted(p for p in path.rglob("*") if p.is_file() and
                              p.name.lower().removesuffix(".gz").endswith(BENCHMARK_SUFFIXES)))
        elif path.is_file():
            out.append(path)
        else:
            raise FileNotFoundError(f"benchmark file {path} does not exist")
    return out


def _choice_texts(value: Any) -> list[str]:
    if isinstance(value, dict):  # HF ARC: {"text": [...], "label": [...]}
        value = value.get("text", list(value.values()))
    if not isinstance(value, list):
        return []
    texts = []
    for choice in value:
        if isinstance(choice, str):
            texts.append(choice)
        elif isinstance(choice, dict):  # ARC JSONL: {"text": ..., "label": ...}
            text = choice.get("text") or choice.get("value")
            if isinstance(text, str):
                texts.append(text)
    return texts


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []


def generic_texts(row: dict[str, Any], include_answers: bool) -> list[str]:
    """Question/prompt/choices/answer text of any row, whatever its format."""
    questions: list[str] = []
    choices: list[str] = []
    for key in QUESTION_KEYS:
        value = row.get(key)
        if isinstance(value, dict):  # ARC JSONL: {"question": {"stem": ..., "choices": [...]}}
            questions += _strings(value.get("stem") or value.get("text"))
            choices += _choice_texts(value.get("choices"))
        else:
            questions += _strings(value)
    if isinstance(row.get("turns"), list):  # MT-Bench-like
        questions += _strings(row["turns"])
    for key in CHOICE_KEYS:
        choices += _choice_texts(row.get(key))
    # A lettered MMLU-style row: {"question", "A", "B", "C", "D", "answer"}.
    choices += [row[k] for k in ("A", "B", "C", "D", "E") if isinstance(row.get(k), str)]
    texts = list(questions)
    if questions and choices:
        texts.append(" ".join(questions + choices))
    if include_answers:
        for key in ANSWER_KEYS:
            texts += [a for a in _strings(row.get(key)) if len(a.split()) > 1]
    if not texts:  # nothing we know: every string value with a few words in it
        texts = [v for v in row.values() if isinstance(v, str) and len(v.split()) >= 3]
    return texts


def looks_like_choice_benchmark(rows: list[Any]) -> bool:
    """MMLU / ARC / HellaSwag shapes, which the format plugins would misread as prompt files."""
    for row in rows:
        if not isinstance(row, dict):
            continue
        keys = set(row)
        if keys & set(CHOICE_KEYS) or "answerKey" in keys or isinstance(row.get("question"), dict):
            return True
        if {"A", "B", "C", "D"} <= keys:
            return True
    return False


def _item_id(row: Any, index: int) -> str:
    if isinstance(row, dict):
        for key in ID_KEYS:
            if row.get(key) not in (None, ""):
                return str(row[key])
    return f"#{index}"


def _raw_rows(path: Path, container: str | None = None, columns: list[str] | None = None) -> Iterator[tuple[int, Any]]:
    for item in containers.read_rows(path, container, columns):
        if isinstance(item, containers.RawRow):
            yield item.index, item.data


def _headerless_mmlu(path: Path) -> list[Item] | None:
    """MMLU's own CSVs have no header row, which a CSV reader would take for column names."""
    import csv

    if containers.sniff_container(path) != "csv":
        return None
    with containers.open_bytes(path) as fh:
        text = fh.read().decode("utf-8", "replace")
    rows = list(csv.reader(text.splitlines()))
    if not rows or len(rows[0]) != MMLU_COLUMNS or rows[0][-1].strip() not in "ABCDE":
        return None
    items = []
    for i, row in enumerate(rows):
        if len(row) == MMLU_COLUMNS:
            items.append(Item(f"#{i}", i, [row[0], " ".join(row[:5])]))
    return items


def read_benchmark(path: Path, formats: dict[str, Any], include_answers: bool,
                   override: str | None = None) -> tuple[str, list[Item]]:
    """``(how it was read, items)``."""
    if override in (None, "generic"):
        mmlu = _headerless_mmlu(path) if override is None else None
        if mmlu is not None:
            return "generic (MMLU CSV without header)", mmlu
        sample = [row for _, row in zip(range(50), (r for _, r in _raw_rows(path)))]
        if override == "generic" or looks_like_choice_benchmark(sample):
            return "generic", _generic_items(path, include_answers)
    try:
        detection = detect(path, formats, override=override)
    except DetectionError:
        if override is not None:
            raise
        return "generic", _generic_items(path, include_answers)
    fmt = formats[detection.format]
    items = []
    for index, row in _raw_rows(path, detection.container, detection.columns):
        data = apply_column_map(row, detection.column_map)
        if not isinstance(data, dict):
            continue
        try:
            record = fmt.read(data)
        except (ValueError, KeyError, TypeError, AttributeError):
            continue
        turns = list(record.messages) + list(record.chosen or [])
        texts = [t.content for t in turns if t.content and (t.role == "user" or (include_answers and t.role != "system"))]
        if texts:
            items.append(Item(_item_id(data, index), index, texts))
    return detection.format, items


def _generic_items(path: Path, include_answers: bool) -> list[Item]:
    items = []
    for index, row in _raw_rows(path):
        if isinstance(row, dict):
            texts = generic_texts(row, include_answers)
            if texts:
                items.append(Item(_item_id(row, index), index, texts))
    return items
