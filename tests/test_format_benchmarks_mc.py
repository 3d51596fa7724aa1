"""The multiple-choice benchmark formats (ARC, HellaSwag, MMLU, TruthfulQA MC): detection picks each on
its own files, a row becomes question (user) and right answer (assistant) with the rest in meta,
writing gives back the same rows, an edited answer lands in its choice, and bad rows name the field."""
from __future__ import annotations

import csv
import json

import pytest

from conftest import DATASETS
from studio.data import containers
from studio.data.convert import read_file, write_file
from studio.data.format_kit import RecordError
from studio.data.reading import detect
from studio.plugins import get_host
from studio.records import Turn

EVAL = DATASETS / "eval"


@pytest.fixture(scope="module")
def formats():
    return get_host().formats()


def rows_of(path):
    return [r.data for r in containers.read_rows(path)]


@pytest.mark.parametrize("name, fmt, count", [
    ("arc_challenge_sample.jsonl", "arc", 25),
    ("arc_challenge_train_sample.jsonl", "arc", 28),
    ("arc_easy_digits_sample.jsonl", "arc", 20),
    ("hellaswag_sample.jsonl", "hellaswag", 20),
    ("hellaswag_train_sample.jsonl", "hellaswag", 20),
    ("truthfulqa_mc_sample.json", "truthfulqa_mc", 20),
])
def test_detection_and_lossless_round_trip(formats, tmp_path, name, fmt, count):
    path = EVAL / name
    assert detect(path, formats).format == fmt
    result = read_file(path, formats)
    assert len(result.records) == count and not result.rejects
    first = result.records[0]
    assert [t.role for t in first.messages] == ["user", "assistant"]
    out = tmp_path / name
    write_file(result.records, formats[fmt], out)
    assert rows_of(out) == rows_of(path)


def test_records_hold_the_question_and_the_right_answer(formats):
    arc = read_file(EVAL / "arc_easy_digits_sample.jsonl", formats).records[1]
    assert arc.messages[0].content == "What do bees collect from flowers to make honey?"
    assert arc.messages[1].content == "nectar" and arc.meta["answerKey"] == "1"
    hs = read_file(EVAL / "hellaswag_sample.jsonl", formats).records[0]
    row = rows_of(EVAL / "hellaswag_sample.jsonl")[0]
    assert hs.messages[0].content == row["ctx"] and hs.messages[1].content == row["endings"][row["label"]]
    tqa = read_file(EVAL / "truthfulqa_mc_sample.json", formats).records[0]
    assert tqa.messages[1].content == "It passes through your digestive system and leaves your body."


def test_an_edited_answer_is_written_into_its_choice(formats, tmp_path):
    records = read_file(EVAL / "arc_challenge_sample.jsonl", formats).records[:1]
    records[0].messages[1] = Turn("assistant", "It conducts heat very well.")
    write_file(records, formats["arc"], tmp_path / "arc.jsonl")
    row = rows_of(tmp_path / "arc.jsonl")[0]
    assert row["question"]["choices"][0] == {"text": "It conducts heat very well.", "label": "A"}
    tqa = read_file(EVAL / "truthfulqa_mc_sample.json", formats).records[:1]
    tqa[0].messages[1] = Turn("assistant", "It passes through.")
    write_file(tqa, formats["truthfulqa_mc"], tmp_path / "tqa.json")
    row = rows_of(tmp_path / "tqa.json")[0]
    assert row["mc1_targets"]["choices"][0] == "It passes through." == row["mc2_targets"]["choices"][0]


def test_mmlu_header_less_csv_is_detected_and_rows_read_by_position(formats, tmp_path):
    path = EVAL / "mmlu_sample" / "test" / "astronomy_test.csv"
    detection = detect(path, formats)
    assert detection.format == "mmlu" and "no header line" in detection.reason
    fmt = formats["mmlu"]
    assert fmt.headerless_csv == ("question", "A", "B", "C", "D", "answer")
    with path.open(newline="") as fh:
        raw = list(csv.reader(fh))
    # Rows keyed by the column names (a CSV with a header, or a host reading it without one)...
    keyed = [dict(zip(fmt.headerless_csv, values)) for values in raw]
    records = [fmt.read(r) for r in keyed]
    assert records[0].messages[0].content == raw[0][0]
    assert records[0].messages[1].content == raw[0][1 + "ABCD".index(raw[0][5])]
    assert [fmt.write(r).row for r in records] == keyed
    letter = raw[0][5]
    records[0].messages[1] = Turn("assistant", "An edited answer")
    assert fmt.write(records[0]).row[letter] == "An edited answer"
    # ...and rows keyed by a first data row taken for a header read the same by position.
    assert fmt.read(dict(zip(raw[0], raw[1]))).messages == records[1].messages


@pytest.mark.parametrize("fmt, row, field, message", [
    ("arc", {"id": "x", "question": {"stem": "q", "choices": [{"text": "a", "label": "A"}]}, "answerKey": "B"},
     "answerKey", "none of the choice labels"),
    ("arc", {"id": "x", "question": "q", "choices": {"text": ["a"], "label": ["A"]}}, "answerKey", "missing"),
    ("arc", {"id": "x", "question": 3, "answerKey": "A"}, "question", "got int"),
    ("hellaswag", {"ctx_a": "a", "ctx_b": "b", "endings": ["x", "y"], "label": 5}, "label", "not an index"),
    ("hellaswag", {"ctx_a": "a", "ctx_b": "b", "endings": ["x", 2], "label": 0}, "endings[1]", "got int"),
    ("mmlu", {"question": "q", "A": "a", "B": "b", "C": "c", "D": "d", "answer": "E"}, "answer", "A, B, C or D"),
    ("truthfulqa_mc", {"question": "q", "mc1_targets": {"choices": ["a", "b"], "labels": [1, 1]}}, "mc1_targets",
     "exactly one true answer"),
    ("truthfulqa_mc", {"question": "q"}, "mc1_targets", "missing"),
])
def test_bad_rows_name_the_field(formats, fmt, row, field, message):
    with pytest.raises(RecordError) as err:
        formats[fmt].read(row)
    assert err.value.field == field and message in err.value.message


def test_unlabelled_hellaswag_rows_are_questions_without_answers(formats, tmp_path):
    row = {"ind": 7, "activity_label": "Baking", "ctx_a": "A man opens an oven.", "ctx_b": "he",
           "endings": ["takes out bread.", "sings."], "label": ""}
    record = formats["hellaswag"].read(row)
    assert [t.role for t in record.messages] == ["user"]
    assert record.messages[0].content == "A man opens an oven. he"
    assert formats["hellaswag"].write(record).row == row  # no ctx added where the source had none


def test_the_original_truthfulqa_mc_task_shape(formats, tmp_path):
    row = {"question": "Q?", "mc1_targets": {"Right.": 1, "Wrong.": 0}, "mc2_targets": {"Right.": 1, "Wrong.": 0}}
    path = tmp_path / "mc_task.json"
    path.write_text(json.dumps([row]))
    assert detect(path, formats).format == "truthfulqa_mc"
    record = formats["truthfulqa_mc"].read(row)
    assert record.messages[1].content == "Right."
    record.messages[1] = Turn("assistant", "Correct.")
    assert formats["truthfulqa_mc"].write(record).row["mc1_targets"] == {"Correct.": 1, "Wrong.": 0}


def test_mmlu_csv_reads_every_line_as_a_question_and_writes_back_without_a_header(formats, tmp_path):
    path = EVAL / "mmlu_sample" / "test" / "astronomy_test.csv"
    lines = path.read_text(encoding="utf-8").splitlines()
    detection = detect(path, formats)
    assert detection.columns == ["question", "A", "B", "C", "D", "answer"]
    result = read_file(path, formats)
    # The first line is a question, not a header: no question is lost.
    assert len(result.records) == len(lines) and not result.rejects
    assert result.records[0].messages[0].content == next(csv.reader([lines[0]]))[0]
    out = tmp_path / "astronomy_test.csv"
    write_file(result.records, formats["mmlu"], out)
    assert out.read_text(encoding="utf-8").splitlines() == lines


def test_a_csv_with_a_header_line_is_still_read_by_its_header(formats, tmp_path):
    path = tmp_path / "qa.csv"
    path.write_text("Type,Category,Question,Best Answer,Correct Answers,Incorrect Answers,Source\n"
                    "Adversarial,Misc,Is water wet?,Yes,Yes; it is,No,here\n", encoding="utf-8")
    detection = detect(path, formats)
    assert detection.format == "truthfulqa" and detection.columns is None
    assert len(read_file(path, formats).records) == 1
