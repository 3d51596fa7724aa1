"""The generation engine against a real HTTP server on loopback that injects the failures real
APIs have: every row ends stored or recorded as failed, re-runs never pay twice, budgets stop
runs cleanly, rate limits and Retry-After are honoured, and keys never reach a file."""
from __future__ import annotations

import asyncio
import itertools
import json
import time
from pathlib import Path

import pytest
from generation_fakes import EchoGenerator

from studio.generation.engine import Engine, RunContext, _Retryable
from studio.generation.journal import Journal
from studio.generation.limiter import (INITIAL_WINDOW, PROBE_AFTER_WINDOWS, RateLimiter, Ticket, TokenBucket,
                                      parse_duration, retry_after)
from studio.generation.provider import ProviderConfig
from studio.generation.runner import list_runs, run_generation
from studio.recipes.generate import GenerationRecipe
from studio.hookspecs import hookimpl
from studio.plugins import PluginHost
from studio.records import Record, Turn
from studio.serving.scripted import ScriptedServer
from studio.store import Workspace


class EchoPlugin:
    @hookimpl
    def register_generators(self, register):
        register(EchoGenerator())


@pytest.fixture
def host():
    h = PluginHost(entry_points=[])
    h.add_plugin(EchoPlugin(), "echo-test")
    return h


def _workspace(tmp_path: Path, prompts: list[str]) -> Workspace:
    ws = Workspace.init(tmp_path / "ws")
    ws.write_version("prompts", [Record([Turn("user", p)]) for p in prompts], operation={"op": "test"})
    return ws


def _recipe(server: ScriptedServer, **provider) -> GenerationRecipe:
    return GenerationRecipe(generator="echo", output="answers", seed_dataset="prompts",
                            provider={"name": "local", "base_url": server.base_url, "model": "m",
                                      "timeout": 1.0, "max_retries": 4, **provider})


def _fast_backoff(monkeypatch):
    monkeypatch.setattr(Engine, "_backoff", lambda self, attempt: 0.01 * attempt)


def test_every_row_is_stored_or_failed_under_faults(tmp_path, host, monkeypatch):
    _fast_backoff(monkeypatch)
    prompts = [f"question {i}" for i in range(60)] + [
        "rate limited [[429x2]]", "server error [[500x2]]", "slow [[timeout]]", "broken json [[malformed]]",
        "never works [[fail]]", "invalid request [[400]]"]
    ws = _workspace(tmp_path, prompts)
    with ScriptedServer(latency=0.005, fault_rates={"429": 0.05, "500": 0.05, "malformed": 0.03},
                        timeout_sleep=1.5) as server:
        summary = run_generation(ws, _recipe(server, concurrency=8), host=host)
    assert summary.status == "completed"
    assert summary.rows + summary.failed_rows == len(prompts)
    assert summary.failed_rows == 2  # [[fail]] after all retries, [[400]] at once
    view = ws.open("answers")
    answered = {r.messages[0].content for r in view.records()}
    assert {"rate limited [[429x2]]", "server error [[500x2]]", "slow [[timeout]]", "broken json [[malformed]]"} <= answered
    rejects = [json.loads(line) for line in ws.rejects_path("answers").read_text().splitlines()]
    assert sorted(r["raw"]["messages"][0]["content"] for r in rejects) == ["invalid request [[400]]", "never works [[fail]]"]
    assert any("HTTP 400" in r["message"] for r in rejects) and any("gave up after 5 attempts" in r["message"] for r in rejects)
    # Rows keep their provenance; the order follows the seeds.
    first = view.record(0)
    assert first.meta["generation"]["generator"] == "echo" and first.messages[0].content == "question 0"
    assert summary.meter["retries"] >= 6 and summary.meter["throttled"] >= 2


def test_rerun_answers_from_the_journal_and_retry_sends_only_failed(tmp_path, host, monkeypatch):
    _fast_backoff(monkeypatch)
    prompts = [f"q{i}" for i in range(20)] + ["x [[fail]]"]
    ws = _workspace(tmp_path, prompts)
    with ScriptedServer() as server:
        first = run_generation(ws, _recipe(server), host=host)
        sent_first = len(server.log)
        again = run_generation(ws, _recipe(server), host=host)
        assert len(server.log) == sent_first  # nothing sent: answers and the failure replay
        assert again.meter["cached"] == 20 and again.rows == 20 and again.failed_rows == 1
        assert again.version == first.version  # same content, same version id
        retried = run_generation(ws, _recipe(server), host=host, run_id=again.run_id, retry_failed=True)
        new = server.log[sent_first:]
        assert {e["hash"] for e in new} == {server.log[-1]["hash"]}  # only the failed request again
        assert retried.meter["cached"] == 20


def test_budget_stops_cleanly_and_resume_pays_only_for_the_rest(tmp_path, host):
    prompts = [f"please answer question number {i} with care" for i in range(40)]
    ws = _workspace(tmp_path, prompts)
    prices = {"m": {"input": 1000.0, "output": 1000.0}}  # $ per 1M tokens: ~$0.02 a request
    with ScriptedServer() as server:
        recipe = _recipe(server, prices=prices, concurrency=2).model_copy(update={"budget": 0.3})
        stopped = run_generation(ws, recipe, host=host)
        assert stopped.status == "stopped" and "budget" in stopped.reason
        assert 0 < stopped.rows < len(prompts)
        assert stopped.meter["cost"] <= 0.3
        assert ws.open("answers").num_rows == stopped.rows  # partial output stored
        sent = len(server.log)
        resumed = run_generation(ws, recipe.model_copy(update={"budget": 10.0}), host=host, run_id=stopped.run_id)
        assert resumed.status == "completed" and resumed.rows == len(prompts)
        assert resumed.meter["cached"] == stopped.rows
        assert len(server.log) - sent == len(prompts) - stopped.rows
        hashes = [e["hash"] for e in server.log]
        assert len(hashes) == len(set(hashes))  # no request paid twice


def test_a_run_that_makes_no_rows_fails_names_the_failures_and_can_be_retried(tmp_path, host, monkeypatch):
    _fast_backoff(monkeypatch)
    ws = _workspace(tmp_path, ["bad request [[400]]", "flaky for a while [[500x5]]"])
    with ScriptedServer() as server:
        summary = run_generation(ws, _recipe(server), host=host)  # 5 attempts: [[500x5]] fails them all
        assert (summary.status, summary.rows, summary.failed_rows, summary.version) == ("failed", 0, 2, None)
        assert summary.reason.startswith("no rows made: all 2 failed (by stage: answer 2; first: HTTP 400")
        status = list_runs(ws)[0]
        assert status["status"] == "failed" and status["reason"] == summary.reason
        events = [json.loads(line) for line in (summary.run_dir / "events.jsonl").read_text().splitlines()]
        assert events[-1]["event"] == "end" and events[-1]["status"] == "failed"
        assert "answers" not in ws.dataset_names()  # nothing stored
        # The failed rows are kept: retry sends them again, and the sixth attempt is answered.
        retried = run_generation(ws, _recipe(server), host=host, run_id=summary.run_id, retry_failed=True)
    # Some rows made, some failed: completed, the failures counted and kept for the next retry.
    assert (retried.status, retried.rows, retried.failed_rows) == ("completed", 1, 1)
    assert ws.open("answers").num_rows == 1 and ws.head("answers").rejects == 1


class SilentGenerator(EchoGenerator):
    """Asks, gets answers it can't use, and says so in its progress: a generator that makes nothing."""

    name = "silent"

    async def generate(self, config, ctx):
        await ctx.chat([{"role": "user", "content": "say something usable"}])
        ctx.progress(0, 1, "round 1: 0 kept of 0 parsed; 1 answers held no numbered list")
        return
        yield


def test_a_generator_that_makes_nothing_fails_with_its_last_word(tmp_path, host):
    class SilentPlugin:
        @hookimpl
        def register_generators(self, register):
            register(SilentGenerator())

    host.add_plugin(SilentPlugin(), "silent-test")
    ws = _workspace(tmp_path, ["a prompt"])
    with ScriptedServer() as server:
        recipe = _recipe(server).model_copy(update={"generator": "silent"})
        summary = run_generation(ws, recipe, host=host)
    assert (summary.status, summary.rows, summary.failed_rows) == ("failed", 0, 0)
    assert summary.reason == ("no rows made: the generator produced none (last progress: round 1: 0 kept of "
                              "0 parsed; 1 answers held no numbered list)")


def test_estimate_uses_prices(tmp_path, host):
    ws = _workspace(tmp_path, ["one two three"] * 4)
    with ScriptedServer() as server:
        recipe = _recipe(server, prices={"m": {"input": 2.0, "output": 4.0}})
        summary = run_generation(ws, recipe, host=host, estimate_only=True)
        assert summary.status == "estimated" and server.log == []
    est = summary.estimate
    assert est["requests"] == 4 and est["completion_tokens"] == 64 and est["priced"]
    assert est["cost"] == pytest.approx((est["prompt_tokens"] * 2 + 64 * 4) / 1e6)


CAP = 4


def _capped_server_script(tmp_path, concurrency: int, requests: int, cap: int = CAP):
    """The engine against a scripted server of ``cap`` slots, with no clock and no HTTP. A request
    that arrives with ``cap`` in service is refused; each step, once every worker has run as far as
    it can, the server sends all its refusals (429s come back fast, all at once, as from a real
    server) and finishes its oldest request. Every run of it is the same, on any machine.
    Returns the engine, what the server did ("ok" or "429", in order) and the limiter's
    (limit, ceiling) after each step."""
    provider = ProviderConfig(name="t", base_url="http://127.0.0.1:9/v1", model="m", concurrency=concurrency,
                              max_retries=50)
    engine = Engine(provider, Journal(tmp_path / "j.sqlite"), run_id="r")
    ticks = itertools.count()
    engine._limiter = RateLimiter(concurrency=concurrency, clock=lambda: next(ticks))  # a logical clock
    ctx = RunContext(engine, [], 0, on_fail=lambda row: None)
    serving: list[asyncio.Future] = []
    refusing: list[asyncio.Future] = []
    outcomes: list[str] = []
    trace: list[tuple[float, int]] = []

    async def scripted_call(endpoint, body):
        done = asyncio.get_running_loop().create_future()
        if len(serving) >= cap:
            refusing.append(done)
            await done
            outcomes.append("429")
            raise _Retryable("HTTP 429: over capacity", 429, 0.0)
        serving.append(done)
        await done
        outcomes.append("ok")
        return [f"answer to {body['messages'][0]['content']}"], ["stop"], 1, 1, None

    engine._call = scripted_call

    async def main():
        work = asyncio.ensure_future(ctx.gather(
            [f"q{i}" for i in range(requests)], lambda p: ctx.chat([{"role": "user", "content": p}])))
        while not work.done():
            for _ in range(50):  # every worker runs until it waits on the server or the limiter
                await asyncio.sleep(0)
            for refused in refusing:
                refused.set_result(None)
            refusing.clear()
            if serving:
                serving.pop(0).set_result(None)
            trace.append((engine.limiter.limit, engine.limiter.ceiling))
        return work.result()

    results = asyncio.run(main())
    assert not [r for r in results if isinstance(r, Exception)]
    return engine, outcomes, trace


def test_concurrency_converges_to_the_cap_and_the_429s_stop(tmp_path):
    engine, outcomes, trace = _capped_server_script(tmp_path, concurrency=16, requests=300)
    assert outcomes.count("ok") == 300 and engine.meter.failed == 0
    throttled = [i for i, outcome in enumerate(outcomes) if outcome == "429"]
    assert throttled and engine.meter.throttled == len(throttled)
    # It learns the cap exactly (never less: a 429 proves more than the cap was in flight) ...
    learnt = next(step for step, (_, ceiling) in enumerate(trace) if ceiling == CAP)
    assert all(ceiling >= CAP for _, ceiling in trace)
    # ... within the first few dozen requests, and without a storm: no more than the old halving
    # limiter's 12 for a first burst of 16, 4 at the halved 8 and 1 when the limit crept up to 5
    # (slow start's first window of 8 costs 4). Lowering on every echo of a burst, or never, costs more.
    assert learnt < 30
    assert sum(1 for i in throttled if outcomes[:i].count("ok") <= learnt) <= (16 - CAP) + (8 - CAP) + (5 - CAP)
    # From then on it never runs more than one slot beyond the cap, and keeps the cap busy.
    assert all(int(limit) <= CAP + 1 for limit, _ in trace[learnt:])
    assert sum(1 for limit, _ in trace[learnt:] if int(limit) >= CAP) > 0.75 * len(trace[learnt:])
    # The 429s stop: the only later ones are probes for room, each after PROBE_AFTER_WINDOWS x CAP
    # successes at the cap (a limit that crept back up unchecked would probe every ~10 answers).
    later = [outcomes[:i].count("ok") for i in throttled if outcomes[:i].count("ok") > learnt]
    gaps = [b - a for a, b in zip([learnt] + later, later)]
    assert all(gap >= PROBE_AFTER_WINDOWS * CAP for gap in gaps), gaps
    assert len(later) <= 300 // (PROBE_AFTER_WINDOWS * CAP)


def test_slow_start_finds_an_unknown_cap_and_holds_it_without_halving(tmp_path):
    # Told 64, the server holds 16: the limit starts at the initial window and grows by one per
    # success (doubling per window) until the first refusal, which teaches the cap exactly; from
    # then it holds at the cap (halving on a 429 would drop it to 8 and under-use the server).
    cap, told = 16, 64
    engine, outcomes, trace = _capped_server_script(tmp_path, concurrency=told, requests=400, cap=cap)
    assert outcomes.count("ok") == 400 and engine.meter.failed == 0
    learnt = next(step for step, (_, ceiling) in enumerate(trace) if ceiling < told)
    growing = [limit for limit, _ in trace[:learnt]]
    assert growing[0] <= INITIAL_WINDOW + 1 and growing == sorted(growing) and growing[-1] >= cap
    assert trace[learnt][1] == cap
    # From then on: the limit never drops under the cap, and a probe for one more slot is all it tries.
    assert all(cap <= int(limit) <= cap + 1 and ceiling in (cap, cap + 1) for limit, ceiling in trace[learnt:])
    assert sum(1 for limit, _ in trace[learnt:] if int(limit) >= cap) == len(trace[learnt:])
    # The 429s: one burst to find the cap (counted once), then one per probe, each after
    # PROBE_AFTER_WINDOWS x cap successes at the cap.
    assert engine.limiter.throttled == outcomes.count("429") <= 2 + 400 // (PROBE_AFTER_WINDOWS * cap)


def test_a_later_429_lowers_the_ceiling_by_one_and_a_burst_counts_once():
    now = [0.0]

    async def main():
        limiter = RateLimiter(concurrency=32, clock=lambda: now[0])
        assert limiter.limit == INITIAL_WINDOW and limiter.slow_start
        for _ in range(12):  # successes in slow start: one more slot each
            await limiter.acquire(1)
            await limiter.release(1, 1, ok=True)
        assert limiter.limit == INITIAL_WINDOW + 12
        # The first refusal handled, of a request sent with 18 others in flight: the server holds
        # at most 18, and slow start ends there.
        now[0] = 1.0
        await limiter.throttle(0.5, Ticket(0.9, 19, limiter.sent))
        assert (limiter.ceiling, limiter.limit, limiter.slow_start) == (18, 18.0, False)
        assert limiter.paused_until < now[0]  # the concurrency explains it: requests under the cap go on
        # The rest of the burst (sent while slow start grew) comes back in any order: the tightest
        # bound wins; however many refusals there are, they never lower it further.
        for position in (20, 17, 18, 20, 19):
            await limiter.throttle(0.5, Ticket(0.95, position, limiter.sent))
        assert (limiter.ceiling, limiter.limit) == (16, 16.0) and limiter.throttled == 6
        # A later refusal at the ceiling: one slot less, not half; the others go on.
        now[0] = 5.0
        await limiter.throttle(0.5, Ticket(4.0, 16, limiter.sent))
        assert (limiter.ceiling, limiter.limit) == (15, 15.0) and limiter.paused_until < now[0]
        # Its echoes (sent before that decision) change nothing.
        await limiter.throttle(0.5, Ticket(4.5, 16, limiter.sent))
        assert (limiter.ceiling, limiter.limit) == (15, 15.0)
        # A refusal under the ceiling (a quota, or the server's room shrank): one slot less, and
        # everyone waits out the server's Retry-After (a second by default).
        now[0] = 9.0
        await limiter.throttle(0.5, Ticket(8.0, 10, limiter.sent))
        assert (limiter.ceiling, limiter.limit) == (14, 14.0) and limiter.paused_until == pytest.approx(9.5)
        now[0] = 12.0
        await limiter.throttle(None, Ticket(11.0, 10, limiter.sent))
        assert (limiter.ceiling, limiter.limit) == (13, 13.0) and limiter.paused_until == pytest.approx(13.0)

    asyncio.run(main())


def test_slow_start_never_ends_under_half_its_window():
    # A refusal at position 8 when the window had grown to 20: on a loaded machine later requests
    # can reach the server first, but the first half of the window was answered, so the ceiling
    # stays at 10 or more.
    async def main():
        limiter = RateLimiter(concurrency=64, clock=lambda: 1.0)
        for _ in range(12):
            await limiter.acquire(1)
            await limiter.release(1, 1, ok=True)
        await limiter.throttle(0.5, Ticket(0.5, 8, limiter.sent))
        assert (limiter.ceiling, limiter.limit, limiter.slow_start) == (10, 10.0, False)

    asyncio.run(main())


def test_a_refusal_many_later_requests_could_overtake_bounds_the_cap_by_the_window_only():
    # Refused at position 8, but 30 requests were let through after it: any of them may have
    # filled the server first, so it says no more than the window in force (20 - 1); a fresh
    # refusal of the same burst then gives the cap.
    async def main():
        limiter = RateLimiter(concurrency=64, clock=lambda: 1.0)
        for _ in range(12):
            await limiter.acquire(1)
            await limiter.release(1, 1, ok=True)
        limiter.sent += 30
        await limiter.throttle(0.5, Ticket(0.5, 8, limiter.sent - 30))
        assert (limiter.ceiling, limiter.limit, limiter.slow_start) == (19, 19.0, False)
        await limiter.throttle(0.5, Ticket(0.6, 17, limiter.sent - 2))
        assert (limiter.ceiling, limiter.limit) == (16, 16.0)

    asyncio.run(main())


@pytest.mark.parametrize("status", [429, 500])
def test_a_request_waiting_out_its_back_off_holds_no_slot(tmp_path, monkeypatch, status):
    # One slot: the refused request's back-off must let the next request use the slot meanwhile.
    provider = ProviderConfig(name="t", base_url="http://127.0.0.1:9/v1", model="m", concurrency=1)
    engine = Engine(provider, Journal(tmp_path / "j.sqlite"), run_id="r")
    monkeypatch.setattr(Engine, "_backoff", lambda self, attempt: 0.05)
    ctx = RunContext(engine, [], 0, on_fail=lambda row: None)
    sent: list[str] = []

    async def scripted_call(endpoint, body):
        prompt = body["messages"][0]["content"]
        sent.append(prompt)
        if sent.count(prompt) == 1 and prompt == "first":
            raise _Retryable(f"HTTP {status}: try again", status, 0.05 if status == 429 else None)
        return [f"answer to {prompt}"], ["stop"], 1, 1, None

    engine._call = scripted_call
    results = asyncio.run(ctx.gather(["first", "second"], lambda p: ctx.chat([{"role": "user", "content": p}])))
    assert [r.text for r in results] == ["answer to first", "answer to second"]
    assert sent == ["first", "second", "first"]


def test_a_client_within_the_cap_never_gets_a_429(tmp_path, host):
    # The scripted server frees a slot before it writes the answer, so a client with at most
    # CAP requests in flight can't be refused, however the machine schedules the threads.
    ws = _workspace(tmp_path, [f"q{i}" for i in range(60)])
    with ScriptedServer(latency=0.005, max_concurrency=CAP) as server:
        summary = run_generation(ws, _recipe(server, concurrency=CAP), host=host)
    assert summary.rows == 60 and [e["status"] for e in server.log] == [200] * 60


def test_a_concurrency_cap_costs_retries_never_rows(tmp_path, host):
    ws = _workspace(tmp_path, [f"q{i}" for i in range(120)])
    with ScriptedServer(latency=0.02, max_concurrency=CAP, retry_after=0.05) as server:
        summary = run_generation(ws, _recipe(server, concurrency=16, max_retries=50), host=host)
    assert summary.rows == 120 and summary.failed_rows == 0
    throttled = [e for e in server.log if e["status"] == 429]
    assert summary.meter["throttled"] == len(throttled) <= summary.meter["retries"]
    assert {e["hash"] for e in throttled} <= {e["hash"] for e in server.answered()}  # each one retried


def test_rpm_limit_paces_requests(tmp_path, host):
    ws = _workspace(tmp_path, [f"q{i}" for i in range(12)])
    with ScriptedServer() as server:
        before = time.time()  # the bucket is made after this, full: 4 at once, then 4 a second
        run_generation(ws, _recipe(server, rpm=240, concurrency=8), host=host)
        times = sorted(e["time"] for e in server.log)
    assert len(times) == 12
    # The 12th request can't leave before 8 refills of 0.25 s; a loaded machine only delays it.
    # (Measured from the first arrival instead, a slow first request could shrink the span.)
    assert times[-1] - before >= 2.0


def test_retry_after_is_honoured(tmp_path, host):
    ws = _workspace(tmp_path, ["wait for me [[429]]"])
    with ScriptedServer() as server:
        run_generation(ws, _recipe(server), host=host)
        first, second = server.log
    assert first["status"] == 429 and second["status"] == 200
    assert second["time"] - first["time"] >= 0.1  # the server said Retry-After: 0.1


def test_a_request_that_outlasts_the_timeout_is_cut_and_retried(tmp_path, host):
    ws = _workspace(tmp_path, ["slow [[timeout]]"])
    events: list[dict] = []
    with ScriptedServer(timeout_sleep=3.0) as server:  # without a client timeout it answers after 3 s
        summary = run_generation(ws, _recipe(server, timeout=0.3), host=host, emit=events.append)
    assert summary.rows == 1 and summary.meter["retries"] == 1
    assert [e["error"] for e in events if e["event"] == "retry"] == ["timed out after 0.3 s"]
    assert sorted(e["attempt"] for e in server.log) == [1, 2]  # the first ends when the server stops


def test_bad_credentials_stop_the_run_with_a_clear_reason(tmp_path, host, monkeypatch):
    monkeypatch.setenv("STUDIO_TEST_KEY", "wrong-key")
    ws = _workspace(tmp_path, [f"q{i}" for i in range(10)])
    with ScriptedServer(api_key="right-key") as server:
        summary = run_generation(ws, _recipe(server, api_key_env="STUDIO_TEST_KEY"), host=host)
    assert summary.status == "stopped" and "credentials" in summary.reason and "401" in summary.reason
    assert len(server.log) <= 8  # stopped at once, not ten retried requests


def test_the_api_key_never_reaches_a_file(tmp_path, host, monkeypatch):
    secret = "sk-test-0123456789abcdefSECRET"
    monkeypatch.setenv("STUDIO_TEST_KEY", secret)
    ws = _workspace(tmp_path, [f"q{i}" for i in range(5)] + ["boom [[fail]]"])
    _fast_backoff(monkeypatch)
    with ScriptedServer(api_key=secret) as server:
        summary = run_generation(ws, _recipe(server, api_key_env="STUDIO_TEST_KEY"), host=host)
    assert summary.rows == 5
    files = [p for p in Path(ws.root).rglob("*") if p.is_file()]
    assert any(p.name == "journal.sqlite" for p in files) and any(p.name == "recipe.yaml" for p in files)
    for path in files:
        assert secret.encode() not in path.read_bytes(), path
    assert "STUDIO_TEST_KEY" in (summary.run_dir / "recipe.yaml").read_text()


def test_inline_keys_are_refused():
    with pytest.raises(ValueError, match="api_key_env"):
        ProviderConfig(base_url="http://x/v1", api_key="sk-123")
    with pytest.raises(ValueError, match="api_key_env"):
        ProviderConfig(base_url="http://x/v1", headers={"Authorization": "Bearer sk-123"})


def test_runs_are_listed_with_status(tmp_path, host):
    ws = _workspace(tmp_path, ["a", "b"])
    with ScriptedServer() as server:
        summary = run_generation(ws, _recipe(server), host=host)
    runs = list_runs(ws)
    assert [r["run_id"] for r in runs] == [summary.run_id]
    assert runs[0]["status"] == "completed" and runs[0]["rows"] == 2
    events = [json.loads(line)["event"] for line in (summary.run_dir / "events.jsonl").read_text().splitlines()]
    assert events[0] == "estimate" or events[0] == "start"
    assert events[-1] == "end" and "progress" in events


def test_same_request_in_flight_twice_is_sent_once(tmp_path):
    with ScriptedServer(latency=0.05) as server:
        provider = ProviderConfig(name="t", base_url=server.base_url, model="m")
        engine = Engine(provider, Journal(tmp_path / "j.sqlite"), run_id="r")
        ctx = RunContext(engine, [], 0, on_fail=lambda row: None)

        async def main():
            results = await ctx.gather(["same", "same", "other"], lambda p: ctx.chat([{"role": "user", "content": p}]))
            await engine.aclose()
            return results

        results = asyncio.run(main())
    assert [r.text for r in results][0] == results[1].text
    assert len(server.log) == 2


def test_imap_streams_in_order_with_a_bounded_window(tmp_path):
    provider = ProviderConfig(name="t", base_url="http://127.0.0.1:9/v1", model="m")
    engine = Engine(provider, Journal(tmp_path / "j.sqlite"), run_id="r")
    ctx = RunContext(engine, [], 0, on_fail=lambda row: None, window=3)
    started: list[int] = []

    async def work(i):
        started.append(i)
        await asyncio.sleep(0.01 * (5 - i % 5))
        if i == 4:
            raise ValueError("row 4 is bad")
        return i * 10

    async def main():
        out = []
        async for index, result in ctx.imap(range(10), work):
            out.append((index, result))
            assert max(started) <= index + 3  # never more than the window ahead
        return out

    out = asyncio.run(main())
    assert [i for i, _ in out] == list(range(10))
    assert isinstance(out[4][1], ValueError) and out[5][1] == 50


def test_duration_parsing():
    assert parse_duration("2") == 2.0
    assert parse_duration("1.5") == 1.5
    assert parse_duration("6m0s") == 360.0
    assert parse_duration("20ms") == pytest.approx(0.02)
    assert parse_duration("1m30.5s") == pytest.approx(90.5)
    assert parse_duration("soon") is None
    assert retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert retry_after({"retry-after": "3"}) == 3.0
    assert retry_after({}) is None


def test_token_bucket_waits_for_refill():
    now = [0.0]
    bucket = TokenBucket(per_minute=60, clock=lambda: now[0])  # one per second, burst one
    assert bucket.wait_time(1) == 0
    bucket.take(1)
    assert bucket.wait_time(1) == pytest.approx(1.0)
    now[0] = 0.5
    assert bucket.wait_time(1) == pytest.approx(0.5)
    now[0] = 1.0
    assert bucket.wait_time(1) == 0


def test_ratelimit_headers_pause_everyone():
    now = [100.0]

    async def main():
        limiter = RateLimiter(concurrency=4, clock=lambda: now[0])
        await limiter.observe({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "2s"})
        assert limiter.paused_until == pytest.approx(102.0)
        await limiter.observe({"x-ratelimit-remaining-requests": "5", "x-ratelimit-reset-requests": "9s"})
        assert limiter.paused_until == pytest.approx(102.0)
        await limiter.throttle(None)  # a 429 lowers the limit by one slot, not by half
        assert limiter.limit == 3.0 and limiter.ceiling == 3 and limiter.throttled == 1

    asyncio.run(main())
