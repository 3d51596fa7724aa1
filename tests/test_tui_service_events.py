"""The one way a service's events reach the screen (studio.tui.service_events): events emitted
in a thread worker arrive in order as ServiceEvent messages, bursts coalesced (only the latest
progress of a burst kept, nothing else dropped), the tail of a burst arrives without waiting for
the next event, and what is held is delivered before the worker's SUCCESS state."""
from __future__ import annotations

import asyncio
import time

import pytest

pytest.importorskip("textual")

from textual import work  # noqa: E402
from textual.app import App  # noqa: E402
from textual.worker import Worker, WorkerState  # noqa: E402

from studio.tui.service_events import ServiceEvent, service_emitter  # noqa: E402

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


class Collector(App):
    """Runs ``produce(emit)`` in a thread worker and records what reaches it, and when."""

    def __init__(self, produce, every: float) -> None:
        super().__init__()
        self.produce, self.every = produce, every
        self.messages: list[ServiceEvent] = []
        self.log_order: list[str] = []

    @work(thread=True, exit_on_error=False)
    def run_service(self):
        with service_emitter(self, "test", every=self.every) as emit:
            return self.produce(emit)

    def on_service_event(self, message: ServiceEvent) -> None:
        self.messages.append(message)
        self.log_order.append("events")

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.SUCCESS:
            self.log_order.append("success")

    @property
    def events(self) -> list[dict]:
        return [e for m in self.messages for e in m.events]


async def test_a_burst_becomes_few_messages_keeping_every_row_and_the_last_progress():
    def produce(emit):
        for i in range(500):
            emit({"event": "progress", "done": i, "total": 500})
            emit({"event": "row", "n": i})
        emit({"event": "end"})
        return "done"

    # A long window: the first event goes at once, the rest of the burst when the worker ends.
    app = Collector(produce, every=60.0)
    async with app.run_test() as pilot:
        worker = app.run_service()
        await worker.wait()
        await pilot.pause()
        assert worker.result == "done"
        assert len(app.messages) == 2 and all(m.source == "test" for m in app.messages)
        rows = [e["n"] for e in app.events if e["event"] == "row"]
        assert rows == list(range(500))
        # A progress event is only replaced by one right behind it: here a row always follows.
        assert [e["done"] for e in app.events if e["event"] == "progress"] == list(range(500))
        assert app.events[-1] == {"event": "end"}
        assert app.log_order[-1] == "success" and "success" not in app.log_order[:-1]


async def test_consecutive_progress_events_collapse_to_the_latest():
    def produce(emit):
        emit({"event": "start"})
        for i in range(1000):
            emit({"event": "progress", "done": i})
        emit({"event": "step_done"})

    app = Collector(produce, every=60.0)
    async with app.run_test() as pilot:
        await app.run_service().wait()
        await pilot.pause()
        assert app.events == [{"event": "start"}, {"event": "progress", "done": 999}, {"event": "step_done"}]


async def test_the_tail_of_a_burst_arrives_while_the_service_is_quiet():
    released = asyncio.Event()
    loop = asyncio.get_running_loop()

    def produce(emit):
        emit({"event": "row", "n": 0})
        emit({"event": "row", "n": 1})  # held: it came within the window of the first
        # The service now waits (a slow request): the held row must not wait for it.
        asyncio.run_coroutine_threadsafe(released.wait(), loop).result(timeout=30)

    app = Collector(produce, every=0.05)
    async with app.run_test() as pilot:
        worker = app.run_service()
        deadline = time.monotonic() + 20
        while [e["n"] for e in app.events] != [0, 1] and time.monotonic() < deadline:
            await pilot.pause(0.05)
        assert [e["n"] for e in app.events] == [0, 1]
        assert worker.state == WorkerState.RUNNING
        released.set()
        await worker.wait()
