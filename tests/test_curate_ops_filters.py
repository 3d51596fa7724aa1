"""Quality filter ops (studio_curate_filters): planted rows with exact expectations per rule, real
files from ../shared/realdata (skipped when absent) and the project's datasets/ samples."""
from __future__ import annotations

from pathlib import Path

import pytest

from studio.curation.op_base import OpContext, OpInput
from studio.data.convert import read_file
from studio.plugins import get_host
from studio.records import Record, Turn
from studio.store import Workspace

from conftest import DATASETS, realdata_file


def ops():
    return get_host().items("curation_op")


def make_input(tmp_path: Path, records: list[Record], name: str = "t") -> OpInput:
    ws = Workspace.init(tmp_path / "ws")
    info = ws.write_version(name, records, {"name": "t"})
    return OpInput(ws.root / "data" / name / "versions" / info.id / "data.arrow")


def run_op(name: str, data: OpInput, ctx: OpContext | None = None, **config):
    op = ops()[name]
    return op.run(data, op.config_model(**config), ctx or OpContext())


def conv(user: str, assistant: str | None, system: str | None = None, **meta) -> Record:
    turns = ([Turn("system", system)] if system else []) + [Turn("user", user)]
    if assistant is not None:
        turns.append(Turn("assistant", assistant))
    return Record(turns, meta=meta)


def pair(prompt: str, chosen: str, rejected: str) -> Record:
    return Record([Turn("user", prompt)], [Turn("assistant", chosen)], [Turn("assistant", rejected)])


def removed(result) -> dict[int, str]:
    return {i: r.reason for i, r in result.removals.items()}


def load(path: Path) -> list[Record]:
    return read_file(path, get_host().formats()).records


FINE = "Paris is the capital of France. It lies on the Seine and is known for its museums."


def test_all_filter_ops_are_registered_with_documented_configs():
    names = {"length_filter", "turn_filter", "response_filter", "refusal_filter", "repetition_filter",
             "non_text_filter", "language_filter"}
    registered = ops()
    assert names <= set(registered)
    for name in names:
        op = registered[name]
        assert op.category == "filter" and op.title and op.summary
        for field_name, info in op.config_model.model_fields.items():
            assert info.description, f"{name}.{field_name} has no description (it is the CLI help and form label)"
        op.config_model()  # defaults are valid


# --- length ----------------------------------------------------------------------------------


def test_length_filter_words_and_real_tokens(tmp_path):
    rows = [
        conv("q", "Yes."),                                 # 1 word
        conv("q", "A reasonable answer of six words."),    # 6 words
        conv("q", " ".join(["word"] * 40)),                # 40 words
        conv("q", "Pneumonoultramicroscopicsilicovolcanoconiosis is long."),  # 3 words, many WordPiece tokens
    ]
    data = make_input(tmp_path, rows)
    result = run_op("length_filter", data, min_words=2, max_words=30)
    assert removed(result) == {0: "too few words", 2: "too many words"}
    assert result.removals[0].detail == {"rule": "min_words", "value": 1, "threshold": 2, "part": "response"}
    assert result.removals[2].detail["value"] == 40 and result.removals[2].detail["threshold"] == 30

    # Tokens come from the bundled all-MiniLM-L6-v2 WordPiece tokenizer: the long word splits up.
    result = run_op("length_filter", data, min_words=None, max_tokens=10)
    assert removed(result) == {2: "too many tokens", 3: "too many tokens"}
    assert result.removals[2].detail["value"] == 40
    assert result.removals[3].detail["value"] > 10  # 3 words, more than 10 sub-word tokens
    assert result.report["tokenizer"].endswith("model")


def test_length_filter_counts_past_the_tokenizers_max_length(tmp_path):
    # The tokenizer's model_max_length is 512; a token count must not be truncated to it.
    data = make_input(tmp_path, [conv("q", "hello " * 700)])
    result = run_op("length_filter", data, min_words=None, max_tokens=600)
    assert result.removals[0].detail["value"] == 700


def test_length_filter_with_a_user_tokenizer_file(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({"[UNK]": 0, "a": 1, "b": 2}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(tmp_path / "tokenizer.json"))
    data = make_input(tmp_path, [conv("q", "a b a"), conv("q", "a b a b a b")])
    ctx = OpContext(base_dir=tmp_path)
    result = run_op("length_filter", data, ctx, part="response", min_words=None, max_tokens=4,
                    tokenizer="tokenizer.json")  # relative: resolved against ctx.base_dir
    assert removed(result) == {1: "too many tokens"}
    assert result.removals[1].detail["value"] == 6


def test_length_filter_part_and_bounds_validation(tmp_path):
    data = make_input(tmp_path, [conv("a very long question with many words in it", "short answer")])
    assert removed(run_op("length_filter", data, part="prompt", max_words=5)) == {0: "too many words"}
    assert removed(run_op("length_filter", data, part="response", max_words=5)) == {}
    with pytest.raises(ValueError, match="min_words"):
        ops()["length_filter"].config_model(min_words=10, max_words=5)


# --- turns -----------------------------------------------------------------------------------


def test_turn_filter(tmp_path):
    from studio_curate_filters.turns import count_turns

    rows = [
        Record([Turn("user", "only a question")]),
        conv("q", "a", system="be nice"),
        Record([Turn("user", "q1"), Turn("assistant", "a1"), Turn("user", "q2"), Turn("assistant", "a2"),
                Turn("user", "q3"), Turn("assistant", "a3")]),
        pair("q", "good", "bad"),
        Record([Turn("user", "weather?"), Turn("tool_call", '{"name": "w"}'), Turn("tool", "sunny"),
                Turn("assistant", "It is sunny.")]),
    ]
    data = make_input(tmp_path, rows)
    result = run_op("turn_filter", data, min_turns=2, max_turns=4)
    assert removed(result) == {0: "too few turns", 2: "too many turns"}
    assert result.removals[2].detail == {"rule": "max_turns", "value": 6, "threshold": 4}
    # The columnar count equals the per-row definition.
    roles = frozenset(["user", "assistant", "tool_call", "tool"])
    assert [count_turns(r, roles) for r in data.rows()] == [1, 2, 6, 2, 4]
    assert result.report["turns"]["max"] == 6
    only_user = run_op("turn_filter", data, min_turns=2, roles=["user"])
    assert set(only_user.removals) == {0, 1, 3, 4}


# --- response --------------------------------------------------------------------------------


def test_response_filter_planted_cases(tmp_path):
    rows = [
        conv("q", FINE),                                                                  # 0 ok
        conv("q", None),                                                                  # 1 no answer
        conv("q", "   "),                                                                 # 2 empty
        conv("q", "Here is the code:\n```python\nprint('hi')\n"),                         # 3 fence
        conv("q", "The list goes on and on and on..."),                                   # 4 ellipsis
        conv("q", "There are three primary colours: red, yellow,"),                       # 5 dangling comma
        conv("q", "The meeting is scheduled for Monday. Please bring the"),               # 6 dangling word
        conv("q", "The tower was built in 1889. It was designed by the company of Gustave Eiffel for"),  # 7
        conv("q", "The tower was built in 1889. Its designer later worked on many bridges across Europe"),  # 8
        conv("q", "Inline ```code``` spans come in pairs, so this is fine."),               # 9 ok
        conv("q", "Shopping list:\n- apples\n- pears"),                                   # 10 ok (list)
        conv("q", "42"),                                                                  # 11 ok (short)
        conv("q", "Use `x = 1` like this:\n```\nx = 1\n```"),                             # 12 ok
        pair("q", FINE, ""),                                                              # 13 empty rejected
        pair("q", FINE, "I think the answer is,"),                                        # 14 truncated rejected
        conv("q", '"I thought that no one but myself . . ." -C.S. Lewis'),                # 15 ok (quote)
        conv("q", "Loving every minute of this trip with my best friends #travel #friends #summer"),  # 16 ok
    ]
    data = make_input(tmp_path, rows)
    result = run_op("response_filter", data)
    assert removed(result) == {
        1: "no response", 2: "empty response", 3: "unclosed code fence", 4: "ends with an ellipsis",
        5: "ends mid-sentence", 6: "ends mid-sentence", 7: "ends mid-sentence", 8: "ends mid-sentence",
        13: "empty response", 14: "ends mid-sentence",
    }
    assert result.removals[5].detail["rule"] == "dangling"
    assert result.removals[6].detail["rule"] == "dangling"  # "...bring the"
    assert result.removals[7].detail["rule"] == result.removals[8].detail["rule"] == "mid_sentence"
    assert result.removals[13].detail["side"] == "rejected"
    # Configurable: only the chosen side, no mid_sentence heuristic, no required answer.
    relaxed = run_op("response_filter", data, truncation=["code_fence", "ellipsis", "dangling"],
                     check_rejected=False, require_response=False)
    assert set(relaxed.removals) == {2, 3, 4, 5, 6}  # row 7 ends on "for": only mid_sentence catches it


def test_response_filter_on_real_files_removes_little_from_clean_data_and_much_from_hh():
    clean = load(realdata_file("alpaca/llamafactory_alpaca_en_demo.json"))
    hh = load(realdata_file("preference/hh-rlhf_helpful-base_test.jsonl.gz"))
    from studio_curate_filters.response import judge_response

    cfg = ops()["response_filter"].config_model().model_dump()
    checks = frozenset(cfg["truncation"])
    clean_rate = sum(judge_response(r.to_row(), cfg, checks) is not None for r in clean) / len(clean)
    # hh-rlhf's answers are often cut mid-sentence ("...Now you can"); Alpaca's are finished.
    hh_rate = sum(judge_response(r.to_row(), cfg, checks) is not None for r in hh) / len(hh)
    assert clean_rate < 0.03
    assert hh_rate > 0.05


# --- refusal ---------------------------------------------------------------------------------


def test_refusal_filter_planted_and_pair_policy(tmp_path):
    rows = [
        conv("q", FINE),                                                                       # 0 ok
        conv("q", "As an AI language model, I don't have personal opinions on this."),         # 1 boilerplate
        conv("q", "I’m sorry, but I cannot help with creating malware."),                      # 2 curly apostrophe
        conv("q", "I cannot fulfill that request."),                                           # 3
        pair("how to pick a lock", "I'm sorry, but I can't assist with that.", "Sure: insert a tension wrench"),  # 4
        pair("capital of France?", "Paris.", "I'm sorry, but I cannot answer that."),          # 5 kept
        conv("q", "The aide said, as an aide would, that the plan works."),                    # 6 ok ('as an aide')
        Record([Turn("user", "q"), Turn("assistant", "As an AI, I can't say.")], label=False),  # 7 undesirable: kept
        Record([Turn("user", "q"), Turn("assistant", "As an AI, I can't say.")], label=True),   # 8 desirable: drop
        conv("q", "Honestly, that cake recipe is a total disaster."),                           # 9 custom phrase
        Record([Turn("user", "a"), Turn("assistant", "I cannot comply with that."), Turn("user", "b"),
                Turn("assistant", "Fine.")]),                                                   # 10 earlier turn
    ]
    data = make_input(tmp_path, rows)
    result = run_op("refusal_filter", data, extra_phrases=["total disaster"])
    assert removed(result) == {1: "AI boilerplate", 2: "refusal", 3: "refusal", 4: "refusal in chosen",
                               8: "AI boilerplate", 9: "listed phrase", 10: "refusal"}
    assert result.removals[2].detail["value"] == "i'm sorry, but i cannot"
    assert result.removals[1].detail["value"] == "as an ai language model"
    assert result.removals[10].detail["turn"] == 1
    assert result.report["kept_with_refusing_rejected"] == 1
    assert result.report["kept_undesirable_refusals"] == 1
    either = run_op("refusal_filter", data, pair_policy="drop_if_either_refuses")
    assert {4, 5, 7} <= set(either.removals)
    assert removed(either)[5] == "refusal in rejected"
    last_only = run_op("refusal_filter", data, all_assistant_turns=False, categories=["refusal"])
    assert set(last_only.removals) == {2, 3, 4}


def test_refusal_filter_on_real_sharegpt_finds_the_boilerplate():
    rows = load(realdata_file("sharegpt/fastchat_dummy_conversation.json"))
    from studio_curate_filters.refusal import judge_refusal

    cfg = ops()["refusal_filter"].config_model().model_dump()
    verdicts = [judge_refusal(r.to_row(), cfg) for r in rows]
    hits = [v for v in verdicts if v is not None]
    texts = [r.text().lower() for r, v in zip(rows, verdicts) if v is not None]
    assert hits and all("as a language model" in t or "as an ai" in t for t in texts)
    # Rows without any listed phrase are never flagged.
    assert all(v is None for r, v in zip(rows, verdicts) if "language model" not in r.text().lower()
               and "as an ai" not in r.text().lower() and "sorry" not in r.text().lower())


# --- repetition ------------------------------------------------------------------------------


LOOP = "The cat sat on the mat and looked out of the window at the birds. " * 6
PROSE = ("Photosynthesis converts light energy into chemical energy. Plants absorb sunlight with chlorophyll, "
         "take in carbon dioxide through stomata and water through their roots. The light reactions split water "
         "and release oxygen, while the Calvin cycle fixes carbon into sugars that fuel growth. Different plants "
         "use C3, C4 or CAM pathways, which trade water efficiency against energy cost in hot, dry climates.")


def test_repetition_filter_planted(tmp_path):
    rows = [
        conv("q", PROSE),                                                         # 0 ok
        conv("q", LOOP),                                                          # 1 repeated n-grams
        conv("q", "Step one.\nDo it again.\nDo it again.\nDo it again.\nDone."),  # 2 duplicate lines
        conv("q", "Para one is here.\n\nPara two.\n\nPara one is here.\n\nPara one is here."),  # 3
        conv("q", "New York is in New York state."),                             # 4 short: n-gram rules off
        conv("q", "```\nx = 1\nx = 1\nx = 1\n```\nThat sets x."),                 # 5 code ignored
        pair("q", PROSE, LOOP),                                                   # 6 rejected loops
    ]
    data = make_input(tmp_path, rows)
    result = run_op("repetition_filter", data)
    assert removed(result) == {1: "repeated n-grams", 2: "repeated lines", 3: "repeated lines",
                               6: "repeated n-grams"}
    detail = result.removals[1].detail
    assert detail["rule"] == "dup_5gram_frac" and detail["value"] > 0.6 and detail["threshold"] == 0.30
    assert result.removals[2].detail["rule"] == "dup_line_frac"
    assert result.removals[2].detail["value"] == pytest.approx(0.4)
    assert result.removals[6].detail["side"] == "rejected"
    assert set(run_op("repetition_filter", data, check_rejected=False).removals) == {1, 2, 3}
    # Gopher's own thresholds, and the top-2-gram rule alone, are configurable.
    gopher = run_op("repetition_filter", data, min_words=5, top_ngram_frac={2: 0.20, 3: 0.18, 4: 0.16},
                    dup_ngram_frac={}, dup_line_frac=None, dup_line_char_frac=None, dup_para_frac=None,
                    dup_para_char_frac=None)
    assert 4 in gopher.removals and gopher.removals[4].detail["rule"] == "top_2gram_frac"


def test_repetition_gopher_measures():
    from studio_curate_filters.repetition import _duplicate_ngram_chars, _top_ngram_chars

    words = "a b c a b c a b c".split()
    assert _top_ngram_chars(words, 2) == 3 * 3  # "a b" three times, 3 characters each
    # Non-overlapping repeats of "a b c d e": the second copy only.
    assert _duplicate_ngram_chars("a b c d e a b c d e".split(), 5) == 5
    assert _duplicate_ngram_chars("a b c d e f".split(), 5) == 0


def test_repetition_filter_keeps_nearly_all_real_answers():
    from studio_curate_filters.repetition import judge_repetition

    cfg = ops()["repetition_filter"].config_model().model_dump()
    rows = load(realdata_file("alpaca/llamafactory_alpaca_en_demo.json")) + \
        load(realdata_file("benchmarks/gsm8k_test.jsonl"))
    rate = sum(judge_repetition(r.to_row(), cfg) is not None for r in rows) / len(rows)
    assert rate < 0.01


# --- non-text --------------------------------------------------------------------------------


def test_non_text_filter_planted(tmp_path):
    rows = [
        conv("q", FINE),                                                               # 0 ok
        conv("q", "@@@ ### ~~~ {{{ }}} \\\\ @@@ ### ~~~ {{{ }}} ok"),                   # 1 symbols
        conv("q", "1234567890 0987654321 1122334455 9988776655"),                     # 2 digits
        conv("q", "```python\ndef f(x):\n    return {k: v for k, v in x.items()}\n```\nThis returns a dict."),  # 3
        conv("q", "def f(x):\n    y = [i ** 2 for i in x]\n    return {'a': y}\n"),     # 4 bare code: skipped
        conv("q", "7"),                                                                # 5 short: not judged
        conv("q", "मेरा बेटा पैदा हुआ और हम सब बहुत खुश हैं।"),                          # 6 Devanagari is text
        conv("q", "The total is 3 * 4 = <<3*4=12>>12 apples, so she has 12 left."),     # 7 worked sum ok
        pair("q", FINE, "%%%% $$$$ ^^^^ &&&& ____ |||| ~~~~ @@@@"),                    # 8 rejected symbols
    ]
    data = make_input(tmp_path, rows)
    result = run_op("non_text_filter", data)
    assert removed(result) == {1: "mostly symbols", 2: "mostly non-letters", 8: "mostly symbols"}
    assert result.removals[2].detail == {"rule": "max_non_alpha_ratio", "value": 1.0, "threshold": 0.8,
                                         "side": "response"}
    # Without code awareness the fenced code is judged too (and is symbol-heavy).
    strict = run_op("non_text_filter", data, code_aware=False, max_symbol_ratio=0.1)
    assert set(strict.removals) == {1, 2, 3, 8}


def test_non_text_filter_keeps_real_chinese_and_maths():
    from studio_curate_filters.non_text import judge_non_text

    cfg = ops()["non_text_filter"].config_model().model_dump()
    rows = load(realdata_file("alpaca/llamafactory_alpaca_zh_demo.json")) + \
        load(realdata_file("benchmarks/gsm8k_test.jsonl"))
    rate = sum(judge_non_text(r.to_row(), cfg) is not None for r in rows) / len(rows)
    assert rate < 0.005


# --- language --------------------------------------------------------------------------------


def test_language_filter_planted(tmp_path):
    rows = [
        conv("What is the capital of France?", "The capital of France is Paris, a city on the Seine."),
        conv("Quelle est la capitale de la France ?", "La capitale de la France est Paris, sur la Seine."),
        conv("Was ist die Hauptstadt von Frankreich?", "Die Hauptstadt von Frankreich ist Paris."),
        conv("法国的首都是哪里？", "法国的首都是巴黎，位于塞纳河畔，是一座历史悠久的城市。"),
        conv("Hi", "Yo"),  # too short to tell: kept
    ]
    data = make_input(tmp_path, rows)
    result = run_op("language_filter", data, languages=["en"])
    assert removed(result) == {1: "language not allowed", 2: "language not allowed", 3: "language not allowed"}
    assert result.removals[1].detail["language"] == "fr"
    assert result.removals[3].detail["language"] == "zh"
    assert result.report["languages"] == {"en": 1, "fr": 1, "de": 1, "zh": 1, "und": 1}
    multi = run_op("language_filter", data, languages=["en", "fr", "zh"])
    assert set(multi.removals) == {2}
    report_only = run_op("language_filter", data, languages=[])
    assert not report_only.removals and report_only.report["languages"]["de"] == 1
    with pytest.raises(ValueError, match="unknown language"):
        ops()["language_filter"].config_model(languages=["english"])


def test_language_filter_separates_real_english_and_chinese_alpaca(tmp_path):
    en = load(realdata_file("alpaca/llamafactory_alpaca_en_demo.json"))[:300]
    zh = load(realdata_file("alpaca/llamafactory_alpaca_zh_demo.json"))[:300]
    data = make_input(tmp_path, en + zh)
    result = run_op("language_filter", data, languages=["en"])
    removed_en = sum(1 for i in result.removals if i < 300)
    removed_zh = sum(1 for i in result.removals if i >= 300)
    assert removed_zh >= 295 and removed_en <= 3
    keep_zh = run_op("language_filter", data, languages=["zh"])
    assert sum(1 for i in keep_zh.removals if i >= 300) <= 3  # Wu/Cantonese guesses count as zh


# --- the project's samples, and the parallel path -------------------------------------------


def test_filters_on_project_samples(tmp_path):
    records = []
    for name in ("dolly.jsonl", "openai_chat.jsonl", "trl_preference_standard.jsonl", "hh_rlhf.jsonl"):
        records += load(DATASETS / name)
    data = make_input(tmp_path, records)
    for name in ("refusal_filter", "repetition_filter", "non_text_filter"):
        result = run_op(name, data)
        assert len(result.keep) == len(records)
        assert result.report["removed"] <= len(records) // 4, (name, result.report)
    lang = run_op("language_filter", data, languages=["en"])
    assert lang.report["languages"].get("en", 0) >= len(records) * 0.8


@pytest.mark.slow
def test_filters_give_the_same_verdicts_in_worker_processes(tmp_path, monkeypatch):
    from studio.curation import op_base

    rows = [conv("q", FINE), conv("q", LOOP), conv("q", "As an AI language model, no."),
            conv("q", "Bonjour, je voudrais un café et un croissant, s'il vous plaît."), conv("q", "and then the")] * 40
    data = make_input(tmp_path, rows)
    serial = {name: removed(run_op(name, data, languages=["en"]) if name == "language_filter" else run_op(name, data))
              for name in ("refusal_filter", "language_filter")}
    monkeypatch.setattr(op_base, "PARALLEL_MIN_ROWS", 10)
    monkeypatch.setattr(op_base, "CHUNK_ROWS", 50)
    ctx = OpContext(num_proc=2)
    for name, expected in serial.items():
        config = {"languages": ["en"]} if name == "language_filter" else {}
        assert removed(run_op(name, data, ctx, **config)) == expected
    assert set(serial["refusal_filter"]) == set(range(2, 200, 5))


def test_cancelled_filter_stops(tmp_path):
    data = make_input(tmp_path, [conv("q", FINE)] * 5)
    with pytest.raises(InterruptedError):
        run_op("refusal_filter", data, OpContext(cancelled=lambda: True))
