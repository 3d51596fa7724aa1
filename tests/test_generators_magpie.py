"""Magpie generator: the pre-query prefix per template, cutting the instruction at the end-of-turn
marker, the filters, both answer routes and the single clear stop when raw completions are missing."""
from __future__ import annotations

import pytest
from pydantic import ValidationError

from generation_fakes import FakeContext, Request, failed, run_generator
from studio.generation.generator_base import GenerationFailed, RunStopped
from studio_generate_magpie import Magpie, MagpieConfig

INSTRUCTIONS = [
    "How do I make a sourdough starter at home?<|im_end|>\n<|im_start|>assistant\nStart with flour",
    "Explain the difference between weather and climate.",
    "hi",  # too short
    "   <|im_end|>",  # empty
    "how do I make a Sourdough starter at home?",  # duplicate (case and spacing)
    "Write a limerick about a forgetful robot.<|im_start|>user",
]


def instruction_answer(request: Request) -> str:
    return INSTRUCTIONS[request.sample % len(INSTRUCTIONS)]


def answer(request: Request):
    if request.endpoint == "complete" and request.prompt.endswith(("user\n", "<|end_header_id|>\n\n")):
        return instruction_answer(request)
    if request.endpoint == "complete":
        return "A raw-completion answer.<|im_end|>\n<|im_start|>user\nmore"
    return "A chat answer."


def test_chatml_instructions_are_cut_at_the_end_marker_and_filtered():
    ctx = FakeContext(answer)
    records = run_generator(Magpie(), ctx, num_instructions=6)
    completes = [r for r in ctx.requests if r.endpoint == "complete"]
    assert {r.prompt for r in completes} == {"<|im_start|>user\n"}
    assert [r.sample for r in completes] == list(range(6))
    assert "<|im_end|>" in completes[0].params["stop"] and completes[0].params["temperature"] == 1.0
    assert [r.messages[0].content for r in records] == [
        "How do I make a sourdough starter at home?",
        "Explain the difference between weather and climate.",
        "Write a limerick about a forgetful robot."]
    assert all(r.messages[1].content == "A chat answer." for r in records)
    assert [(f.stage, f.source_index) for f in ctx.failures] == [("filter", 2), ("filter", 3), ("filter", 4)]
    assert "shorter than 3 words" in ctx.failures[0].message
    assert "empty" in ctx.failures[1].message and "duplicate" in ctx.failures[2].message
    gen = records[0].meta["generation"]
    assert gen["generator"] == "magpie" and gen["template"] == "chatml" and gen["sample"] == 0
    assert gen["instruction_key"] and gen["pre_query"] == "<|im_start|>user\n"


def test_templates_and_system_prompt_shape_the_prefix():
    # No BOS: servers add it when they tokenize the prompt.
    assert MagpieConfig(template="llama3").pre_query() == "<|start_header_id|>user<|end_header_id|>\n\n"
    assert MagpieConfig(template="embedded").pre_query() == "<|im_start|>user\n"
    assert MagpieConfig(system_prompt="You teach maths.").pre_query() == \
        "<|im_start|>system\nYou teach maths.<|im_end|>\n<|im_start|>user\n"
    assert MagpieConfig(prefix="USER: ", end_marker="\nASSISTANT:").pre_query() == "USER: "
    with pytest.raises(ValidationError):
        MagpieConfig(prefix="USER: ")  # no end marker
    with pytest.raises(ValidationError):
        MagpieConfig(template="mistral")


def test_llama3_instruction_and_completion_route_answer():
    def llama(request: Request):
        if request.prompt.endswith("<|start_header_id|>user<|end_header_id|>\n\n"):
            return "Name three rivers in Africa.<|eot_id|><|start_header_id|>assistant"
        return "The Nile, the Congo and the Niger.<|eot_id|>"

    ctx = FakeContext(llama)
    records = run_generator(Magpie(), ctx, num_instructions=1, template="llama3", response_via="completion",
                            system_prompt="Be brief.")
    assert [r.endpoint for r in ctx.requests] == ["complete", "complete"]
    assert ctx.requests[1].prompt == (
        "<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nName three rivers in Africa.<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n")
    assert [(t.role, t.content) for t in records[0].messages] == [
        ("system", "Be brief."), ("user", "Name three rivers in Africa."),
        ("assistant", "The Nile, the Congo and the Niger.")]


@pytest.mark.parametrize("status", [404, 400])
def test_endpoint_without_completions_stops_once_with_a_clear_error(status):
    def no_completions(request: Request):
        if request.endpoint == "complete":
            return GenerationFailed("Not Found", key="k", status=status)
        return "unused"

    ctx = FakeContext(no_completions)
    with pytest.raises(RunStopped, match=r"no /v1/completions.*Magpie needs raw completions"):
        run_generator(Magpie(), ctx, num_instructions=50)
    assert len(ctx.requests) == 1  # the probe alone, not fifty failing rows
    assert ctx.failures == []


def test_other_request_failures_fail_their_rows_only():
    def flaky(request: Request):
        if request.endpoint == "complete" and request.sample in (0, 3):
            return failed(503, "overloaded")
        if request.endpoint == "complete":
            return f"Question number {request.sample} about tides?"
        return failed(500) if "number 2" in request.text else "ok answer"

    ctx = FakeContext(flaky)
    records = run_generator(Magpie(), ctx, num_instructions=5)
    assert [r.messages[0].content for r in records] == ["Question number 1 about tides?",
                                                        "Question number 4 about tides?"]
    assert [(f.stage, f.source_index) for f in ctx.failures] == [("instruction", 0), ("instruction", 3),
                                                                 ("response", 2)]


def test_same_seed_same_requests_and_estimate():
    runs = []
    for _ in range(2):
        ctx = FakeContext(answer)
        records = run_generator(Magpie(), ctx, num_instructions=6)
        runs.append((ctx.sent(), [r.to_row() for r in records]))
    assert runs[0] == runs[1]
    config = MagpieConfig(num_instructions=10)
    estimate = Magpie().estimate(config, [], lambda t: len(t) // 4 + 1)
    assert estimate.requests == 20
    assert estimate.completion_tokens == 10 * (config.instruction_max_tokens + config.response_max_tokens)
    assert Magpie.uses_completions and Magpie.seeds == "none"


def test_chunks_share_the_duplicate_filter_and_keep_order(monkeypatch):
    import studio_generate_magpie

    monkeypatch.setattr(studio_generate_magpie, "CHUNK", 3)
    texts = ["What is rain made of?", "Why is the sea salty?", "What is rain made of?", "How do bees fly?",
             "Why is the sea salty?", "Where do rivers start?", "How do bees fly?"]

    def answer(request: Request):
        return texts[request.sample] if request.endpoint == "complete" else "An answer."

    ctx = FakeContext(answer)
    records = run_generator(Magpie(), ctx, num_instructions=7)
    assert [r.messages[0].content for r in records] == [texts[i] for i in (0, 1, 3, 5)]
    assert [(f.stage, f.source_index) for f in ctx.failures] == [("filter", 2), ("filter", 4), ("filter", 6)]
    # Chunk by chunk: three instructions, their answers, then the next three.
    kinds = ["i" if r.endpoint == "complete" else "a" for r in ctx.requests]
    assert "".join(kinds) == "iii" + "aa" + "iii" + "aa" + "i"
