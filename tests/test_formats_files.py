"""Every sample in datasets/ and every real public file in ../shared/realdata: detection names
the right format with a reason, reading gives the expected number of records with no rejects,
and records survive format conversions unchanged."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from conftest import DATASETS, REALDATA, realdata_file
from studio.data import containers
from studio.data.convert import read_file, write_file
from studio.data.format_kit import LAYOUT_KEY, canonical
from studio.plugins import get_host

# file -> (format, records, words the detection reason must contain)
SAMPLES = {
    "alpaca.json": ("alpaca", 12, ["instruction", "history", "system"]),
    "dolly.jsonl": ("dolly", 15, ["context", "closed_qa"]),
    "dolly_noisy.jsonl": ("dolly", 24, ["context", "open_qa"]),
    "hh_rlhf.jsonl": ("hh_rlhf", 12, ["Human:", "transcripts"]),
    "kto.jsonl": ("kto", 12, ["label", "8 desirable, 4 undesirable"]),
    "kto_prompt_completion.jsonl.gz": ("kto", 10, ["prompt + completion", "label"]),
    "lima.jsonl": ("lima", 10, ["plain strings", "wikihow"]),
    "openai_chat.jsonl": ("openai", 12, ["role/content", "tool", "tool calls present", "tools present"]),
    "openai_museum_chat.parquet": ("openai", 10, ["role/content"]),
    "openai_preference.jsonl": ("openai", 10, ["preferred_output"]),
    "prompts.jsonl": ("prompts", 12, ["prompt", "id"]),
    "self_instruct_seeds.jsonl": ("self_instruct", 10, ["instances", "is_classification"]),
    "sharegpt_conversations.json": ("sharegpt", 12, ["from/value", "human, gpt, system", "system column"]),
    "sharegpt_preference.json": ("sharegpt", 10, ["chosen/rejected"]),
    "sharegpt_tools.json": ("sharegpt", 10, ["function_call", "observation", "tools present"]),
    "trl_preference_conversational.jsonl": ("trl_preference", 10, ["prompt + chosen + rejected (conversational)"]),
    "trl_preference_standard.jsonl": ("trl_preference", 12, ["prompt + chosen + rejected (standard)"]),
    "trl_prompt_completion.csv": ("trl_preference", 10, ["prompt + completion"]),
}

REAL = {
    "alpaca/alpaca_data_first200.json": ("alpaca", 200, ["instruction + output"]),
    "alpaca/torchtune_alpaca_tiny.json": ("alpaca", 100, ["instruction + output"]),
    "alpaca/llamafactory_alpaca_en_demo.json": ("alpaca", 999, ["instruction + output"]),
    "alpaca/llamafactory_alpaca_zh_demo.json": ("alpaca", 1000, ["instruction + output"]),
    "alpaca/llamafactory_identity.json": ("alpaca", 91, ["instruction + output"]),
    "sharegpt/fastchat_dummy_conversation.json": ("sharegpt", 500, ["from/value", "human, gpt", "id"]),
    "sharegpt/axolotl_fixture_conversation.json": ("sharegpt", 1, ["from/value"]),
    "sharegpt/llamafactory_glaive_toolcall_en_demo.json":
        ("sharegpt", 300, ["human, gpt, function_call, observation", "tools present"]),
    "sharegpt/llamafactory_mllm_demo.json": ("openai", 6, ["role/content", "images"]),
    "lima/llamafactory_lima.json": ("alpaca", 1029, ["history"]),
    "lima/xzhou20_lima_train_prompts.jsonl": ("prompts", 1030, ["'question'", "question_id"]),
    "preference/hh-rlhf_helpful-base_test.jsonl.gz": ("hh_rlhf", 2354, ["Human:", "transcripts"]),
    "preference/llamafactory_dpo_en_demo.json": ("sharegpt", 300, ["chosen/rejected", "system"]),
    "preference/llamafactory_kto_en_demo.json": ("kto", 300, ["boolean label"]),
    "preference/torchtune_stack_exchange_paired_tiny.json": ("trl_preference", 25, ["response_j"]),
    "seed_tasks/self_instruct_seed_tasks.jsonl": ("self_instruct", 175, ["is_classification"]),
    "seed_tasks/self_instruct_user_oriented_instructions.jsonl": ("self_instruct", 252, ["motivation_app"]),
    "benchmarks/gsm8k_test.jsonl": ("gsm8k", 1319, ["100% of answers end with '#### N'"]),
    "benchmarks/HumanEval.jsonl.gz": ("humaneval", 164, ["canonical_solution", "HumanEval/0"]),
    "benchmarks/TruthfulQA.csv": ("truthfulqa", 790, ["Best Answer", "Misconceptions"]),
    "benchmarks/mt_bench_question.jsonl": ("mt_bench", 80, ["turns", "reference"]),
    "openai_chat/openai_cookbook_toy_chat_fine_tuning.jsonl": ("openai", 5, ["role/content"]),
    "openai_chat/pirate_training_set.jsonl": ("openai", 10, ["system, user, assistant"]),
}


@pytest.fixture(scope="module")
def formats():
    return get_host().formats()


def _cases():
    cases = [pytest.param(DATASETS / name, *spec, id=f"datasets/{name}") for name, spec in SAMPLES.items()]
    cases += [pytest.param(rel, *spec, id=f"realdata/{rel}") for rel, spec in REAL.items()]
    return cases


def _path(where) -> Path:
    return where if isinstance(where, Path) else realdata_file(where)


_read_cache: dict[Path, object] = {}


def _read(path: Path, formats):
    if path not in _read_cache:
        _read_cache[path] = read_file(path, formats)
    return _read_cache[path]


def test_the_tables_cover_every_sample_and_every_real_file():
    on_disk = {p.name for p in DATASETS.iterdir() if p.is_file() and p.suffix != ".md"}
    assert on_disk == set(SAMPLES), "add new samples to SAMPLES (and old ones out of it)"
    if REALDATA.is_dir():
        real = {str(p.relative_to(REALDATA)) for p in REALDATA.rglob("*") if p.is_file() and p.name != "README.md"}
        assert real == set(REAL)


@pytest.mark.parametrize("where, expected, count, words", _cases())
def test_detection_names_the_format_and_says_why(where, expected, count, words, formats):
    result = _read(_path(where), formats)
    d = result.detection
    assert d.format == expected, f"detected {d.format}: {d.reason}; candidates {d.candidates[:3]}"
    assert d.score >= 0.9
    # The winner must win clearly, not by a coin toss between equal candidates.
    runner_up = next((c for c in d.candidates if c[0] != expected), None)
    if runner_up is not None:
        assert (runner_up[1], formats[runner_up[0]].specificity) < (d.score, formats[expected].specificity)
    for word in words:
        assert word in d.reason, f"{word!r} missing from reason: {d.reason}"
    assert len(result.records) == count
    assert result.rejects == []


@pytest.mark.parametrize("where, expected, count, words", _cases())
def test_round_trip_through_openai_and_back_keeps_every_record(where, expected, count, words, formats, tmp_path):
    source = _read(_path(where), formats)
    fmt = formats[expected]

    as_openai = tmp_path / "as_openai.jsonl"
    report = write_file(source.records, formats["openai"], as_openai)
    assert (report.written, report.skipped, dict(report.dropped)) == (count, 0, {})
    via_openai = read_file(as_openai, formats, override="openai")
    assert via_openai.rejects == []
    # Nothing format-private leaks into another format's rows.
    assert all(LAYOUT_KEY not in row.data for row in containers.read_rows(as_openai))

    back = tmp_path / f"back{fmt.default_extension}"
    report = write_file(via_openai.records, fmt, back)
    assert (report.written, report.skipped) == (count, 0)
    again = read_file(back, formats)
    assert again.detection.format == expected
    assert again.rejects == []
    assert [canonical(r) for r in again.records] == [canonical(r) for r in source.records]


@pytest.mark.parametrize("where, expected, count, words", _cases())
def test_writing_back_to_the_same_format_gives_the_same_rows(where, expected, count, words, formats, tmp_path):
    path = _path(where)
    source = _read(path, formats)
    fmt = formats[expected]
    out = tmp_path / f"same{fmt.default_extension}"
    report = write_file(source.records, fmt, out)
    assert (report.written, report.skipped, dict(report.dropped)) == (count, 0, {})
    original = [r.data for r in containers.read_rows(path, source.detection.container)]
    written = [r.data for r in containers.read_rows(out)]
    assert len(written) == len(original)
    for i, (a, b) in enumerate(zip(original, written)):
        assert b == a, f"row {i} differs"


def test_hh_rlhf_real_file_is_rendered_back_byte_for_byte(formats, tmp_path):
    path = realdata_file("preference/hh-rlhf_helpful-base_test.jsonl.gz")
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        original = [json.loads(line) for line in fh if line.strip()]
    result = _read(path, formats)
    fmt = formats["hh_rlhf"]
    rows = [fmt.write(r).row for r in result.records]
    assert len(rows) == len(original) == 2354
    mismatched = [i for i, (a, b) in enumerate(zip(original, rows))
                  if (a["chosen"], a["rejected"]) != (b["chosen"], b["rejected"])]
    assert mismatched == []
    # The file's quirks are really there, so the check above covers them.
    texts = [s for row in original for s in (row["chosen"], row["rejected"])]
    assert sum(t.endswith("\n\nAssistant: ") for t in texts) >= 1  # empty final reply
    assert sum("\n\nAssistant:  " in t for t in texts) >= 1  # reply starting with a space
    assert any(r.chosen and len(r.chosen) > 1 for r in result.records)  # diverging before the last turn


def test_hh_rlhf_prompt_is_the_shared_start(formats):
    result = _read(realdata_file("preference/hh-rlhf_helpful-base_test.jsonl.gz"), formats)
    first = result.records[0]
    assert [t.role for t in first.messages] == ["user"]
    assert first.messages[0].content == "Do you know why turkeys became the official food of thanksgiving?"
    assert first.chosen[0].content.startswith("To be honest, I don’t know anything about that.")
    assert first.chosen != first.rejected


def test_converted_files_read_identically_whatever_the_source_format(formats, tmp_path):
    """The same conversation read from ShareGPT and from its OpenAI export gives equal records,
    including tool calls (ShareGPT function_call text vs OpenAI tool_calls objects)."""
    source = _read(DATASETS / "sharegpt_tools.json", formats)
    out = tmp_path / "tools.jsonl"
    write_file(source.records, formats["openai"], out)
    rows = [r.data for r in containers.read_rows(out)]
    call = rows[0]["messages"][1]["tool_calls"][0]
    assert call["type"] == "function" and call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "Lisbon"}
    assert rows[0]["tools"][0]["name"] == "get_weather"  # tools become a list, not JSON text
    back = read_file(out, formats)
    assert [canonical(r) for r in back.records] == [canonical(r) for r in source.records]


def test_datasets_folder_holds_data_and_cards_only():
    files = [p for p in DATASETS.rglob("*") if p.is_file()]
    assert not [p for p in files if p.suffix == ".py" or p.name == "__init__.py"]
    for name in SAMPLES:
        card = DATASETS / (name.split(".")[0] + ".md")
        assert card.is_file(), f"{name} has no card {card.name}"
        text = card.read_text(encoding="utf-8")
        assert "CC0" in text and f"{SAMPLES[name][1]} records" in text, card.name


def test_the_datasets_library_is_not_shadowed_by_the_samples_folder():
    import datasets

    assert callable(getattr(datasets, "load_dataset", None)), "datasets/ is shadowing the Hugging Face library"
    assert not Path(datasets.__file__).resolve().is_relative_to(DATASETS.resolve())
