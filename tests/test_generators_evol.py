"""Evol-Instruct generator: each elimination rule, the pool keeping failed parents, operations drawn
from ctx.rng, provenance and determinism, against a scripted context."""
from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from generation_fakes import FakeContext, Request, failed, route, run_generator
from studio.records import Record, Turn
from studio_generate_evol.evolution import (
    copies_prompt_words, elimination, evolve_prompt, is_short_apology, only_stop_words,
)
from studio_generate_evol.generator import EvolConfig, EvolInstruct

GOOD_ANSWER = ("Here is a careful answer that walks through the problem step by step, names the assumptions, "
               "and ends with a clear recommendation for the reader.")


def seeds(*texts: str) -> list[Record]:
    return [Record([Turn("user", t), Turn("assistant", "old answer")], meta={"id": i}) for i, t in enumerate(texts)]


def given(request: Request) -> str:
    return request.last_user.split("#Given Prompt#:\n", 1)[1].split("\n\n#", 1)[0]


def evolving(request: Request) -> str:
    return given(request) + " in detail"


def script(evolve=evolving, equal="No", answer=GOOD_ANSWER):
    return route([
        ("#Given Prompt#", evolve),
        ("Are they equivalent?", equal),
    ], default=answer)


def test_rules_on_their_own():
    assert copies_prompt_words("#Rewritten Prompt#: explain tides")
    assert copies_prompt_words("Rewrite the given prompt so it is longer")
    assert copies_prompt_words("#Created Prompt# something")
    assert not copies_prompt_words("Explain how a prompt engineer works")
    assert is_short_apology("Sorry, I can't do that.", 80)
    assert not is_short_apology("Sorry for the wait! " + "word " * 90, 80)
    assert not is_short_apology("Here is the answer.", 80)
    assert only_stop_words("It is, and the... of it!")
    assert only_stop_words("?!...")
    assert only_stop_words("")
    assert not only_stop_words("The tide is caused by the moon.")
    assert elimination("", "x", 80)[0] == "empty"
    assert elimination("fine", None, 80) is None


def test_surviving_evolutions_become_records_and_evolve_again():
    ctx = FakeContext(script(), seeds=seeds("Explain tides", "Describe rain"))
    records = run_generator(EvolInstruct(), ctx, generations=2)
    assert [r.messages[0].content for r in records] == [
        "Explain tides in detail", "Describe rain in detail",
        "Explain tides in detail in detail", "Describe rain in detail in detail"]
    assert all(r.messages[1].content == GOOD_ANSWER for r in records)
    gen = records[2].meta["generation"]
    assert gen["generator"] == "evol_instruct" and gen["round"] == 2
    assert gen["parent"] == "Explain tides in detail"
    assert gen["operation"] in EvolConfig().operations and len(gen["lineage"]) == 2
    assert gen["kind"] == ("in-breadth" if gen["operation"] == "breadth" else "in-depth")
    assert gen["equality"] == "not equal" and gen["evolve_key"] and gen["equality_key"]
    assert ctx.failures == []


@pytest.mark.parametrize("rule, evolve, equal, answer, expected", [
    ("copies prompt words", lambda r: "#Rewritten Prompt#: " + given(r), "No", GOOD_ANSWER, "rule 4"),
    ("no information gain", evolving, "Yes, they are equivalent.", GOOD_ANSWER, "rule 1"),
    ("short apology", evolving, "No", "I'm sorry, but that is too hard for me.", "rule 2"),
    ("stop words only", evolving, "No", "It is the... and of it!", "rule 3"),
])
def test_each_elimination_rule_triggers_and_keeps_the_parent(rule, evolve, equal, answer, expected):
    ctx = FakeContext(script(evolve, equal, answer), seeds=seeds("Explain tides"))
    records = run_generator(EvolInstruct(), ctx, generations=2)
    assert records == []
    assert [f.stage for f in ctx.failures] == ["eliminate", "eliminate"]
    assert expected in ctx.failures[0].message
    assert ctx.failures[0].source_index == 0
    # The failed evolution left the original instruction in the pool: round 2 evolves it again.
    evolved = [given(r) for r in ctx.requests if "#Given Prompt#" in r.text]
    assert evolved == ["Explain tides", "Explain tides"]


def test_cheap_rules_skip_later_requests():
    ctx = FakeContext(script(lambda r: "Here is the rewritten prompt: longer"), seeds=seeds("Explain tides"))
    run_generator(EvolInstruct(), ctx, generations=1)
    assert len(ctx.requests) == 1  # no equality judgement and no answer for an eliminated evolution


def test_equality_check_can_be_turned_off_and_unclear_answers_keep_the_evolution():
    ctx = FakeContext(script(), seeds=seeds("Explain tides"))
    run_generator(EvolInstruct(), ctx, generations=1, equality_check=False)
    assert not any("Are they equivalent?" in r.text for r in ctx.requests)
    ctx = FakeContext(script(equal="blorp zz"), seeds=seeds("Explain tides"))
    records = run_generator(EvolInstruct(), ctx, generations=1)
    assert records[0].meta["generation"]["equality"] == "unclear"


def test_operations_are_drawn_from_the_configured_set():
    ctx = FakeContext(script(), seeds=seeds(*[f"Explain topic {i}" for i in range(12)]))
    records = run_generator(EvolInstruct(), ctx, generations=1, operations=["breadth"])
    assert {r.meta["generation"]["operation"] for r in records} == {"breadth"}
    assert all("#Created Prompt#" in r.text for r in ctx.requests if "#Given Prompt#" in r.text)
    ctx = FakeContext(script(), seeds=seeds(*[f"Explain topic {i}" for i in range(40)]))
    records = run_generator(EvolInstruct(), ctx, generations=1)
    assert len({r.meta["generation"]["operation"] for r in records}) >= 4  # a mix, drawn by ctx.rng
    assert "complicate_input" not in {r.meta["generation"]["operation"] for r in records}
    prompt = evolve_prompt("X", "complicate_input")
    assert "table" in prompt and "#Given Prompt#:\nX" in prompt


def test_failed_requests_fail_the_row_and_keep_going():
    def evolve(request):
        return failed(500) if "tides" in request.text else evolving(request)

    ctx = FakeContext(script(evolve), seeds=seeds("Explain tides", "Describe rain"))
    records = run_generator(EvolInstruct(), ctx, generations=1)
    assert [r.messages[0].content for r in records] == ["Describe rain in detail"]
    assert [(f.stage, f.source_index) for f in ctx.failures] == [("evolve", 0)]
    assert ctx.failures[0].source.meta == {"id": 0}


def test_same_seed_same_requests_and_records():
    topics = [f"Explain topic {i}" for i in range(10)]
    runs = []
    for seed in (5, 5, 6):
        ctx = FakeContext(script(), seeds=seeds(*topics), seed=seed)
        records = run_generator(EvolInstruct(), ctx, generations=2)
        runs.append((ctx.sent(), [r.to_row() for r in records]))
    assert runs[0] == runs[1]
    assert runs[0][0] != runs[2][0]


def test_config_and_estimate():
    with pytest.raises(ValidationError):
        EvolConfig(operations=[])
    with pytest.raises(ValidationError):
        EvolConfig(operations=["sideways"])
    config = EvolConfig(generations=3)
    estimate = EvolInstruct().estimate(config, seeds("a b c", "d e f"), lambda t: len(t) // 4 + 1)
    assert estimate.requests == 2 * 3 * 3
    assert estimate.completion_tokens == 2 * 3 * (config.evolve_max_tokens + config.response_max_tokens + 5)
    assert any("upper bound" in n for n in estimate.notes)
    no_eq = EvolInstruct().estimate(EvolConfig(generations=3, equality_check=False), seeds("a", "b"), len)
    assert no_eq.requests == 2 * 3 * 2


def test_gibberish_model_produces_no_rows_without_crashing():
    ctx = FakeContext(lambda r: "", seeds=seeds("Explain tides", "Describe rain"))
    assert run_generator(EvolInstruct(), ctx, generations=2) == []
    assert len(ctx.failures) == 4 and all(re.search("empty", f.message) for f in ctx.failures)
