"""The arena: one prompt goes to two models, and their answers stream side by side.

Each side runs in its own thread worker and generates with the serving engine
(:class:`studio.serving.model_server.Engine`, the token loop behind ``studio serve``), so the
arena shows exactly what the served model would stream: the same chat template, stop tokens and
greedy decoding. Loaded engines are kept per model reference, so a second prompt starts at once.
Deltas reach the pane through :func:`studio.tui.service_events.service_emitter`, a burst at a
time.
"""
from __future__ import annotations

import threading
from typing import Any, Callable

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Input, Label, Static
from textual.worker import get_current_worker

from studio.events import event_name
from studio.tui.service_events import ServiceEvent, service_emitter

ARENA_MAX_TOKENS = 160  # the tiny models ramble; a longer answer is a real model's to give
SIDES = ("left", "right")


def load_engine(ref: str, workspace: Any = None):
    """The serving engine for a model reference (embedded, run, folder, hub id)."""
    from studio.models.loading import load_model, resolve_model_ref
    from studio.serving.model_server import Engine, served_name

    location = resolve_model_ref(ref, workspace=workspace)  # builds the embedded model on first use
    model, tokenizer = load_model(location)
    return Engine(model, tokenizer, served_name(ref))


def stream_answer(engine, prompt: str, on_text: Callable[[str], None], *, max_tokens: int = ARENA_MAX_TOKENS,
                  cancelled: Callable[[], bool] = lambda: False) -> dict[str, Any]:
    """Greedy answer to one user message, each text delta handed to ``on_text`` as it is made;
    the chat template when the model has one, the plain prompt otherwise."""
    from studio.serving.model_server import Choice, Sampling

    with engine.lock:
        if getattr(engine.tokenizer, "chat_template", None):
            ids = engine.chat_prompt([{"role": "user", "content": prompt}])
        else:
            ids = engine.text_prompt(prompt)
        budget = engine.budget(len(ids), max_tokens, max_tokens, "prompt")
        sampling = Sampling(max_tokens=budget, temperature=0.0, top_p=1.0, n=1, stop=[], seed=None)
        choice = Choice()
        for delta in engine.generate(ids, sampling, budget, None, choice):
            on_text(delta)
            if cancelled():
                choice.finish_reason = "cancelled"
                break
    return {"text": choice.text, "finish_reason": choice.finish_reason, "tokens": choice.tokens}


class ArenaPane(Vertical):
    """A prompt line over two answer columns; :meth:`set_models` says which two models answer."""

    DEFAULT_CSS = """
    ArenaPane { height: 1fr; }
    ArenaPane #arena-prompt { margin-bottom: 1; }
    ArenaPane #arena-sides { height: 1fr; }
    ArenaPane .arena-side { width: 1fr; height: 1fr; }
    ArenaPane .arena-side-title { height: 1; text-wrap: nowrap; text-overflow: ellipsis; width: 1fr; }
    ArenaPane .arena-scroll { height: 1fr; border-top: solid $primary-muted; }
    ArenaPane #arena-right-side { margin-left: 1; }
    """

    def __init__(self, workspace: Any = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.workspace = workspace
        self.max_tokens = ARENA_MAX_TOKENS
        self.models: dict[str, str | None] = {side: None for side in SIDES}
        self.answers: dict[str, str] = {side: "" for side in SIDES}
        self.states: dict[str, str] = {side: "" for side in SIDES}  # "", "loading", "streaming", finish reason
        self._engines: dict[str, Any] = {}
        self._engine_lock = threading.Lock()
        self._stop = threading.Event()

    def compose(self) -> ComposeResult:
        yield Input(placeholder="a prompt for both models, then Enter", id="arena-prompt", compact=True)
        with Horizontal(id="arena-sides"):
            for side in SIDES:
                with Vertical(id=f"arena-{side}-side", classes="arena-side"):
                    yield Label("", id=f"arena-{side}-title", classes="arena-side-title")
                    with VerticalScroll(id=f"arena-{side}-scroll", classes="arena-scroll"):
                        yield Static("", id=f"arena-{side}")

    def on_mount(self) -> None:
        self._titles()

    def set_models(self, left: str | None, right: str | None) -> None:
        if self.busy:
            return  # the answers on screen belong to the models that are answering
        self.models = {"left": left, "right": right}
        if self.is_mounted:
            self._titles()

    @property
    def busy(self) -> bool:
        return any(state in ("loading", "streaming") for state in self.states.values())

    def _titles(self) -> None:
        for side in SIDES:
            ref = self.models[side]
            title = Text(no_wrap=True, overflow="ellipsis")
            title.append("base " if side == "left" else "vs ", style="dim")
            title.append(ref or "—", style="bold")
            state = self.states[side]
            if state:
                title.append(f"  {state}", style="yellow" if state in ("loading", "streaming") else "dim")
            self.query_one(f"#arena-{side}-title", Label).update(title)
            if ref is None and not self.answers[side]:
                self.query_one(f"#arena-{side}", Static).update(Text(
                    "pick a model under Base model" if side == "left" else "pick a model under Compared with",
                    style="dim"))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id != "arena-prompt":
            return
        event.stop()
        self.ask(event.value)

    def ask(self, prompt: str) -> bool:
        """Send ``prompt`` to both models; False when there is nothing to send or they still answer."""
        if not prompt.strip() or self.busy:
            return False
        self._stop.clear()
        for side in SIDES:
            self.answers[side] = ""
            self.query_one(f"#arena-{side}", Static).update("")
            if self.models[side] is not None:
                self.states[side] = "loading"
                self._answer(side, self.models[side], prompt)
        self._titles()
        return True

    def stop(self) -> None:
        self._stop.set()

    def _engine(self, ref: str):
        with self._engine_lock:  # both sides may want the same model: load it once
            if ref not in self._engines:
                self._engines[ref] = load_engine(ref, self.workspace)
            return self._engines[ref]

    @work(thread=True, exit_on_error=False)
    def _answer(self, side: str, ref: str, prompt: str) -> None:
        worker = get_current_worker()
        cancelled = lambda: self._stop.is_set() or worker.is_cancelled  # noqa: E731
        with service_emitter(self, f"arena-{side}", every=0.05) as emit:
            try:
                engine = self._engine(ref)
                emit({"event": "streaming"})
                done = stream_answer(engine, prompt, lambda text: emit({"event": "delta", "text": text}),
                                     max_tokens=self.max_tokens, cancelled=cancelled)
            except Exception as exc:  # noqa: BLE001 - shown in that side's column; the other goes on
                emit({"event": "failed", "error": f"{type(exc).__name__}: {exc}"})
                return
            emit({"event": "answered", **{k: v for k, v in done.items() if k != "text"}})

    def on_service_event(self, message: ServiceEvent) -> None:
        if not message.source.startswith("arena-"):
            return
        message.stop()
        side = message.source[len("arena-"):]
        failed = None
        for event in message.events:
            name = event_name(event)
            if name == "streaming":
                self.states[side] = "streaming"
            elif name == "delta":
                self.answers[side] += event["text"]
            elif name == "answered":
                self.states[side] = f"{event.get('tokens', 0)} tokens · {event.get('finish_reason')}"
            elif name == "failed":
                self.states[side] = "failed"
                failed = event["error"]
        body = Text(self.answers[side])
        if failed:
            body.append(("\n" if self.answers[side] else "") + f"✗ {failed}", style="red")
        self.query_one(f"#arena-{side}", Static).update(body)
        self.query_one(f"#arena-{side}-scroll", VerticalScroll).scroll_end(animate=False)
        self._titles()
