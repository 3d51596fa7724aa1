"""The Generate mode (4) driven with Pilot against a real OpenAI-compatible server on loopback
(:class:`ScriptedServer`): the forms and their inline errors, an estimate that sends nothing,
a run whose rows, counters and failures show up and whose output is stored, "retry failed"
that sends only the failed request again, and cancelling a slow run. The generator is a small
one defined here, registered on the plugin host like any plugin."""
from __future__ import annotations

import asyncio
import time

import pytest

pytest.importorskip("textual")

from textual.widgets import DataTable, Input, Select, Static, TabbedContent  # noqa: E402

from studio.generation.engine import Engine  # noqa: E402
from studio.generation.generator_base import Generator  # noqa: E402
from studio.generation.provider import Price, ProviderConfig, save_provider  # noqa: E402
from studio.generation.runner import list_runs  # noqa: E402
from studio.hookspecs import hookimpl  # noqa: E402
from studio.records import Record, Turn  # noqa: E402
from studio.serving.scripted import ScriptedServer  # noqa: E402
from studio.store import Workspace  # noqa: E402
from studio.tui.app import StudioApp  # noqa: E402
from studio.tui.screens.browser import BrowserScreen  # noqa: E402
from studio.tui.screens.generate import GenerateScreen, answer_preview  # noqa: E402
from studio.tui.widgets.generate_live import estimate_text, meter_table  # noqa: E402
from generation_fakes import EchoGenerator  # noqa: E402
from test_tui import make_host, plain  # noqa: E402

pytestmark = pytest.mark.anyio
SIZE = (150, 48)
# [[fail]] answers 500 every time; [[500x2]] fails its first two attempts, which is all a provider
# with max_retries=1 tries, so it fails in the run and succeeds when the failed rows are retried.
PROMPTS = ["What is the capital of France?", "Name a prime number.", "This one never works [[fail]]",
           "Why is the sky blue? [[500x2]]", "How do I boil an egg?"]


@pytest.fixture
def anyio_backend():
    return "asyncio"


# --- the generator under test ------------------------------------------------------------




class OneByOneGenerator(EchoGenerator):
    """Asks one seed at a time: each request starts only after the previous answer arrived."""

    name = "one_by_one"
    title = "One by one"
    summary = "one answer per seed prompt, sequentially"

    async def generate(self, config, ctx):
        for index, seed in enumerate(ctx.seeds):
            result = await ctx.chat([{"role": "user", "content": seed.messages[0].content}],
                                    max_tokens=config.max_answer_tokens)
            yield Record(seed.messages + [Turn("assistant", result.text)],
                         meta={"generation": result.provenance(self.name)})
            ctx.progress(index + 1, len(ctx.seeds), "asking one by one")


class GeneratorsPlugin:
    def __init__(self, *generators: Generator):
        self.generators = generators

    @hookimpl
    def register_generators(self, register):
        for generator in self.generators:
            register(generator)


def generate_host(*generators: Generator):
    return make_host((GeneratorsPlugin(*(generators or (EchoGenerator(),))), "generators-test"))


@pytest.fixture
def workspace(tmp_path) -> Workspace:
    ws = Workspace.init(tmp_path / "ws")
    ws.write_version("prompts", [Record([Turn("user", p)]) for p in PROMPTS], operation={"op": "test"})
    return ws


@pytest.fixture
def fast_backoff(monkeypatch):
    # [[fail]] answers 500 every time: don't wait seconds between its retries.
    monkeypatch.setattr(Engine, "_backoff", lambda self, attempt: 0.01)


def add_provider(ws: Workspace, server: ScriptedServer, **extra) -> None:
    save_provider(ws.root, ProviderConfig(name="local", base_url=server.base_url, model="m", max_retries=1,
                                          timeout=5.0, prices={"m": Price(input=1000.0, output=2000.0)}, **extra))


# --- helpers -------------------------------------------------------------------------------


def text_of(screen, selector: str) -> str:
    return " ".join(plain(screen.query_one(selector, Static).content, width=200).split())


def table_rows(table: DataTable) -> list[list[str]]:
    return [[plain(cell, width=300).strip() for cell in table.get_row_at(i)] for i in range(table.row_count)]


async def open_generate(pilot) -> GenerateScreen:
    await pilot.pause()
    await pilot.app.workers.wait_for_complete()
    await pilot.press("4")
    await pilot.pause()
    screen = pilot.app.screen
    assert isinstance(screen, GenerateScreen)
    return screen


async def choose(pilot, screen: GenerateScreen, selector: str, value: str) -> None:
    screen.query_one(selector, Select).value = value
    await pilot.pause()


async def set_field(pilot, screen: GenerateScreen, form: str, name: str, value: str) -> None:
    screen.query_one(f"#{form} #field-{name}", Input).value = value
    await pilot.pause()


async def configure(pilot, screen: GenerateScreen, output: str = "answers", generator: str = "echo") -> None:
    await choose(pilot, screen, "#gen-provider", "local")
    await choose(pilot, screen, "#gen-generator", generator)
    await choose(pilot, screen, "#gen-seeds", "prompts")
    await set_field(pilot, screen, "gen-settings", "output", output)
    await pilot.pause()


async def wait_until_idle(pilot, screen: GenerateScreen, limit: float = 30.0) -> None:
    deadline = time.monotonic() + limit
    while screen.busy and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert not screen.busy, f"still {screen.busy} after {limit} s"
    await pilot.pause()


async def press_on_results(pilot, screen: GenerateScreen, *keys: str) -> None:
    # Keys go to the screen's bindings, not into an input of the form.
    screen.query_one("#gen-rows").focus()
    await pilot.press(*keys)
    await pilot.pause()


# --- rendering, without an app -------------------------------------------------------------


def test_estimate_and_meter_rendering():
    priced = {"requests": 120, "prompt_tokens": 3400, "completion_tokens": 61440, "cost": 0.52, "priced": True,
              "notes": ["upper bound: stops when the target is reached"]}
    text = " ".join(plain(estimate_text(priced, budget=0.25), width=160).split())
    assert "120 requests · 3,400 prompt + 61,440 completion tokens · cost ≤ $0.5200" in text
    assert "(budget $0.2500: it will stop early)" in text and "upper bound: stops when" in text
    unpriced = plain(estimate_text({**priced, "cost": None, "priced": False}, budget=1.0))
    assert "unpriced" in unpriced and "a budget cannot stop it" in unpriced and "$" not in unpriced
    meter = {"rows": 40, "target": 100, "failed_rows": 3, "answered": 50, "cached": 7, "failed": 3, "sent": 61,
             "in_flight": 4, "requests_per_s": 12.5, "tokens_per_s": 3210.0, "retries": 4, "throttled": 2,
             "cost": 0.1234, "elapsed": 4.0, "message": "round 2"}
    shown = " ".join(plain(meter_table(meter, priced, 0.25), width=160).split())
    for part in ("rows made 40 / 100 target", "failed rows 3", "in flight 4", "requests done 60 / ~120 est.",
                 "cached 7", "sent 61", "12.5 req/s · 3,210 tok/s", "retries 4", "429s 2",
                 "cost so far $0.1234 of budget $0.2500", "generator round 2"):
        assert part in shown, (part, shown)


def test_answer_preview_shows_the_answer_or_both_sides_of_a_pair():
    chat = Record([Turn("user", "Hi?"), Turn("assistant", "First."), Turn("user", "Again?"),
                   Turn("assistant", "Second\nanswer.")])
    assert answer_preview(chat).plain == "Second answer."
    pair = Record([Turn("user", "Pick one.")], chosen=[Turn("assistant", "The good one.")],
                  rejected=[Turn("assistant", "The bad one.")])
    assert answer_preview(pair).plain == "✓ The good one.  ✗ The bad one."
    assert answer_preview(Record([Turn("user", "unanswered")])).plain == "(no answer)"
    assert answer_preview(Record([Turn("user", "q"), Turn("assistant", "word " * 100)])).plain.endswith("…")


# --- the screen ----------------------------------------------------------------------------


async def test_inline_errors_then_an_estimate_that_sends_nothing(workspace, monkeypatch):
    monkeypatch.delenv("STUDIO_TEST_UNSET_KEY", raising=False)
    with ScriptedServer() as server:
        add_provider(workspace, server)
        save_provider(workspace.root, ProviderConfig(name="keyed", base_url=server.base_url, model="m",
                                                     api_key_env="STUDIO_TEST_UNSET_KEY"))
        app = StudioApp(workspace, host=generate_host())
        async with app.run_test(size=SIZE) as pilot:
            screen = await open_generate(pilot)
            providers = [value for _, value in screen.query_one("#gen-provider", Select)._options]
            assert providers == ["embedded", "local", "keyed"]
            # The only generator is preselected, with its summary; nothing is flagged before asked.
            assert screen.query_one("#gen-generator", Select).value == "echo"
            assert "one answer per seed prompt" in text_of(screen, "#gen-generator-info")
            assert "seeds required" in text_of(screen, "#gen-generator-info")
            assert text_of(screen, "#gen-seeds-error") == ""
            await press_on_results(pilot, screen, "r")
            assert "✗ seed dataset: echo starts from seed records: choose a dataset (and 1 more)" in \
                text_of(screen, "#gen-status")
            assert "choose a dataset" in text_of(screen, "#gen-seeds-error")
            assert "Field required" in text_of(screen, "#gen-settings #error-output")
            assert not screen.busy and not list_runs(workspace)
            # Every field says what is wrong with it, under it.
            await choose(pilot, screen, "#gen-seeds", "prompts")
            assert text_of(screen, "#gen-seeds-error") == "" and "5 records" in text_of(screen, "#gen-seeds-info")
            await set_field(pilot, screen, "gen-settings", "output", "bad name!")
            assert "a dataset name is letters, digits" in text_of(screen, "#gen-settings #error-output")
            await set_field(pilot, screen, "gen-settings", "temperature", "3")
            assert "less than or equal to 2" in text_of(screen, "#gen-settings #error-temperature")
            await set_field(pilot, screen, "gen-config", "max_answer_tokens", "lots")
            assert "valid integer" in text_of(screen, "#gen-config #error-max_answer_tokens")
            await choose(pilot, screen, "#gen-provider", "keyed")
            assert "environment variable STUDIO_TEST_UNSET_KEY is not set" in text_of(screen, "#gen-provider-error")
            assert "4 to fix" in text_of(screen, "#gen-bar")
            await press_on_results(pilot, screen, "e")
            assert "(and 3 more)" in text_of(screen, "#gen-status") and not screen.busy
            # Fixed: the estimate shows requests, tokens and the price, and nothing was sent.
            await choose(pilot, screen, "#gen-provider", "local")
            await set_field(pilot, screen, "gen-settings", "output", "answers")
            await set_field(pilot, screen, "gen-settings", "temperature", "0.7")
            await set_field(pilot, screen, "gen-config", "max_answer_tokens", "20")
            assert "ready" in text_of(screen, "#gen-bar")
            assert "$1000 in / $2000 out per 1M tokens" in text_of(screen, "#gen-provider-info")
            await press_on_results(pilot, screen, "e")
            await wait_until_idle(pilot, screen)
            live = text_of(screen, "#gen-live")
            prompt_tokens = int(live.split(" prompt + ")[0].rsplit(" ", 1)[1])
            cost = (prompt_tokens * 1000 + 5 * 20 * 2000) / 1_000_000
            assert f"estimate 5 requests · {prompt_tokens} prompt + 100 completion tokens · cost ≤ ${cost:.4f}" in live
            assert "nothing was sent" in text_of(screen, "#gen-status")
            assert server.log == [] and not list_runs(workspace) and "answers" not in workspace.dataset_names()
            recipe, _ = screen.draft()
            assert recipe.params == {"temperature": 0.7} and recipe.seed_dataset == "prompts"
            assert recipe.config == {"prefix": "", "max_answer_tokens": 20} and recipe.provider == "local"


async def test_a_run_lists_rows_and_failures_stores_them_and_retry_sends_only_the_failed(workspace, fast_backoff):
    with ScriptedServer() as server:
        add_provider(workspace, server)
        app = StudioApp(workspace, host=generate_host())
        async with app.run_test(size=SIZE) as pilot:
            screen = await open_generate(pilot)
            await configure(pilot, screen)
            await set_field(pilot, screen, "gen-config", "prefix", "Q: ")
            await press_on_results(pilot, screen, "r")
            await wait_until_idle(pilot, screen)
            summary = screen.summary
            assert summary.status == "completed" and summary.rows == 3 and summary.failed_rows == 2
            # The rows as they were made: the seed prompt and the model's answer.
            rows = table_rows(screen.query_one("#gen-rows", DataTable))
            assert [r[:3] for r in rows] == [["1", "conv", "What is the capital of France?"],
                                             ["2", "conv", "Name a prime number."],
                                             ["3", "conv", "How do I boil an egg?"]]
            assert rows[0][3] == "Answer 1: Q: What is the capital of France?"
            assert "Answer 1: Q: What is the capital of France?" in text_of(screen, "#gen-row-detail")
            # The counters: 3 answered, 2 failed for good after one retry each (7 requests sent).
            live = text_of(screen, "#gen-live")
            for shown in ("rows made 3", "failed rows 2", "requests done 5 / ~5 est.", "cached 0", "sent 7",
                          "retries 2", "429s 0"):
                assert shown in live, (shown, live)
            assert len(server.log) == 7
            assert f"completed: 3 rows, 2 failed; stored as answers@{summary.version[:8]}" in \
                text_of(screen, "#gen-status")
            head = workspace.head("answers")
            assert head.id == summary.version and head.num_records == 3
            assert head.operation["op"] == "generate" and head.operation["run_id"] == summary.run_id
            assert [r.messages[-1].content for r in workspace.open("answers").records()] == [
                "Answer 1: Q: What is the capital of France?", "Answer 1: Q: Name a prime number.",
                "Answer 1: Q: How do I boil an egg?"]
            # The failed rows, with their errors and the seed they came from.
            await press_on_results(pilot, screen, "t")
            assert screen.query_one("#gen-tabs", TabbedContent).active == "tab-failed"
            failed = table_rows(screen.query_one("#gen-failed", DataTable))
            assert failed == [["#2", "answer", "HTTP 500: internal error (gave up after 2 attempts)"],
                              ["#3", "answer", "HTTP 500: internal error (gave up after 2 attempts)"]]
            detail = text_of(screen, "#gen-failed-detail")
            assert "seed #2 · stage answer · HTTP 500" in detail and "This one never works [[fail]]" in detail
            # Retry failed: the same run, and only the two failed requests go out again.
            sent_before = len(server.log)
            good = {e["hash"] for e in server.log if e["status"] == 200}
            await pilot.press("f")
            await wait_until_idle(pilot, screen)
            retried = screen.summary
            assert retried.run_id == summary.run_id and retried.status == "completed"
            new = server.log[sent_before:]
            assert not {e["hash"] for e in new} & good
            assert len({e["hash"] for e in new}) == 2 and len(new) == 3  # [[fail]] twice, [[500x2]] once
            assert retried.rows == 4 and retried.failed_rows == 1 and retried.meter["cached"] == 3
            assert len(table_rows(screen.query_one("#gen-rows", DataTable))) == 4
            assert table_rows(screen.query_one("#gen-failed", DataTable))[0][0] == "#2"
            assert "cached 3" in text_of(screen, "#gen-live")
            head = workspace.head("answers")
            assert head.id == retried.version and head.num_records == 4
            assert "Why is the sky blue?" in [r.messages[0].content.split(" [[")[0]
                                              for r in workspace.open("answers").records()]
            # o opens what was stored in the Datasets browser.
            await pilot.press("o")
            await pilot.pause()
            await app.workers.wait_for_complete()
            await pilot.pause()
            assert app.current_mode == "datasets" and isinstance(app.screen, BrowserScreen)
            assert app.screen.view.info.id == retried.version


async def test_cancel_stops_a_slow_run_cleanly_and_stores_what_was_made(tmp_path):
    # A sequential generator: each request passes the engine's cancel check when it starts.
    ws = Workspace.init(tmp_path / "ws")
    ws.write_version("prompts", [Record([Turn("user", f"slow question {i}")]) for i in range(40)],
                     operation={"op": "test"})
    with ScriptedServer(latency=0.25) as server:
        add_provider(ws, server, concurrency=2)
        app = StudioApp(ws, host=generate_host(EchoGenerator(), OneByOneGenerator()))
        async with app.run_test(size=SIZE) as pilot:
            screen = await open_generate(pilot)
            assert screen.query_one("#gen-generator", Select).value is Select.NULL  # two: the user picks
            await configure(pilot, screen, output="slow-answers", generator="one_by_one")
            await press_on_results(pilot, screen, "r")
            deadline = time.monotonic() + 20
            while len(screen.rows) < 2 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert screen.busy == "run" and len(screen.rows) >= 2
            assert "running" in text_of(screen, "#gen-bar") and screen.query_one("#gen-progress").display
            live = text_of(screen, "#gen-live")
            assert "/ 40 target" in live and "asking one by one" in live  # the generator's own progress
            await pilot.press("escape")
            await wait_until_idle(pilot, screen, limit=20)
            summary = screen.summary
            assert summary.status == "stopped" and summary.reason == "cancelled"
            assert 2 <= summary.rows < 40 and summary.failed_rows == 0
            assert "stopped (cancelled)" in text_of(screen, "#gen-status")
            assert ws.head("slow-answers").num_records == summary.rows == screen.row_count == len(screen.rows)
            assert list_runs(ws)[0]["status"] == "stopped"
            assert len(server.log) < 40


async def test_the_first_use_build_of_the_embedded_model_is_shown(workspace):
    """The embedded model is built on first use (a minute, once): the screen says so while it lasts."""
    from studio.tui.service_events import ServiceEvent

    app = StudioApp(workspace, host=generate_host())
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_generate(pilot)
        screen.post_message(ServiceEvent("generate", [
            {"event": "model_build", "stage": "start", "size": "tiny", "why": "first use", "path": "/m"},
            {"event": "model_build", "stage": "pretrain", "step": 20, "steps": 120, "loss": 3.5}]))
        await pilot.pause()
        assert "pretraining step 20/120, loss 3.5" in text_of(screen, "#gen-status")
        screen.post_message(ServiceEvent("generate", [
            {"event": "model_build", "stage": "start", "size": "tiny", "why": "first use", "path": "/m"}]))
        await pilot.pause()
        assert "building the embedded tiny model (first use" in text_of(screen, "#gen-status")
