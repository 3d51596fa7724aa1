"""Preference generators and the judge: verdict parsing (JSON and fallbacks), best/worst pairing with
scores kept, ties, n vs separate samples, several models, judge_scores annotations, and the
judge_filter curation op on a stored dataset."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from generation_fakes import FakeContext, Request, failed, run_generator
from studio.curation.op_base import OpContext, OpInput
from studio.records import Record, Turn
from studio.store import Workspace
from studio_generate_preference.judge import ASPECTS, JudgeParseError, parse_verdict
from studio_generate_preference.judge_filter import JudgeFilter
from studio_generate_preference.pairs import PairsConfig, PreferencePairs
from studio_generate_preference.scores import JudgeScores

# --- verdict parsing -------------------------------------------------------------------------------


def test_strict_json_verdict():
    verdict = parse_verdict('{"helpfulness": 4, "honesty": 5, "instruction_following": 3, "truthfulness": 4, '
                            '"rationale": "Mostly right."}')
    assert verdict.score == 4.0 and verdict.method == "json"
    assert verdict.aspects == {"helpfulness": 4, "honesty": 5, "instruction_following": 3, "truthfulness": 4}
    assert verdict.rationale == "Mostly right."


def test_json_inside_prose_fences_and_nesting():
    text = ("Let me think about this answer.\n```json\n"
            '{"scores": {"Helpfulness": {"score": 2, "rationale": "vague"}, "Instruction-Following": "3/5"}, '
            '"explanation": "Too vague."}\n```\nThat is my grade.')
    verdict = parse_verdict(text)
    assert verdict.aspects == {"helpfulness": 2, "instruction_following": 3}
    assert verdict.score == 2.5 and verdict.rationale == "Too vague."
    # Only an overall score, on a 10-point scale.
    assert parse_verdict('{"score": 8, "reason": "good"}', scale=10).score == 8


def test_regex_fallback_and_rescaling():
    text = ("**Helpfulness**: 4/5\nHonesty - 5\nInstruction following: 3 out of 5\nTruthfulness: 8/10\n"
            "Rationale: clear but misses a constraint")
    verdict = parse_verdict(text)
    assert verdict.method == "text"
    assert verdict.aspects == {"helpfulness": 4, "honesty": 5, "instruction_following": 3, "truthfulness": 4}
    assert verdict.score == 4.0 and verdict.rationale == "clear but misses a constraint"
    assert parse_verdict("Overall score: 7/10. Fine answer.", scale=10).score == 7
    assert parse_verdict("Rating: 7/10", scale=5).score == 3.5
    # Broken JSON falls back to text patterns.
    assert parse_verdict('{"helpfulness": 3, "honesty": 4,').aspects == {"helpfulness": 3, "honesty": 4}


def test_unusable_verdicts_raise():
    for text in ("", "zq blorp 7 ,,,", '{"helpfulness": 9}', '{"helpfulness": 0, "honesty": "great"}',
                 "I would give it a good mark."):
        with pytest.raises(JudgeParseError, match="no score"):
            parse_verdict(text)
    with pytest.raises(ValidationError):
        PairsConfig(scale=7)
    assert PairsConfig(scale="10").scale == 10  # command-line text


# --- preference_pairs ----------------------------------------------------------------------------

ANSWERS = ["a solid answer", "a wrong answer", "a great answer", "a weak answer"]
SCORES = {"solid": 4, "wrong": 1, "great": 5, "weak": 2}


def graded(request: Request) -> str:
    graded_answer = request.last_user.split("=== Answer to grade ===\n", 1)[1].split("\n\n", 1)[0]
    word = graded_answer.split()[1]
    s = SCORES.get(word)
    if s is None:
        return "blorp"
    return json.dumps({a: s for a in ("helpfulness", "honesty", "instruction_following", "truthfulness")}
                      | {"rationale": f"{word} answer"})


def pair_script(answers=ANSWERS, judge=graded):
    def answer(request: Request):
        if "=== Answer to grade ===" in request.text:
            return judge(request)
        n = int(request.params.get("n") or 1)
        if n > 1:
            return answers[:n]
        return answers[request.sample % len(answers)]

    return answer


def prompts(*texts: str) -> list[Record]:
    return [Record([Turn("user", t)], meta={"id": i, "_layout": {"format": "prompts"}}) for i, t in enumerate(texts)]


def test_pairs_pick_best_and_worst_and_keep_scores():
    ctx = FakeContext(pair_script(), seeds=prompts("Explain tides"))
    [record] = run_generator(PreferencePairs(), ctx)
    assert record.kind == "preference"
    assert [(t.role, t.content) for t in record.messages] == [("user", "Explain tides")]
    assert record.chosen == [Turn("assistant", "a great answer")]
    assert record.rejected == [Turn("assistant", "a wrong answer")]
    gen = record.meta["generation"]
    assert (gen["chosen_index"], gen["rejected_index"], gen["margin"]) == (2, 1, 4.0)
    assert [r["score"] for r in gen["responses"]] == [4, 1, 5, 2]
    assert [r["rationale"] for r in gen["responses"]] == ["solid answer", "wrong answer", "great answer",
                                                          "weak answer"]
    assert record.meta["judge"]["score"] == 5 and record.meta["judge"]["rejected"]["score"] == 1
    assert record.meta["seed"] == {"id": 0}
    # 4 answers as separate samples, then 4 judge requests at temperature 0.
    assert [r.sample for r in ctx.requests[:4]] == [0, 1, 2, 3]
    assert all(r.params["temperature"] == 0.0 for r in ctx.requests[4:])
    assert len(ctx.requests) == 8 and ctx.failures == []


def test_ties_fail_with_a_reason_or_are_kept_with_zero_margin():
    def same(request: Request) -> str:
        return json.dumps(dict.fromkeys(["helpfulness", "honesty", "instruction_following", "truthfulness"], 3))

    ctx = FakeContext(pair_script(judge=same), seeds=prompts("Explain tides"))
    assert run_generator(PreferencePairs(), ctx) == []
    [failure] = ctx.failures
    assert failure.stage == "pair" and "no clear preference" in failure.message and "min_margin 1" in failure.message
    ctx = FakeContext(pair_script(judge=same), seeds=prompts("Explain tides"))
    [record] = run_generator(PreferencePairs(), ctx, min_margin=0)
    assert record.chosen[0].content == "a solid answer" and record.rejected[0].content == "a wrong answer"
    assert record.meta["generation"]["margin"] == 0


def test_margin_threshold_between_best_and_worst():
    scores = {"solid": 4, "wrong": 3, "great": 4, "weak": 3}
    judge = lambda r: f"Score: {scores[r.last_user.split('=== Answer to grade ===')[1].split()[1]]}"  # noqa: E731
    ctx = FakeContext(pair_script(judge=judge), seeds=prompts("q"))
    assert run_generator(PreferencePairs(), ctx, min_margin=1.5) == []
    ctx = FakeContext(pair_script(judge=judge), seeds=prompts("q"))
    [record] = run_generator(PreferencePairs(), ctx, min_margin=1.0)
    # Ties broken by answer order: first best (0) and first worst (1).
    assert (record.meta["generation"]["chosen_index"], record.meta["generation"]["rejected_index"]) == (0, 1)


def test_use_n_and_several_models():
    ctx = FakeContext(pair_script(), seeds=prompts("Explain tides"))
    [record] = run_generator(PreferencePairs(), ctx, use_n=True)
    assert ctx.requests[0].params["n"] == 4 and ctx.requests[1].last_user.startswith("You are a strict")
    assert record.chosen[0].content == "a great answer"

    ctx = FakeContext(pair_script(), seeds=prompts("Explain tides"))
    [record] = run_generator(PreferencePairs(), ctx, models=["m-a", "m-b"], judge_model="judge-x")
    assert [r.params.get("model") for r in ctx.requests] == ["m-a", "m-b", "m-a", "m-b"] + ["judge-x"] * 4
    gen = record.meta["generation"]
    assert [r["model"] for r in gen["responses"]] == ["m-a", "m-b", "m-a", "m-b"]
    assert gen["judge_model"] == "judge-x" and record.meta["judge"]["model"] == "judge-x"
    assert (gen["chosen_model"], gen["rejected_model"]) == ("m-a", "m-b")

    ctx = FakeContext(pair_script(), seeds=prompts("Explain tides"))
    run_generator(PreferencePairs(), ctx, models=["m-a", "m-b"], use_n=True)
    assert [(r.params.get("model"), r.params.get("n")) for r in ctx.requests[:2]] == [("m-a", 2), ("m-b", 2)]


def test_unscorable_answers_and_failed_requests_fail_rows():
    ctx = FakeContext(pair_script(judge=lambda r: "I like it."), seeds=prompts("Explain tides"))
    assert run_generator(PreferencePairs(), ctx) == []
    assert ctx.failures[0].stage == "judge" and "only 0 of 4 answers got a score" in ctx.failures[0].message

    # Two scorable answers out of four still make a pair.
    answers = ["a great answer", "a blorp answer", "a wrong answer", "a blorp answer"]
    ctx = FakeContext(pair_script(answers), seeds=prompts("Explain tides"))
    [record] = run_generator(PreferencePairs(), ctx)
    assert [r["problem"] is not None for r in record.meta["generation"]["responses"]] == [False, True, False, True]

    def broken(request: Request):
        return failed(502) if "broken" in request.text else pair_script()(request)

    ctx = FakeContext(broken, seeds=prompts("Explain tides", "broken prompt", "Explain rain"))
    records = run_generator(PreferencePairs(), ctx)
    assert [r.messages[0].content for r in records] == ["Explain tides", "Explain rain"]
    assert [(f.stage, f.source_index) for f in ctx.failures] == [("response", 1)]


def test_judge_asks_for_the_verdict_schema_and_falls_back_when_it_is_refused():
    ctx = FakeContext(pair_script(), seeds=prompts("Explain tides"))
    run_generator(PreferencePairs(), ctx, responses_per_prompt=2, scale=10)
    judged = [r for r in ctx.requests if "=== Answer to grade ===" in r.text]
    schema = judged[0].params["response_format"]["json_schema"]["schema"]
    assert list(schema["properties"]) == [*ASPECTS, "rationale"] == schema["required"]
    assert schema["properties"]["honesty"] == {"type": "integer", "minimum": 1, "maximum": 10}
    assert all(r.params["response_format"] == judged[0].params["response_format"] for r in judged)

    # An endpoint without structured outputs refuses the parameter: the judge asks again without it.
    def refuses_schemas(request: Request):
        if "response_format" in request.params:
            return failed(400, "Unrecognized request argument supplied: response_format")
        return pair_script()(request)

    ctx = FakeContext(refuses_schemas, seeds=prompts("Explain tides"))
    [record] = run_generator(PreferencePairs(), ctx)
    assert record.meta["judge"]["score"] == 5 and ctx.failures == []
    judged = [r for r in ctx.requests if "=== Answer to grade ===" in r.text]
    assert [("response_format" in r.params) for r in judged] == [True, False] * 4
    # Any other failure of the judge request fails the row, as before; off, no schema is sent.
    ctx = FakeContext(lambda r: failed(502) if "response_format" in r.params else pair_script()(r),
                      seeds=prompts("Explain tides"))
    assert run_generator(PreferencePairs(), ctx) == [] and ctx.failures[0].stage == "judge"
    ctx = FakeContext(pair_script(), seeds=prompts("Explain tides"))
    run_generator(PreferencePairs(), ctx, structured_output=False)
    assert not any("response_format" in r.params for r in ctx.requests)


def test_pairs_are_deterministic_and_estimated():
    runs = []
    for _ in range(2):
        ctx = FakeContext(pair_script(), seeds=prompts("a", "b", "c"))
        records = run_generator(PreferencePairs(), ctx)
        runs.append((ctx.sent(), [r.to_row() for r in records]))
    assert runs[0] == runs[1]
    config = PairsConfig()
    estimate = PreferencePairs().estimate(config, prompts("a", "b", "c"), lambda t: len(t) // 4 + 1)
    assert estimate.requests == 3 * (4 + 4)
    assert estimate.completion_tokens == 3 * 4 * (config.max_tokens + config.judge_max_tokens)
    assert PreferencePairs().estimate(PairsConfig(use_n=True), prompts("a"), len).requests == 1 + 4


# --- judge_scores --------------------------------------------------------------------------------


def test_judge_scores_annotates_conversations_and_pairs():
    seeds = [
        Record([Turn("user", "Q1"), Turn("assistant", "a solid answer")], meta={"id": 1}),
        Record([Turn("user", "Q2")], chosen=[Turn("assistant", "a weak answer")],
               rejected=[Turn("assistant", "a great answer")]),
        Record([Turn("user", "Q3"), Turn("assistant", "a blorp answer")]),
        Record([Turn("user", "no answer here")]),
        Record([Turn("user", "Q5"), Turn("assistant", "a wrong answer")],
               meta={"generation": {"generator": "responses", "key": "abc"}}),
    ]
    ctx = FakeContext(graded, seeds=seeds)
    records = run_generator(JudgeScores(), ctx, judge_model="judge-x")
    assert len(records) == 4
    first, pair, unscored, last = records
    assert first.meta["judge"]["score"] == 4 and first.meta["judge"]["rationale"] == "solid answer"
    assert first.meta["judge"]["model"] == "judge-x" and first.meta["id"] == 1
    assert first.messages == seeds[0].messages  # passed through unchanged
    assert pair.meta["judge"]["score"] == 2 and pair.meta["judge"]["rejected"]["score"] == 5
    assert pair.meta["judge"]["agreement"] is False and pair.meta["judge"]["margin"] == -3
    assert unscored.meta["judge"]["score"] is None and "no score" in unscored.meta["judge"]["error"]
    assert last.meta["generation"]["generator"] == "judge_scores"
    assert last.meta["generation"]["source"] == {"generator": "responses", "key": "abc"}
    assert [(f.stage, f.source_index) for f in ctx.failures] == [("seed", 3)]
    assert JudgeScores.produces == "annotated"
    # The graded context is the conversation before the answer.
    assert "[User]\nQ1" in ctx.requests[0].last_user
    assert seeds[0].meta == {"id": 1}  # seeds are not modified in place


# --- judge_filter --------------------------------------------------------------------------------


def make_input(tmp_path: Path, records: list[Record]) -> OpInput:
    ws = Workspace.init(tmp_path / "ws")
    info = ws.write_version("judged", records, {"name": "judged"})
    return OpInput(ws.root / "data" / "judged" / "versions" / info.id / "data.arrow")


def judged(score, **extra) -> Record:
    meta = {"judge": {"score": score, "rationale": "r", "aspects": {}, "model": "m", **extra}}
    return Record([Turn("user", "q"), Turn("assistant", "a")], meta=meta)


def test_judge_filter_removes_low_scores(tmp_path):
    rows = [judged(4.5), judged(2.0), judged(3.0), judged(None, error="no score"), Record([Turn("user", "q")]),
            Record([Turn("user", "q")], [Turn("assistant", "c")], [Turn("assistant", "r")],
                   meta={"judge": {"score": 4, "agreement": False, "rejected": {"score": 5}}})]
    data = make_input(tmp_path, rows)
    op = JudgeFilter()
    result = op.run(data, op.config_model(min_score=3), OpContext())
    assert result.keep == [True, False, True, True, True, True]
    assert result.removals[1].reason == "low judge score"
    assert result.removals[1].detail["value"] == 2.0 and result.removals[1].detail["threshold"] == 3
    result = op.run(data, op.config_model(min_score=3, unscored="drop", drop_disagreeing=True), OpContext())
    assert result.keep == [True, False, True, False, False, False]
    assert {i: r.reason for i, r in result.removals.items()} == {
        1: "low judge score", 3: "no judge score", 4: "no judge score", 5: "judge prefers rejected"}
    assert result.report["by_reason"] == {"no judge score": 2, "low judge score": 1, "judge prefers rejected": 1}
    assert re.search("judge", op.summary)
