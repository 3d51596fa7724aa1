"""Responses generator: seed conversation + answer, system override, several answers per seed,
seed metadata kept without layout hints, failed rows recorded."""
from __future__ import annotations

from generation_fakes import FakeContext, Request, failed, run_generator, run_until_stopped
from studio.generation.generator_base import RunStopped
from studio.records import Record, Turn
from studio_generate_responses import Responses, ResponsesConfig


def seeds() -> list[Record]:
    return [
        Record([Turn("system", "Be terse."), Turn("user", "Capital of France?")],
               meta={"id": "a", "category": "open_qa", "_layout": {"format": "dolly", "context": None}}),
        Record([Turn("user", "Hi"), Turn("assistant", "Hello!"), Turn("user", "Tell me a joke"),
                Turn("assistant", "old answer to replace")]),
        Record([Turn("assistant", "an answer with no question")]),
    ]


def echo(request: Request) -> str:
    return f"answer {request.sample} to {request.last_user}"


def test_answers_continue_the_seed_conversation():
    ctx = FakeContext(echo, seeds=seeds())
    records = run_generator(Responses(), ctx)
    assert [(t.role, t.content) for t in records[0].messages] == [
        ("system", "Be terse."), ("user", "Capital of France?"), ("assistant", "answer 0 to Capital of France?")]
    # Everything up to the last user turn is sent; the seed's old answer is replaced.
    assert [t.content for t in records[1].messages] == ["Hi", "Hello!", "Tell me a joke", "answer 0 to Tell me a joke"]
    assert records[0].meta["seed"] == {"id": "a", "category": "open_qa"}
    assert "seed" not in records[1].meta
    gen = records[0].meta["generation"]
    assert gen["generator"] == "responses" and gen["seed_index"] == 0 and gen["params"]["max_tokens"] == 1024
    assert [(f.stage, f.source_index) for f in ctx.failures] == [("seed", 2)]
    assert len(ctx.requests) == 2


def test_system_override_and_several_answers():
    ctx = FakeContext(echo, seeds=seeds()[:1])
    records = run_generator(Responses(), ctx, n_responses=3, system_prompt="You are kind.")
    assert len(records) == 3
    assert [r.messages[-1].content for r in records] == [f"answer {i} to Capital of France?" for i in range(3)]
    assert all(r.messages[0].content == "You are kind." and r.system == "You are kind." for r in records)
    assert all(sum(t.role == "system" for t in r.messages) == 1 for r in records)
    assert [r.sample for r in ctx.requests] == [0, 1, 2]


def test_failed_and_empty_answers_are_recorded():
    def answer(request: Request):
        return failed(500) if "France" in request.text else "   "

    ctx = FakeContext(answer, seeds=seeds())
    assert run_generator(Responses(), ctx) == []
    assert [(f.stage, f.source_index) for f in ctx.failures] == [("seed", 2), ("response", 0), ("response", 1)]
    assert ctx.failures[1].error.status == 500  # the request's own error is kept
    assert ctx.failures[2].message == "empty answer"


def test_estimate_counts_answers():
    config = ResponsesConfig(n_responses=2)
    estimate = Responses().estimate(config, seeds(), lambda t: len(t) // 4 + 1)
    assert estimate.requests == 4
    assert estimate.completion_tokens == 4 * config.max_tokens
    assert any("no user turn" in n for n in estimate.notes)


def test_rows_made_before_a_stop_are_already_yielded():
    # A budget or a cancel raises RunStopped from a request; every row before it was yielded
    # (and so is stored by the host), not held back in a batch.
    seeds_ = [Record([Turn("user", f"question {i}")]) for i in range(40)]

    def answer(request: Request):
        return RunStopped("budget reached") if request.last_user == "question 25" else "fine"

    ctx = FakeContext(answer, seeds=seeds_, concurrency=8)
    records, stop = run_until_stopped(Responses(), ctx)
    assert stop is not None and "budget" in str(stop)
    assert [r.messages[0].content for r in records] == [f"question {i}" for i in range(25)]
