"""Reading ARC, HellaSwag, MMLU and TruthfulQA files into :class:`~studio_eval_choice.prompts.Doc` s.

Every bad row becomes an :class:`EvalDataError` naming file, line and field, kept in
``Loaded.skipped`` while the good rows load. Accepted shapes:

* ARC JSONL: ``{id, question: {stem, choices: [{text, label}]}, answerKey}`` (AI2's files) or the
  flat Hugging Face rows ``{id, question, choices: {text, label}, answerKey}``; letter or digit labels.
* HellaSwag JSONL: ``{activity_label, ctx_a, ctx_b, ctx, endings, label}`` (``ind`` names the item).
* MMLU CSV without a header: ``question,A,B,C,D,answer`` (answer a letter), one file per subject
  named ``SUBJECT_SPLIT.csv``.
* TruthfulQA MC, JSON or JSONL: ``{question, mc1_targets: {choices, labels}, mc2_targets: {...}}``
  (lm-eval's and Hugging Face's shape), or the original ``mc_task.json`` where each target set is
  ``{answer text: 1 or 0}``. Also the TruthfulQA CSV (Question, Best Answer, Correct Answers,
  Incorrect Answers, answers separated by ";"): MC1 is the best answer followed by the incorrect
  answers, MC2 the correct answers followed by the incorrect ones. That is the MC1/MC2 construction
  the TruthfulQA authors describe; their released ``mc_task.json`` has its own, longer answer lists,
  so scores from the CSV are not comparable with scores from the MC JSON.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from studio.data.containers import BrokenRow, read_rows
from studio.evaluation.base import EvalDataError

from studio_eval_choice.prompts import (
    MMLU_LETTERS, Doc, arc_query, hellaswag_preprocess, hellaswag_query, mmlu_query, truthfulqa_query,
)


class RowError(ValueError):
    def __init__(self, field_name: str | None, message: str):
        super().__init__(message)
        self.field, self.message = field_name, message


@dataclass
class Loaded:
    docs: list[Doc] = field(default_factory=list)
    skipped: list[EvalDataError] = field(default_factory=list)

    def extend(self, other: Loaded) -> None:
        self.docs += other.docs
        self.skipped += other.skipped


def _key(row: Any) -> str:
    return json.dumps(row, sort_keys=True, ensure_ascii=False)


def _text(row: dict, name: str, where: str | None = None) -> str:
    value = row.get(name)
    label = where or name
    if value is None:
        raise RowError(label, "missing")
    if not isinstance(value, str):
        raise RowError(label, f"expected a string, got {type(value).__name__}")
    return value


def _texts(value: Any, name: str, *, minimum: int = 2) -> list[str]:
    if value is None:
        raise RowError(name, "missing")
    if not isinstance(value, list):
        raise RowError(name, f"expected a list, got {type(value).__name__}")
    for i, v in enumerate(value):
        if not isinstance(v, str):
            raise RowError(f"{name}[{i}]", f"expected a string, got {type(v).__name__}")
    if len(value) < minimum:
        raise RowError(name, f"expected at least {minimum} choices, got {len(value)}")
    return value


def _unique_id(wanted: str, seen: set[str], line: int | None) -> str:
    ident = wanted if wanted not in seen else f"{wanted}#line{line}"
    seen.add(ident)
    return ident


def _read_records(path: Path, parse: Callable[[dict, int | None, int], Doc]) -> Loaded:
    """Parse each row of a JSON, JSONL or CSV file, keeping the rows that fail as errors."""
    loaded = Loaded()
    if not path.is_file():
        raise EvalDataError(path, None, None, "no such file")
    for item in read_rows(path):
        if isinstance(item, BrokenRow):
            loaded.skipped.append(EvalDataError(path, item.line, None, item.message))
            continue
        if not isinstance(item.data, dict):
            loaded.skipped.append(EvalDataError(path, item.line, None,
                                                f"expected an object per row, got {type(item.data).__name__}"))
            continue
        try:
            loaded.docs.append(parse(item.data, item.line, item.index))
        except RowError as exc:
            loaded.skipped.append(EvalDataError(path, item.line, exc.field, exc.message))
    return loaded


# --- ARC ----------------------------------------------------------------------------------------


def read_arc(path: Path) -> Loaded:
    seen: set[str] = set()

    def parse(row: dict, line: int | None, index: int) -> Doc:
        question = row.get("question")
        if isinstance(question, dict):  # AI2's own JSONL
            stem = _text(question, "stem", "question.stem")
            raw_choices = question.get("choices")
            if not isinstance(raw_choices, list):
                raise RowError("question.choices", "missing" if raw_choices is None else "expected a list")
            texts, labels = [], []
            for i, choice in enumerate(raw_choices):
                if not isinstance(choice, dict):
                    raise RowError(f"question.choices[{i}]", "expected an object with text and label")
                texts.append(_text(choice, "text", f"question.choices[{i}].text"))
                labels.append(_label(choice.get("label"), f"question.choices[{i}].label"))
            choices_field = "question.choices"
        else:  # the flat Hugging Face rows
            stem = _text(row, "question")
            raw_choices = row.get("choices")
            if not isinstance(raw_choices, dict):
                raise RowError("choices", "missing" if raw_choices is None else "expected {text: [...], label: [...]}")
            texts = _texts(raw_choices.get("text"), "choices.text")
            raw_labels = raw_choices.get("label")
            if not isinstance(raw_labels, list) or len(raw_labels) != len(texts):
                raise RowError("choices.label", "expected one label per choice")
            labels = [_label(v, f"choices.label[{i}]") for i, v in enumerate(raw_labels)]
            choices_field = "choices"
        if len(texts) < 2:
            raise RowError(choices_field, f"expected at least 2 choices, got {len(texts)}")
        if len(set(labels)) != len(labels):
            raise RowError(choices_field, f"labels repeat: {labels}")
        answer = _label(row.get("answerKey"), "answerKey")
        if answer not in labels:
            raise RowError("answerKey", f"{answer!r} is none of the choice labels {labels}")
        ident = row.get("id")
        ident = str(ident) if isinstance(ident, (str, int)) else f"line{line}"
        return Doc(id=_unique_id(ident, seen, line), query=arc_query(stem), choices=texts,
                   gold=labels.index(answer), where=f"{path}:{line}", key=_key(row))

    return _read_records(path, parse)


def _label(value: Any, name: str) -> str:
    if isinstance(value, bool) or value is None:
        raise RowError(name, "missing" if value is None else "expected a letter or a digit")
    if isinstance(value, int):
        return str(value)
    if not isinstance(value, str) or not value.strip():
        raise RowError(name, "expected a letter or a digit")
    return value


# --- HellaSwag ----------------------------------------------------------------------------------


def read_hellaswag(path: Path) -> Loaded:
    seen: set[str] = set()

    def parse(row: dict, line: int | None, index: int) -> Doc:
        activity = _text(row, "activity_label")
        ctx_a = _text(row, "ctx_a")
        ctx_b = _text(row, "ctx_b")
        endings = _texts(row.get("endings"), "endings")
        label = row.get("label")
        if isinstance(label, str) and label.strip().isdigit():
            gold = int(label)
        elif isinstance(label, int) and not isinstance(label, bool):
            gold = label
        else:
            raise RowError("label", "missing (HellaSwag's test split has no labels)" if label in (None, "")
                           else f"expected the index of the right ending, got {label!r}")
        if not 0 <= gold < len(endings):
            raise RowError("label", f"{gold} is not an index of the {len(endings)} endings")
        ident = row.get("ind")
        ident = str(ident) if isinstance(ident, (str, int)) and not isinstance(ident, bool) else f"line{line}"
        return Doc(id=_unique_id(ident, seen, line), query=hellaswag_query(activity, ctx_a, ctx_b),
                   choices=[hellaswag_preprocess(e) for e in endings], gold=gold, where=f"{path}:{line}",
                   key=_key(row))

    return _read_records(path, parse)


# --- MMLU ---------------------------------------------------------------------------------------

MMLU_COLUMNS = ("question", "A", "B", "C", "D", "answer")
SPLIT_SUFFIX = re.compile(r"_(dev|val|test|train|auxiliary_train)$")


def mmlu_subject(path: Path) -> str:
    """``world_religions_test.csv`` -> ``world_religions``."""
    stem = path.name[:-len(".csv.gz")] if path.name.endswith(".csv.gz") else path.stem
    return SPLIT_SUFFIX.sub("", stem)


def read_mmlu(path: Path, subject: str | None = None) -> Loaded:
    """One subject's header-less CSV."""
    subject = subject or mmlu_subject(path)
    loaded = Loaded()
    if not path.is_file():
        raise EvalDataError(path, None, None, "no such file")
    header_lines = 0  # a header line some copies carry does not count as an item
    for entry in read_rows(path, "csv", MMLU_COLUMNS):
        if isinstance(entry, BrokenRow):
            loaded.skipped.append(EvalDataError(path, entry.line, None, f"{entry.message} (question,A,B,C,D,answer)"))
            continue
        row, line, index = entry.data, entry.line, entry.index - header_lines
        answer = row["answer"].strip()
        if answer not in MMLU_LETTERS:
            if line == 1 and row == dict(zip(MMLU_COLUMNS, MMLU_COLUMNS)):
                header_lines = 1
                continue
            loaded.skipped.append(EvalDataError(path, line, "answer", f"expected A, B, C or D, got {row['answer']!r}"))
            continue
        options = [row[letter] for letter in MMLU_LETTERS]
        loaded.docs.append(Doc(id=f"{subject}/{index}", query=mmlu_query(row["question"], options),
                               choices=list(MMLU_LETTERS), gold=MMLU_LETTERS.index(answer), where=f"{path}:{line}",
                               key=_key(row), subject=subject))
    return loaded


# --- TruthfulQA ---------------------------------------------------------------------------------


def _targets(row: dict, name: str) -> tuple[list[str], list[int]]:
    value = row.get(name)
    if value is None:
        raise RowError(name, "missing")
    if not isinstance(value, dict):
        raise RowError(name, f"expected an object, got {type(value).__name__}")
    if "choices" in value and "labels" in value:
        choices = _texts(value["choices"], f"{name}.choices")
        labels = value["labels"]
        if not isinstance(labels, list) or len(labels) != len(choices):
            raise RowError(f"{name}.labels", "expected one 0/1 label per choice")
        for i, v in enumerate(labels):
            if v not in (0, 1) or isinstance(v, bool):
                raise RowError(f"{name}.labels[{i}]", f"expected 0 or 1, got {v!r}")
        return choices, [int(v) for v in labels]
    # mc_task.json: {answer text: 1 or 0}
    for text, v in value.items():
        if v not in (0, 1) or isinstance(v, bool):
            raise RowError(f"{name}.{text[:40]}", f"expected 0 or 1, got {v!r}")
    if len(value) < 2:
        raise RowError(name, f"expected at least 2 answers, got {len(value)}")
    return list(value), [int(v) for v in value.values()]


def _truthfulqa_doc(ident: str, question: str, choices: list[str], labels: list[int], variant: str,
                    where: str, key: str) -> Doc:
    field_name = f"{variant}_targets"
    if 1 not in labels:
        raise RowError(field_name, "no true answer")
    if variant == "mc1" and labels.count(1) != 1:
        raise RowError(field_name, f"MC1 has exactly one true answer, got {labels.count(1)}")
    if 0 not in labels:
        raise RowError(field_name, "no false answer")
    return Doc(id=ident, query=truthfulqa_query(question), choices=choices, gold=labels.index(1), where=where,
               key=key, labels=labels if variant == "mc2" else None)


def _split_answers(text: str) -> list[str]:
    return [a.strip() for a in text.split(";") if a.strip()]


def read_truthfulqa(path: Path, variant: str) -> Loaded:
    """TruthfulQA as ``variant`` ("mc1" or "mc2") items."""
    seen: set[str] = set()

    def parse(row: dict, line: int | None, index: int) -> Doc:
        ident = _unique_id(str(index), seen, line)
        if "Question" in row or "Best Answer" in row:  # the CSV
            question = _text(row, "Question")
            incorrect = _split_answers(_text(row, "Incorrect Answers"))
            if variant == "mc1":
                choices = [_text(row, "Best Answer").strip()] + incorrect
                labels = [1] + [0] * len(incorrect)
            else:
                correct = _split_answers(_text(row, "Correct Answers"))
                choices, labels = correct + incorrect, [1] * len(correct) + [0] * len(incorrect)
            try:
                return _truthfulqa_doc(ident, question, choices, labels, variant, f"{path}:{line}", _key(row))
            except RowError as exc:
                raise RowError("Incorrect Answers" if "false" in exc.message else "Correct Answers",
                               exc.message) from None
        question = _text(row, "question")
        choices, labels = _targets(row, f"{variant}_targets")
        return _truthfulqa_doc(ident, question, choices, labels, variant, f"{path}:{line}", _key(row))

    return _read_records(path, parse)
