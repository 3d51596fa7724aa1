"""Benchmark files, read as records so curation (decontamination) can compare training data
against them and evaluators can use them:

* ``gsm8k``: ``{"question", "answer"}`` (the answer ends with ``#### N``)
* ``humaneval``: ``{"task_id", "prompt", "entry_point", "canonical_solution", "test"}``
* ``truthfulqa``: CSV with Type, Category, Question, Best Answer, Correct Answers, Incorrect Answers, Source
* ``mt_bench``: ``{"question_id", "category", "turns": [...], "reference"?: [...]}``
* ``arc``, ``hellaswag``, ``mmlu``, ``truthfulqa_mc``: the multiple-choice benchmarks
  (:mod:`studio_format_benchmarks.multiple_choice`)

The question (or prompt) is the user turn and the reference answer the assistant turn; every
other field is kept in ``meta`` so writing back is exact.
"""
from __future__ import annotations

from typing import Any

from studio.data.format_kit import (
    DatasetFormat, Record, RecordError, Turn, Written, add_meta, extra_fields, extra_keys_note, match_or_none,
    pct, seen, share, source_meta, type_name, unheld, want_list, want_str, without_system,
)
from studio.hookspecs import hookimpl

from studio_format_benchmarks.multiple_choice import MULTIPLE_CHOICE_FORMATS


def _qa_turns(record: Record, what: str) -> tuple[list[Turn] | None, list[str]]:
    """The [user, assistant] pair a one-question benchmark row holds (a system prompt is dropped)."""
    if record.kind != "conversation":
        return None, [f"{record.kind} records ({what} holds one question and its answer)"]
    turns, dropped = without_system(record)
    if [t.role for t in turns] != ["user", "assistant"]:
        return None, [f"conversations other than one question and one answer ({what})"]
    return turns, dropped + unheld(record)


def _qa_row(record: Record, what: str, columns: tuple[str, ...], question: str, answer: str) -> Written:
    """A benchmark row in its own column order: the question and answer from the turns, every
    other column from the record's meta."""
    turns, dropped = _qa_turns(record, what)
    if turns is None:
        return Written(None, dropped)
    meta = source_meta(record)
    row: dict[str, Any] = {}
    for column in columns:
        if column == question:
            row[column] = turns[0].content
        elif column == answer:
            row[column] = turns[1].content
        elif column in meta:
            row[column] = meta[column]
    return Written(add_meta(row, record), dropped)


class GSM8KFormat(DatasetFormat):
    name = "gsm8k"
    title = "GSM8K"
    summary = "grade-school maths: question / answer with worked steps ending in '#### N'"
    default_extension = ".jsonl"
    specificity = 15

    def match(self, rows):
        score = share(rows, lambda r: isinstance(r.get("question"), str) and isinstance(r.get("answer"), str))
        if score == 0:
            return None
        marked = share(rows, lambda r: "\n#### " in r["answer"])
        # Without the '#### N' marker this is just some question/answer file: still readable, less sure.
        score = score if marked >= 0.5 else score * 0.6
        reason = (f"{pct(share(rows, lambda r: 'question' in r and 'answer' in r))} of sampled rows have "
                  f"question + answer; {pct(marked)} of answers end with '#### N' (GSM8K)")
        reason += extra_keys_note(rows, {"question", "answer"})
        return match_or_none(score, reason)

    def read(self, row):
        question = want_str(row.get("question"), "question")
        answer = want_str(row.get("answer"), "answer")
        meta = extra_fields(row, {"question", "answer"})
        return Record([Turn("user", question), Turn("assistant", answer)], meta=meta)

    def write(self, record):
        return _qa_row(record, "GSM8K", ("question", "answer"), "question", "answer")


HUMANEVAL_KEYS = ("task_id", "prompt", "entry_point", "canonical_solution", "test")


class HumanEvalFormat(DatasetFormat):
    name = "humaneval"
    title = "HumanEval"
    summary = "code problems: task_id / prompt / entry_point / canonical_solution / test"
    default_extension = ".jsonl"
    specificity = 20

    def match(self, rows):
        score = share(rows, lambda r: {"prompt", "canonical_solution"} <= r.keys() and ("test" in r or "entry_point" in r))
        if score == 0:
            return None
        ids = [r["task_id"] for r in rows if isinstance(r, dict) and isinstance(r.get("task_id"), str)]
        reason = (f"{pct(score)} of sampled rows have prompt + canonical_solution + test/entry_point (HumanEval)"
                  + (f"; task ids like {ids[0]}" if ids else ""))
        return match_or_none(score, reason)

    def read(self, row):
        prompt = want_str(row.get("prompt"), "prompt")
        solution = want_str(row.get("canonical_solution"), "canonical_solution")
        meta = extra_fields(row, {"prompt", "canonical_solution"})
        return Record([Turn("user", prompt), Turn("assistant", solution)], meta=meta)

    def write(self, record):
        return _qa_row(record, "HumanEval", HUMANEVAL_KEYS, "prompt", "canonical_solution")


TRUTHFULQA_COLUMNS = ("Type", "Category", "Question", "Best Answer", "Best Incorrect Answer",
                      "Correct Answers", "Incorrect Answers", "Source")


class TruthfulQAFormat(DatasetFormat):
    name = "truthfulqa"
    title = "TruthfulQA"
    summary = "CSV: Type, Category, Question, Best Answer, Correct/Incorrect Answers ('; '-separated), Source"
    default_extension = ".csv"
    specificity = 20

    def match(self, rows):
        score = share(rows, lambda r: isinstance(r.get("Question"), str) and isinstance(r.get("Best Answer"), str))
        if score == 0:
            return None
        answers = share(rows, lambda r: "Correct Answers" in r and "Incorrect Answers" in r)
        cats = [r["Category"] for r in rows if isinstance(r, dict) and isinstance(r.get("Category"), str)]
        reason = (f"{pct(score)} of sampled rows have Question + Best Answer columns, {pct(answers)} with "
                  f"Correct/Incorrect Answers (TruthfulQA)" + (f"; categories: {seen(cats, 5)}" if cats else ""))
        return match_or_none(score, reason)

    def read(self, row):
        question = want_str(row.get("Question"), "Question")
        best = want_str(row.get("Best Answer"), "Best Answer")
        if not question.strip():
            raise RecordError("Question", "empty question")
        meta = extra_fields(row, {"Question", "Best Answer"})
        return Record([Turn("user", question), Turn("assistant", best)], meta=meta)

    def write(self, record):
        return _qa_row(record, "TruthfulQA", TRUTHFULQA_COLUMNS, "Question", "Best Answer")


class MTBenchFormat(DatasetFormat):
    name = "mt_bench"
    title = "MT-Bench questions"
    summary = "question_id / category / turns (two user turns) / optional reference answers"
    default_extension = ".jsonl"
    specificity = 20

    def match(self, rows):
        score = share(rows, lambda r: isinstance(r.get("turns"), list) and bool(r["turns"])
                      and all(isinstance(t, str) for t in r["turns"]) and ("question_id" in r or "category" in r))
        if score == 0:
            return None
        refs = share(rows, lambda r: "reference" in r)
        cats = [r["category"] for r in rows if isinstance(r, dict) and isinstance(r.get("category"), str)]
        reason = (f"{pct(score)} of sampled rows have question_id/category + turns as a list of strings (MT-Bench); "
                  f"{pct(refs)} carry reference answers" + (f"; categories: {seen(cats, 5)}" if cats else ""))
        return match_or_none(score, reason)

    def read(self, row):
        questions = want_list(row.get("turns"), "turns", "a list of question strings")
        if not questions:
            raise RecordError("turns", "empty list of questions")
        for i, q in enumerate(questions):
            if not isinstance(q, str):
                raise RecordError(f"turns[{i}]", f"expected a string, got {type_name(q)}")
        meta = extra_fields(row, {"turns", "reference"})
        reference = row.get("reference")
        if reference is None:
            if "reference" in row:
                meta["reference"] = None
            return Record([Turn("user", q) for q in questions], meta=meta)
        reference = want_list(reference, "reference", "a list of reference answers")
        if len(reference) != len(questions) or not all(isinstance(a, str) for a in reference):
            # References that do not pair one-to-one with the questions stay as they are.
            meta["reference"] = reference
            return Record([Turn("user", q) for q in questions], meta=meta)
        turns = []
        for q, a in zip(questions, reference):
            turns += [Turn("user", q), Turn("assistant", a)]
        return Record(turns, meta=meta)

    def write(self, record):
        if record.kind != "conversation":
            return Written(None, [f"{record.kind} records (MT-Bench holds questions)"])
        turns, dropped = without_system(record)
        roles = [t.role for t in turns]
        meta = source_meta(record)
        if roles and all(r == "user" for r in roles):
            questions, reference = [t.content for t in turns], meta.get("reference", ...)
        elif roles and roles == ["user", "assistant"] * (len(roles) // 2):
            questions, reference = [t.content for t in turns[::2]], [t.content for t in turns[1::2]]
        else:
            return Written(None, ["conversations other than user questions, each optionally answered once"])
        dropped += unheld(record)
        row: dict[str, Any] = {}
        for key in ("question_id", "category"):
            if key in meta:
                row[key] = meta[key]
        row["turns"] = questions
        if reference is not ...:
            row["reference"] = reference
        return Written(add_meta(row, record), dropped)


@hookimpl
def register_formats(register):
    for fmt in (GSM8KFormat(), HumanEvalFormat(), TruthfulQAFormat(), MTBenchFormat()):
        register(fmt)
    for cls in MULTIPLE_CHOICE_FORMATS:
        register(cls())
