"""Multiple-choice benchmark files, read as records (the question is the user turn, the right answer
the assistant turn, everything else in ``meta``) and written back to the same rows:

* ``arc``: AI2's JSONL ``{id, question: {stem, choices: [{text, label}]}, answerKey}``, or the flat
  Hugging Face rows ``{id, question, choices: {text, label}, answerKey}``; letter or digit labels;
* ``hellaswag``: ``{activity_label, ctx_a, ctx_b, ctx, endings, label}`` (the user turn is ``ctx``,
  the assistant turn the labelled ending; an unlabelled row, as in HellaSwag's test split, has no
  assistant turn);
* ``mmlu``: the header-less CSV ``question,A,B,C,D,answer`` (the user turn is the question, the
  assistant turn the text of the lettered option);
* ``truthfulqa_mc``: ``{question, mc1_targets, mc2_targets}`` with ``{choices, labels}`` targets
  (lm-eval's and Hugging Face's shape) or the original ``mc_task.json`` targets ``{answer: 1 or 0}``;
  the assistant turn is MC1's true answer.

An edited answer turn is written back into the choice it came from, so the row stays consistent.
"""
from __future__ import annotations

from typing import Any

from studio.data.format_kit import (
    DatasetFormat, Record, RecordError, Turn, Written, add_meta, extra_fields, layout_of, make_meta, match_or_none,
    pct, share, source_meta, type_name, unheld, want_list, want_str, without_system,
)


def _answer_turns(record: Record, what: str) -> tuple[list[Turn] | None, list[str]]:
    """[question] or [question, answer] of a multiple-choice row (a system prompt is dropped)."""
    if record.kind != "conversation":
        return None, [f"{record.kind} records ({what} holds one question and its answer)"]
    turns, dropped = without_system(record)
    if [t.role for t in turns] not in (["user"], ["user", "assistant"]):
        return None, [f"conversations other than one question and its answer ({what})"]
    return turns, dropped + unheld(record)


def _is_choice_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(
        isinstance(c, dict) and isinstance(c.get("text"), str) and "label" in c for c in value)


def _is_columns(value: Any) -> bool:
    return (isinstance(value, dict) and isinstance(value.get("text"), list) and isinstance(value.get("label"), list)
            and len(value["text"]) == len(value["label"]))


# --- ARC ----------------------------------------------------------------------------------------


def _arc_shape(row: dict) -> str | None:
    question = row.get("question")
    if isinstance(question, dict) and isinstance(question.get("stem"), str) and _is_choice_list(question.get("choices")):
        return "nested"
    if isinstance(question, str) and _is_columns(row.get("choices")):
        return "flat"
    return None


class ARCFormat(DatasetFormat):
    name = "arc"
    title = "ARC"
    summary = "AI2 Reasoning Challenge JSONL: question stem, lettered or numbered choices, answerKey"
    default_extension = ".jsonl"
    specificity = 20

    def match(self, rows):
        shapes = [_arc_shape(r) if isinstance(r, dict) else None for r in rows]
        score = sum(1 for s, r in zip(shapes, rows) if s and "answerKey" in r) / len(rows) if rows else 0.0
        if score == 0:
            return None
        nested = shapes.count("nested")
        reason = (f"{pct(score)} of sampled rows have a question, choices with text + label and an answerKey (ARC, "
                  f"{'AI2 nested' if nested >= len(rows) / 2 else 'Hugging Face flat'} shape)")
        return match_or_none(score, reason)

    def read(self, row):
        answer = row.get("answerKey")
        if answer is None:
            raise RecordError("answerKey", "missing")
        shape = _arc_shape(row)
        question = row.get("question")
        if shape == "nested":
            texts = [c["text"] for c in question["choices"]]
            labels = [c["label"] for c in question["choices"]]
            stem, where = question["stem"], "question.choices"
        elif shape == "flat":
            texts, labels, stem, where = row["choices"]["text"], row["choices"]["label"], question, "choices"
        elif isinstance(question, dict):
            want_str(question.get("stem"), "question.stem")
            raise RecordError("question.choices", "expected a list of {text, label} objects")
        else:
            want_str(question, "question")
            raise RecordError("choices", "expected {text: [...], label: [...]} of the same length")
        if answer not in labels:
            raise RecordError("answerKey", f"{answer!r} is none of the choice labels {labels}")
        right = texts[labels.index(answer)]
        if not isinstance(right, str):
            raise RecordError(where, f"the right choice's text is {type_name(right)}, not a string")
        meta = extra_fields(row, {"question"})
        if shape == "nested":
            # AI2's choices list stays a list (the flat shape's {text, label} columns stay columns).
            meta["choices"] = question["choices"]
            if extra_fields(question, {"stem", "choices"}):
                meta["question_fields"] = extra_fields(question, {"stem", "choices"})
        return Record([Turn("user", stem), Turn("assistant", right)], meta=meta)

    def write(self, record):
        turns, dropped = _answer_turns(record, "ARC")
        if turns is None:
            return Written(None, dropped)
        meta = source_meta(record)
        row: dict[str, Any] = {k: v for k, v in meta.items() if k in ("id",)}
        if _is_choice_list(meta.get("choices")):
            choices = [dict(c) for c in meta["choices"]]
            extra = meta.get("question_fields") if isinstance(meta.get("question_fields"), dict) else {}
            row["question"] = {"stem": turns[0].content, **extra, "choices": choices}
            texts = None
        elif _is_columns(meta.get("choices")):
            row["question"] = turns[0].content
            columns = meta["choices"]
            row["choices"] = {**columns, "text": list(columns["text"])}
            texts = row["choices"]["text"]
            choices = None
        else:
            return Written(None, ["records without ARC choices in their metadata"])
        answer = meta.get("answerKey")
        if len(turns) == 2:
            labels = [c["label"] for c in choices] if choices is not None else row["choices"]["label"]
            if answer in labels:
                i = labels.index(answer)
                if choices is not None:
                    choices[i]["text"] = turns[1].content
                else:
                    texts[i] = turns[1].content
        row["answerKey"] = answer
        rest = {k: v for k, v in meta.items() if k not in ("choices", "question_fields")}
        return Written({**row, **{k: v for k, v in rest.items() if k not in row}}, dropped)


# --- HellaSwag ----------------------------------------------------------------------------------


# The row's label sits in meta as "ending_label": a plain "label" would read as a KTO label elsewhere.
LABEL_META = "ending_label"


def _hellaswag_label(label, endings: list) -> int | None:
    if label in (None, ""):
        return None
    if isinstance(label, str) and label.strip().isdigit():
        label = int(label)
    if isinstance(label, bool) or not isinstance(label, int):
        raise RecordError("label", f"expected the index of the right ending, got {label!r}")
    if not 0 <= label < len(endings):
        raise RecordError("label", f"{label} is not an index of the {len(endings)} endings")
    return label


class HellaSwagFormat(DatasetFormat):
    name = "hellaswag"
    title = "HellaSwag"
    summary = "commonsense completion JSONL: activity_label, ctx_a, ctx_b, ctx, endings, label"
    default_extension = ".jsonl"
    specificity = 20

    def match(self, rows):
        score = share(rows, lambda r: isinstance(r.get("endings"), list) and isinstance(r.get("ctx_a"), str)
                      and "ctx_b" in r)
        if score == 0:
            return None
        labelled = share(rows, lambda r: r.get("label") not in (None, ""))
        return match_or_none(score, f"{pct(score)} of sampled rows have ctx_a/ctx_b and a list of endings "
                                    f"(HellaSwag); {pct(labelled)} are labelled")

    def read(self, row):
        endings = want_list(row.get("endings"), "endings", "a list of endings")
        for i, e in enumerate(endings):
            want_str(e, f"endings[{i}]")
        ctx_a = want_str(row.get("ctx_a"), "ctx_a")
        ctx_b = want_str(row.get("ctx_b"), "ctx_b")
        has_ctx = "ctx" in row
        ctx = want_str(row.get("ctx"), "ctx") if has_ctx else (ctx_a + " " + ctx_b).strip()
        label = _hellaswag_label(row.get("label"), endings)
        turns = [Turn("user", ctx)] + ([Turn("assistant", endings[label])] if label is not None else [])
        meta = {(LABEL_META if k == "label" else k): v for k, v in row.items() if k != "ctx"}
        return Record(turns, meta=make_meta(meta, self.name, {"no_ctx": not has_ctx}))

    def write(self, record):
        turns, dropped = _answer_turns(record, "HellaSwag")
        if turns is None:
            return Written(None, dropped)
        meta = source_meta(record)
        if not isinstance(meta.get("endings"), list):
            return Written(None, ["records without HellaSwag endings in their metadata"])
        row: dict[str, Any] = {}
        for key, value in meta.items():
            if key == "endings" and not layout_of(record, self.name).get("no_ctx") and "ctx" not in row:
                row["ctx"] = turns[0].content
            row["label" if key == LABEL_META else key] = value
        if not layout_of(record, self.name).get("no_ctx"):
            row.setdefault("ctx", turns[0].content)
        endings = list(meta["endings"])
        if len(turns) == 2:
            try:
                label = _hellaswag_label(meta.get(LABEL_META), endings)
            except RecordError:
                label = None
            if label is None:
                return Written(None, ["an answer turn whose ending is not labelled in the metadata"])
            endings[label] = turns[1].content
        row["endings"] = endings
        return Written(row, dropped)


# --- MMLU ---------------------------------------------------------------------------------------

MMLU_COLUMNS = ("question", "A", "B", "C", "D", "answer")
LETTERS = ("A", "B", "C", "D")
# The answer letter sits in meta as "answer_letter": a plain "answer" is another format's answer text.
ANSWER_META = "answer_letter"


def _mmlu_values(row: dict) -> list | None:
    """The six values of an MMLU row: keyed by the column names, or (a CSV without a header, whose
    first row the reader took for one) by position."""
    if set(MMLU_COLUMNS) <= row.keys():
        return [row[c] for c in MMLU_COLUMNS]
    if len(row) == 6:
        return list(row.values())
    return None


def _looks_like_mmlu(row: dict) -> bool:
    values = _mmlu_values(row)
    return values is not None and all(isinstance(v, str) for v in values) and values[5].strip() in LETTERS


class MMLUFormat(DatasetFormat):
    name = "mmlu"
    title = "MMLU"
    summary = "one subject's header-less CSV: question, A, B, C, D, answer letter"
    default_extension = ".csv"
    specificity = 20
    # The columns of a CSV without a header line (a host that reads such CSVs keys rows by these).
    headerless_csv = MMLU_COLUMNS

    def match(self, rows):
        score = share(rows, _looks_like_mmlu)
        if score == 0:
            return None
        reason = f"{pct(score)} of sampled rows have six columns ending in an answer letter A-D (MMLU)"
        return match_or_none(score, reason)

    def read(self, row):
        values = _mmlu_values(row)
        if values is None:
            raise RecordError("answer", "expected six columns: question, A, B, C, D, answer")
        for name, value in zip(MMLU_COLUMNS, values):
            want_str(value, name)
        answer = values[5].strip()
        if answer not in LETTERS:
            raise RecordError("answer", f"expected A, B, C or D, got {values[5]!r}")
        meta = {**dict(zip(LETTERS, values[1:5])), ANSWER_META: values[5]}
        if set(MMLU_COLUMNS) <= row.keys():
            meta.update(extra_fields(row, MMLU_COLUMNS))
        return Record([Turn("user", values[0]), Turn("assistant", values[1 + LETTERS.index(answer)])], meta=meta)

    def write(self, record):
        turns, dropped = _answer_turns(record, "MMLU")
        if turns is None or len(turns) != 2:
            return Written(None, dropped or ["questions without an answer (MMLU rows carry one)"])
        meta = source_meta(record)
        answer = meta.get(ANSWER_META)
        if not isinstance(answer, str) or answer.strip() not in LETTERS or not all(k in meta for k in LETTERS):
            return Written(None, ["records without MMLU options and answer letter in their metadata"])
        row = {"question": turns[0].content, **{k: meta[k] for k in LETTERS}, "answer": answer}
        row[answer.strip()] = turns[1].content
        row.update({k: v for k, v in meta.items() if k not in row and k != ANSWER_META})
        return Written(row, dropped)


# --- TruthfulQA MC ------------------------------------------------------------------------------


def _target_pairs(value: Any, name: str) -> list[tuple[str, int]]:
    """(answer, 0/1) pairs of a target set in either spelling."""
    if isinstance(value, dict) and "choices" in value and "labels" in value:
        choices = want_list(value["choices"], f"{name}.choices")
        labels = want_list(value["labels"], f"{name}.labels")
        if len(choices) != len(labels):
            raise RecordError(f"{name}.labels", f"{len(labels)} labels for {len(choices)} choices")
        for i, c in enumerate(choices):
            want_str(c, f"{name}.choices[{i}]")
        return list(zip(choices, labels))
    if isinstance(value, dict):
        return list(value.items())
    raise RecordError(name, "missing" if value is None else f"expected an object, got {type_name(value)}")


def _with_new_truth(value: Any, old: str, new: str) -> Any:
    """The target set with its true answer ``old`` renamed ``new`` (key order kept)."""
    if old == new:
        return value
    if "choices" in value and "labels" in value:
        choices = [new if c == old and label == 1 else c for c, label in zip(value["choices"], value["labels"])]
        return {**value, "choices": choices}
    return {(new if k == old else k): v for k, v in value.items()}


class TruthfulQAMCFormat(DatasetFormat):
    name = "truthfulqa_mc"
    title = "TruthfulQA MC"
    summary = "TruthfulQA multiple choice JSON: question, mc1_targets, mc2_targets (lm-eval or mc_task.json shape)"
    default_extension = ".json"
    specificity = 20

    def match(self, rows):
        score = share(rows, lambda r: isinstance(r.get("question"), str) and isinstance(r.get("mc1_targets"), dict))
        if score == 0:
            return None
        both = share(rows, lambda r: isinstance(r.get("mc2_targets"), dict))
        return match_or_none(score, f"{pct(score)} of sampled rows have question + mc1_targets, {pct(both)} also "
                                    f"mc2_targets (TruthfulQA multiple choice)")

    def read(self, row):
        question = want_str(row.get("question"), "question")
        pairs = _target_pairs(row.get("mc1_targets"), "mc1_targets")
        true = [answer for answer, label in pairs if label == 1]
        if len(true) != 1:
            raise RecordError("mc1_targets", f"expected exactly one true answer, got {len(true)}")
        return Record([Turn("user", question), Turn("assistant", true[0])], meta=extra_fields(row, {"question"}))

    def write(self, record):
        turns, dropped = _answer_turns(record, "TruthfulQA MC")
        if turns is None:
            return Written(None, dropped)
        meta = source_meta(record)
        try:
            pairs = _target_pairs(meta.get("mc1_targets"), "mc1_targets")
        except RecordError:
            return Written(None, ["records without TruthfulQA targets in their metadata"])
        row: dict[str, Any] = {"question": turns[0].content, **meta}
        true = [answer for answer, label in pairs if label == 1]
        if len(turns) == 2 and len(true) == 1 and true[0] != turns[1].content:
            for key in ("mc1_targets", "mc2_targets"):
                if isinstance(meta.get(key), dict):
                    row[key] = _with_new_truth(meta[key], true[0], turns[1].content)
        return Written(add_meta(row, record), dropped)


MULTIPLE_CHOICE_FORMATS = (ARCFormat, HellaSwagFormat, MMLUFormat, TruthfulQAMCFormat)
