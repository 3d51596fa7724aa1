"""Format plugins one rule at a time: errors name the exact field, tool calls keep one spelling
across formats, layout hints give exact same-format round trips without leaking elsewhere, and
detection prefers the more specific shape."""
from __future__ import annotations

import json

import pytest

from conftest import DATASETS
from studio.data.convert import read_file, write_file
from studio.data.format_kit import LAYOUT_KEY, RecordError, canonical
from studio.data.reading import DetectionError, detect
from studio.plugins import get_host
from studio.records import Record, Turn


@pytest.fixture(scope="module")
def formats():
    return get_host().formats()


def test_every_format_is_registered_through_the_plugins(formats):
    assert set(formats) >= {"sharegpt", "openai", "dolly", "lima", "alpaca", "trl_preference", "hh_rlhf", "kto",
                            "self_instruct", "prompts", "gsm8k", "humaneval", "truthfulqa", "mt_bench"}
    for fmt in formats.values():
        assert fmt.title and fmt.summary and fmt.default_extension in (".jsonl", ".json", ".csv")


# --- bad input: every error is a RecordError naming the field --------------------------------

U = {"role": "user", "content": "hi"}
A = {"role": "assistant", "content": "hello"}
BAD = [
    ("sharegpt", {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"},
                                    {"from": "robot", "value": "x"}]}, "conversations[2].from", "unknown role 'robot'"),
    ("sharegpt", {"conversations": []}, "conversations", "empty conversation"),
    ("sharegpt", {"conversations": "hello"}, "conversations", "got str"),
    ("sharegpt", {"id": 3}, "conversations", "missing"),
    ("sharegpt", {"conversations": [{"from": "human"}]}, "conversations[0].value", "missing"),
    ("sharegpt", {"conversations": [{"value": "hi"}]}, "conversations[0].from", "missing"),
    ("sharegpt", {"conversations": [{"from": "human", "value": 3}]}, "conversations[0].value", "got int"),
    ("sharegpt", {"conversations": [{"from": "human", "value": "x"}, {"from": "function_call", "value": "{oops"}]},
     "conversations[1].value", "not valid JSON"),
    ("sharegpt", {"conversations": [{"from": "human", "value": "x"}], "tools": "[oops"}, "tools", "not valid JSON"),
    ("sharegpt", {"conversations": [{"from": "human", "value": "x"}], "chosen": {"from": "gpt", "value": "a"}},
     "rejected", "missing"),
    ("sharegpt", {"conversations": [{"from": "human", "value": "x"}], "chosen": {"from": "gpt", "value": "a"},
                  "rejected": {"from": "narrator", "value": "b"}}, "rejected.from", "unknown role"),
    ("sharegpt", {"conversations": [{"from": "human", "value": "x"}], "kto_tag": "maybe"}, "kto_tag", "true or false"),
    ("sharegpt", {"conversations": [{"from": "human", "value": "x"}], "system": 5}, "system", "got int"),
    ("openai", {"messages": [U, {"role": "wizard", "content": "y"}]}, "messages[1].role", "unknown role 'wizard'"),
    ("openai", {"messages": [{"role": "user"}]}, "messages[0].content", "missing"),
    ("openai", {"messages": [{"content": "x"}]}, "messages[0].role", "missing"),
    ("openai", {"messages": []}, "messages", "empty conversation"),
    ("openai", {"messages": {"role": "user"}}, "messages", "expected a list of messages"),
    ("openai", {"messages": [U, "hello"]}, "messages[1]", "got str"),
    ("openai", {"messages": [U, {"role": "assistant", "content": None, "tool_calls": [{"id": "c", "function": {"arguments": "{}"}}]}]},
     "messages[1].tool_calls[0].function.name", "missing"),
    ("openai", {"messages": [U, {"role": "user", "content": "x", "tool_calls": [{"function": {"name": "f"}}]}]},
     "messages[1].tool_calls", "only assistant messages"),
    ("openai", {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
     "messages[0].content[0]", "only text content parts"),
    ("openai", {"messages": [{"role": "user", "content": "x", "weight": "heavy"}]}, "messages[0].weight", "number"),
    ("openai", {"input": {"messages": [U]}, "preferred_output": [A]}, "non_preferred_output", "missing"),
    ("openai", {"input": {"messages": [U, {"role": 1, "content": "x"}]}, "preferred_output": [A],
                "non_preferred_output": [A]}, "input.messages[1].role", "expected a string"),
    ("dolly", {"instruction": "x", "context": "", "category": "open_qa"}, "response", "missing"),
    ("dolly", {"instruction": 3, "context": "", "response": "r"}, "instruction", "got int"),
    ("dolly", {"instruction": " ", "context": "", "response": "r"}, "instruction", "empty instruction"),
    ("dolly", {"instruction": "x", "context": ["a"], "response": "r"}, "context", "got list"),
    ("lima", {"conversations": ["a", {"from": "gpt", "value": "b"}]}, "conversations[1]", "looks like ShareGPT"),
    ("lima", {"conversations": []}, "conversations", "empty conversation"),
    ("lima", {"source": "x"}, "conversations", "missing"),
    ("trl_preference", {"prompt": "x", "chosen": "a"}, "rejected", "missing"),
    ("trl_preference", {"prompt": "x", "chosen": "a", "rejected": [A]}, "rejected", "both must be strings or both lists"),
    ("trl_preference", {"prompt": "x", "chosen": 5, "rejected": "b"}, "chosen", "got int"),
    ("trl_preference", {"prompt": [U], "chosen": [{"role": "bot", "content": "a"}], "rejected": [A]},
     "chosen[0].role", "unknown role 'bot'"),
    ("trl_preference", {"question": "q", "response_j": "a", "response_k": None}, "response_k", "missing"),
    ("trl_preference", {"prompt": [U, {"role": "user"}], "completion": [A]}, "prompt[1].content", "missing"),
    ("hh_rlhf", {"chosen": "Hello there", "rejected": "\n\nHuman: a\n\nAssistant: b"}, "chosen", "starting with"),
    ("hh_rlhf", {"chosen": "\n\nHuman: a\n\nAssistant: b"}, "rejected", "missing"),
    ("hh_rlhf", {"chosen": "\n\nHuman: a\n\nAssistant: b", "rejected": 3}, "rejected", "got int"),
    ("kto", {"messages": [U, A]}, "label", "missing"),
    ("kto", {"messages": [U, A], "label": "perhaps"}, "label", "true or false"),
    ("kto", {"prompt": "x", "label": True}, "completion", "missing"),
    ("kto", {"messages": [U, {"role": "assistant", "content": 7}], "label": True}, "messages[1].content", "got int"),
    ("self_instruct", {"instruction": "x", "instances": []}, "instances", "empty"),
    ("self_instruct", {"instruction": "x", "instances": [{"input": "i"}]}, "instances[0].output", "missing"),
    ("self_instruct", {"instruction": "x", "instances": [{"input": "i", "output": "o"}, "bad"]}, "instances[1]", "got str"),
    ("self_instruct", {"instances": [{"input": "i", "output": "o"}]}, "instruction", "missing"),
    ("prompts", {"question": ""}, "question", "empty prompt"),
    ("prompts", {"question": 7}, "question", "got int"),
    ("prompts", {"id": 1}, "prompt", "missing"),
    ("gsm8k", {"question": "q"}, "answer", "missing"),
    ("humaneval", {"task_id": "x", "prompt": "p"}, "canonical_solution", "missing"),
    ("truthfulqa", {"Question": "q"}, "Best Answer", "missing"),
    ("mt_bench", {"question_id": 1, "turns": ["a", 2]}, "turns[1]", "got int"),
    ("mt_bench", {"question_id": 1, "turns": []}, "turns", "empty"),
    ("alpaca", {"instruction": "x"}, "output", "missing"),
    ("alpaca", {"instruction": "x", "output": "y", "history": [["only one"]]}, "history[0]", "pair"),
]


@pytest.mark.parametrize("name, row, field, words", BAD, ids=[f"{b[0]}-{b[2]}-{i}" for i, b in enumerate(BAD)])
def test_bad_rows_raise_record_errors_naming_the_field(name, row, field, words, formats):
    with pytest.raises(RecordError) as err:
        formats[name].read(row)
    assert err.value.field == field
    assert words in err.value.message


def test_bad_rows_in_a_file_become_rejects_with_line_and_field(formats, tmp_path):
    path = tmp_path / "mixed.jsonl"
    rows = [
        {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]},
        {"conversations": [{"from": "human", "value": "hi"}, {"from": "alien", "value": "?"}]},
        {"conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": "b"}]},
        {"conversations": []},
        {"conversations": [{"from": "human", "value": "c"}, {"from": "gpt", "value": "d"}]},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "{broken json\n", encoding="utf-8")
    result = read_file(path, formats)
    assert result.detection.format == "sharegpt"
    assert len(result.records) == 3
    assert [(r.line, r.field) for r in result.rejects] == [(2, "conversations[1].from"), (4, "conversations"), (6, None)]
    assert "unknown role 'alien'" in result.rejects[0].message


def test_a_wrong_format_override_is_a_detection_error(formats):
    path = DATASETS / "sharegpt_conversations.json"
    with pytest.raises(DetectionError, match="does not look like dolly.*looks like sharegpt"):
        read_file(path, formats, override="dolly")
    with pytest.raises(DetectionError, match="unknown format 'sharegtp'"):
        read_file(path, formats, override="sharegpt".replace("gpt", "gtp"))
    # Overriding with a format that does fit is fine and says so.
    d = detect(path, formats, override="sharegpt")
    assert d.overridden and d.reason.startswith("chosen by the user")


def test_the_cli_reports_a_wrong_format_as_one_error_line(capsys):
    from studio.cli import main

    code = main(["data", "detect", str(DATASETS / "dolly.jsonl"), "--format", "hh_rlhf"])
    err = capsys.readouterr().err
    assert code != 0
    assert "does not look like hh_rlhf" in err
    assert "Traceback" not in err


def test_rows_no_format_explains_are_a_detection_error(formats, tmp_path):
    path = tmp_path / "odd.jsonl"
    path.write_text('{"foo": 1, "bar": [2]}\n{"foo": 3, "bar": []}\n', encoding="utf-8")
    with pytest.raises(DetectionError, match="no format explains these rows"):
        read_file(path, formats)


# --- detection preferences -----------------------------------------------------------------


def _rows_file(tmp_path, rows, name="rows.jsonl"):
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_messages_with_label_are_kto_but_openai_can_still_read_them(formats, tmp_path):
    path = _rows_file(tmp_path, [{"messages": [U, A], "label": True}, {"messages": [U, A], "label": False}])
    d = detect(path, formats)
    assert d.format == "kto"
    openai = dict((n, s) for n, s, _ in d.candidates)["openai"]
    assert 0.5 <= openai < d.score
    record = read_file(path, formats, override="openai").records[1]
    assert record.label is False and record.kind == "unpaired"


def test_hh_strings_are_not_taken_for_trl_implicit_prompts(formats, tmp_path):
    hh = _rows_file(tmp_path, [{"chosen": "\n\nHuman: hi\n\nAssistant: hello", "rejected": "\n\nHuman: hi\n\nAssistant: go away"}])
    assert detect(hh, formats).format == "hh_rlhf"
    assert "trl_preference" not in [n for n, _, _ in detect(hh, formats).candidates]
    plain = _rows_file(tmp_path, [{"chosen": "The sky is blue.", "rejected": "The sky is green."}], "plain.jsonl")
    assert detect(plain, formats).format == "trl_preference"


def test_prompt_only_rows_do_not_capture_question_answer_files(formats, tmp_path):
    qa = _rows_file(tmp_path, [{"question": "What is 2+2?", "answer": "2+2=4\n#### 4"}])
    assert detect(qa, formats).format == "gsm8k"
    plain_qa = _rows_file(tmp_path, [{"question": "Capital of France?", "answer": "Paris"}], "qa.jsonl")
    d = detect(plain_qa, formats)
    assert d.format == "gsm8k" and d.score < 0.9 and "0% of answers end with '#### N'" in d.reason
    only = _rows_file(tmp_path, [{"instruction": "Write a poem."}, {"instruction": "Name a colour."}], "only.jsonl")
    assert detect(only, formats).format == "prompts"


# --- tool calls --------------------------------------------------------------------------------


def test_openai_tool_calls_become_normalised_tool_call_turns_and_keep_their_ids(formats):
    row = {"messages": [
        U,
        {"role": "assistant", "content": "Checking.", "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{\"q\":\"x\",\"n\":2}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "{\"hits\": 1}"},
        {"role": "assistant", "content": "Found one."},
    ]}
    record = formats["openai"].read(row)
    assert [t.role for t in record.messages] == ["user", "assistant", "tool_call", "tool", "assistant"]
    assert json.loads(record.messages[2].content) == {"name": "lookup", "arguments": {"q": "x", "n": 2}, "id": "call_1"}
    # Written back: same message grouping, same id, and the original arguments text.
    assert formats["openai"].write(record).row == row


def test_a_sharegpt_function_call_equals_its_openai_form(formats):
    share = formats["sharegpt"].read({"conversations": [
        {"from": "human", "value": "weather in Oslo?"},
        {"from": "function_call", "value": "{\"arguments\": {\"city\": \"Oslo\"}, \"name\": \"get_weather\"}"},
        {"from": "observation", "value": "{\"temp\": 3}"},
        {"from": "gpt", "value": "3 degrees."}]})
    openai = formats["openai"].read({"messages": [
        {"role": "user", "content": "weather in Oslo?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Oslo\"}"}}]},
        {"role": "tool", "content": "{\"temp\": 3}"},
        {"role": "assistant", "content": "3 degrees."}]})
    assert share.messages == openai.messages
    assert share.messages[1].content == '{"name": "get_weather", "arguments": {"city": "Oslo"}}'


def test_parallel_tool_calls_are_one_turn_holding_a_list(formats):
    record = formats["openai"].read({"messages": [U, {"role": "assistant", "content": None, "tool_calls": [
        {"id": "a", "function": {"name": "f", "arguments": "{}"}}, {"id": "b", "function": {"name": "g", "arguments": "{}"}}]}]})
    assert [c["name"] for c in json.loads(record.messages[1].content)] == ["f", "g"]
    tool_ids = formats["openai"].write(Record(record.messages + [Turn("tool", "1"), Turn("tool", "2")])).row
    assert [m.get("tool_call_id") for m in tool_ids["messages"][2:]] == ["a", "b"]


def test_sharegpt_to_openai_writes_tool_schemas_as_a_list(formats):
    record = formats["sharegpt"].read({"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}],
                                       "tools": "[{\"name\": \"f\", \"parameters\": {}}]"})
    row = formats["openai"].write(record).row
    assert row["tools"] == [{"name": "f", "parameters": {}}]
    assert formats["sharegpt"].write(formats["openai"].read(row)).row["tools"] == '[{"name": "f", "parameters": {}}]'


# --- layout hints -------------------------------------------------------------------------------


def test_dolly_context_is_part_of_the_user_turn_and_is_split_back_exactly(formats):
    row = {"instruction": "Summarise.\n\nBe brief.", "context": "Line one.\n\nLine two.", "response": "Two lines.",
           "category": "summarization"}
    record = formats["dolly"].read(row)
    assert record.messages[0].content == "Summarise.\n\nBe brief.\n\nLine one.\n\nLine two."
    assert record.meta["category"] == "summarization"
    assert formats["dolly"].write(record).row == row


def test_dolly_without_the_hint_keeps_the_whole_prompt_as_instruction(formats):
    record = Record([Turn("user", "Tell me a fact."), Turn("assistant", "Owls can't move their eyes.")])
    assert formats["dolly"].write(record).row == {"instruction": "Tell me a fact.", "context": "",
                                                  "response": "Owls can't move their eyes."}


def test_a_stale_hint_is_ignored_when_the_record_was_edited(formats):
    record = formats["dolly"].read({"instruction": "Q?", "context": "Some context.", "response": "A.", "category": "closed_qa"})
    record.messages[0] = Turn("user", "A rewritten question without the context.")
    row = formats["dolly"].write(record).row
    assert row["instruction"] == "A rewritten question without the context." and row["context"] == ""


def test_trl_standard_and_conversational_sources_are_written_back_in_their_own_style(formats):
    trl = formats["trl_preference"]
    standard = trl.read({"prompt": "2+2?", "chosen": "4", "rejected": "5"})
    conversational = trl.read({"prompt": [{"role": "user", "content": "2+2?"}], "chosen": [{"role": "assistant", "content": "4"}],
                               "rejected": [{"role": "assistant", "content": "5"}]})
    assert canonical(standard) == canonical(conversational)  # the hint does not make records differ
    assert trl.write(standard).row == {"prompt": "2+2?", "chosen": "4", "rejected": "5"}
    assert trl.write(conversational).row["prompt"] == [{"role": "user", "content": "2+2?"}]
    # A record from elsewhere (no hint) is written conversational: it can hold system prompts.
    from_openai = formats["openai"].read(formats["openai"].write(standard).row)
    assert trl.write(from_openai).row["chosen"] == [{"role": "assistant", "content": "4"}]


def test_trl_implicit_prompt_is_the_shared_leading_turns(formats):
    row = {"chosen": [{"role": "system", "content": "Be kind."}, U, {"role": "assistant", "content": "Hello!"}],
           "rejected": [{"role": "system", "content": "Be kind."}, U, {"role": "assistant", "content": "Go away."}]}
    record = formats["trl_preference"].read(row)
    assert [t.role for t in record.messages] == ["system", "user"]
    assert record.chosen == [Turn("assistant", "Hello!")] and record.rejected == [Turn("assistant", "Go away.")]
    assert formats["trl_preference"].write(record).row == row


def test_stack_exchange_paired_rows_prefer_response_j(formats):
    record = formats["trl_preference"].read({"question": "How?", "response_j": "Like this.", "response_k": "No idea.",
                                             "qid": 7})
    assert record.chosen[0].content == "Like this." and record.rejected[0].content == "No idea."
    assert record.meta["qid"] == 7
    assert formats["trl_preference"].write(record).row == {"question": "How?", "response_j": "Like this.",
                                                           "response_k": "No idea.", "qid": 7}


def test_sharegpt_keeps_system_column_versus_system_turn(formats):
    fmt = formats["sharegpt"]
    column = {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}], "system": "Be brief."}
    turn = {"conversations": [{"from": "system", "value": "Be brief."}, {"from": "human", "value": "hi"},
                              {"from": "gpt", "value": "yo"}]}
    a, b = fmt.read(column), fmt.read(turn)
    assert canonical(a) == canonical(b) and a.system == "Be brief."
    assert fmt.write(a).row == column and fmt.write(b).row == turn


def test_sharegpt_reads_user_assistant_spellings_and_writes_them_back(formats):
    row = {"conversations": [{"from": "user", "value": "hi"}, {"from": "assistant", "value": "yo"},
                             {"role": "user", "content": "again"}, {"from": "tool", "value": "r"}]}
    record = formats["sharegpt"].read(row)
    assert [t.role for t in record.messages] == ["user", "assistant", "user", "tool"]
    assert formats["sharegpt"].write(record).row == row
    plain = Record(record.messages)  # no hint: the canonical ShareGPT spelling
    assert [t["from"] for t in formats["sharegpt"].write(plain).row["conversations"]] == ["human", "gpt", "human", "observation"]


def test_sharegpt_kto_tag_and_preference_pairs(formats):
    fmt = formats["sharegpt"]
    kto = fmt.read({"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}], "kto_tag": False})
    assert kto.kind == "unpaired" and kto.label is False
    assert fmt.write(formats["kto"].read(formats["kto"].write(kto).row)).row["kto_tag"] is False
    pref = fmt.read({"conversations": [{"from": "human", "value": "q"}], "chosen": {"from": "gpt", "value": "good"},
                     "rejected": {"from": "gpt", "value": "bad"}})
    assert pref.kind == "preference" and pref.chosen == [Turn("assistant", "good")]
    assert formats["openai"].write(pref).row == {
        "input": {"messages": [{"role": "user", "content": "q"}]},
        "preferred_output": [{"role": "assistant", "content": "good"}],
        "non_preferred_output": [{"role": "assistant", "content": "bad"}]}


def test_layout_hints_never_leak_into_other_formats_rows(formats):
    record = formats["dolly"].read({"instruction": "Q?", "context": "C.", "response": "A.", "category": "open_qa"})
    assert LAYOUT_KEY in record.meta
    for name in ("openai", "sharegpt", "alpaca", "lima", "gsm8k", "self_instruct", "trl_preference"):
        row = formats[name].write(record).row
        assert row is not None and LAYOUT_KEY not in json.dumps(row), name
        assert "open_qa" in json.dumps(row), f"{name} lost the category"


def test_hh_rlhf_keeps_odd_spacing_and_empty_replies(formats):
    row = {"chosen": "\n\nHuman: hi  \n\nAssistant:  two spaces\n\nHuman: and?\n\nAssistant: ",
           "rejected": "\n\nHuman: hi  \n\nAssistant:  two spaces\n\nHuman: and?\n\nAssistant:no space"}
    record = formats["hh_rlhf"].read(row)
    assert [t.content for t in record.messages] == ["hi  ", " two spaces", "and?"]
    assert record.chosen == [Turn("assistant", "")] and record.rejected == [Turn("assistant", "no space")]
    assert formats["hh_rlhf"].write(record).row == row


def test_writers_say_what_they_cannot_hold(formats):
    tools_and_system = Record([Turn("system", "S"), Turn("user", "Q"), Turn("assistant", "A", 1.0)], tools='[{"name": "f"}]')
    dropped = formats["dolly"].write(tools_and_system).dropped
    assert {"system prompt", "tools", "per-turn weights"} <= set(dropped)
    labelled = Record([Turn("user", "Q"), Turn("assistant", "A")], label=True)
    out = formats["trl_preference"].write(labelled)
    assert out.row is None and "kto" in out.dropped[0]
    assert formats["hh_rlhf"].write(labelled).row is None
    assert formats["kto"].write(Record([Turn("user", "Q"), Turn("assistant", "A")])).row is None


COMPANION_FILES = {"mt_bench_reference.jsonl"}


def test_any_write_that_drops_nothing_reads_back_to_the_same_record(formats):
    """Every sample through every writer: when a writer reports nothing dropped, reading its row
    back gives an equal record (meta included). Skips and dropped notes must be honest."""
    checked = 0
    for path in sorted(p for p in DATASETS.rglob("*") if p.is_file()):
        # MT-Bench reference answers are a companion file the mt_bench evaluator reads, not a dataset.
        if path.suffix == ".md" or path.name in COMPANION_FILES:
            continue
        for record in read_file(path, formats).records:
            for name, fmt in formats.items():
                out = fmt.write(record)
                if out.row is None or out.dropped:
                    continue
                back = fmt.read(json.loads(json.dumps(out.row)))
                assert canonical(back) == canonical(record), f"{path.name} via {name}"
                checked += 1
    assert checked > 1000


def test_mt_bench_reference_answers_become_assistant_turns(formats):
    row = {"question_id": 101, "category": "math", "turns": ["2+2?", "And 3+3?"], "reference": ["4", "6"]}
    record = formats["mt_bench"].read(row)
    assert [(t.role, t.content) for t in record.messages] == [("user", "2+2?"), ("assistant", "4"),
                                                               ("user", "And 3+3?"), ("assistant", "6")]
    assert formats["mt_bench"].write(record).row == row
    no_ref = formats["mt_bench"].read({"question_id": 1, "category": "writing", "turns": ["a", "b"]})
    assert [t.role for t in no_ref.messages] == ["user", "user"]


def test_self_instruct_instruction_and_input_split_back(formats):
    row = {"id": "t1", "name": "n", "instruction": "Sort these.", "instances": [
        {"input": "3, 1, 2", "output": "1, 2, 3"}, {"input": "b, a", "output": "a, b"}], "is_classification": False}
    record = formats["self_instruct"].read(row)
    assert record.messages[0].content == "Sort these.\n\n3, 1, 2" and record.messages[1].content == "1, 2, 3"
    assert record.meta["extra_instances"] == [{"input": "b, a", "output": "a, b"}]
    assert formats["self_instruct"].write(record).row == row


def test_csv_and_gzip_samples_write_and_read_back(formats, tmp_path):
    records = read_file(DATASETS / "trl_prompt_completion.csv", formats).records
    out = tmp_path / "pc.csv.gz"
    write_file(records, formats["trl_preference"], out)
    back = read_file(out, formats)
    assert back.detection.container == "csv" and back.detection.format == "trl_preference"
    assert [canonical(r) for r in back.records] == [canonical(r) for r in records]
    assert records[2].messages[1].content == "1. Deodorising the fridge\n2. Scrubbing stains off mugs\n3. Leavening pancakes"
