"""What the Runs screen knows about one training run, read incrementally from its folder.

:class:`RunTail` tails ``events.jsonl`` with byte offsets (``TrainRun.read_from``), so a refresh
reads only what was appended since the last one, and keeps the series to plot, the latest value
of every metric, alerts, warnings, errors, checkpoints and progress. The ``*_text`` functions
turn that into rich text. Nothing here imports Textual or torch; the screen owns the widgets.

The run processes this TUI started are kept in :data:`PROCESSES` and polled by :func:`reap`, so
a finished one does not linger as a zombie (whose pid would still look alive).
"""
from __future__ import annotations

import math
import os
import subprocess
import time
from pathlib import Path
from typing import Any

from rich.text import Text

from studio.events import event_name
from studio.training.alerts import KL_KEYS, replay

# The one number the run table shows for each run, by preference (PPO logs no plain loss: its
# reward model's or rule rewards' score is what a run is judged by).
KEY_METRICS = ("eval_loss", "loss", "train_loss", "rewards/margins", "reward", "rewards/mean",
               "objective/scores", "objective/rlhf_reward")
REWARD_PLOT_KEYS = ("rewards/margins", "reward", "rewards/mean", "rewards/chosen", "objective/scores",
                    "objective/rlhf_reward")
VALUE_LOSS_KEYS = ("loss/value",)  # PPO's value-model loss, plotted where there is no plain loss
STATUS_STYLES = {"running": "bold yellow", "queued": "yellow", "completed": "green", "cancelled": "magenta",
                 "failed": "bold red", "interrupted": "red", "unknown": "dim"}
LOG_TAIL_BYTES = 32_768

PROCESSES: dict[str, subprocess.Popen] = {}


def remember_process(run_id: str, process: subprocess.Popen) -> None:
    PROCESSES[run_id] = process


def reap() -> None:
    """Collect the exit status of run processes that ended (polling reaps them)."""
    for run_id, process in list(PROCESSES.items()):
        if process.poll() is not None:
            PROCESSES.pop(run_id, None)


def as_number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def format_value(value: Any) -> str:
    number = as_number(value)
    if number is None:
        return "—" if value is None else str(value)
    if number.is_integer() and abs(number) < 1e12:
        return f"{int(number):,}" if abs(number) >= 1e4 else str(int(number))
    if not math.isfinite(number):
        return str(number)
    return f"{number:.4g}"


def format_time(timestamp: Any) -> str:
    number = as_number(timestamp)
    if number is None:
        return "—"
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(number))


def format_duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def tail_lines(path: Path, lines: int) -> list[str]:
    """The last ``lines`` lines of a text file, reading at most its last 32 KiB."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - LOG_TAIL_BYTES))
            data = fh.read()
    except OSError:
        return []
    text = data.decode("utf-8", errors="replace")
    if size > LOG_TAIL_BYTES:
        text = text.split("\n", 1)[-1]  # the first line may be cut
    return text.splitlines()[-lines:]


class RunTail:
    """A run's events so far; :meth:`poll` reads the new ones."""

    def __init__(self, run) -> None:
        self.run = run
        self.reset()

    def reset(self) -> None:
        self.offset = 0
        self.series: dict[str, dict[int, float]] = {}  # metric -> step -> value (a resumed step: the later)
        self.latest: dict[str, tuple[int, Any]] = {}  # metric -> (step, value), in first-logged order
        self.history: list[dict[str, Any]] = []  # metrics/eval events, for replaying alerts
        self.alerts: list[dict[str, Any]] = []
        self.warnings: list[str] = []
        self.errors: list[dict[str, Any]] = []
        self.checkpoint_steps: list[int] = []
        self.progress: dict[str, Any] = {}
        self.end: dict[str, Any] | None = None
        self.cancelling = False
        self.events = 0

    def poll(self) -> bool:
        """Read what was appended since the last poll; True when anything new arrived."""
        path = self.run.path / "events.jsonl"
        try:
            size = path.stat().st_size
        except OSError:
            size = 0
        if size < self.offset:  # rewritten: start over
            self.reset()
        events, self.offset = self.run.read_from("events.jsonl", self.offset)
        for event in events:
            self.feed(event)
        return bool(events)

    def feed(self, event: dict[str, Any]) -> None:
        self.events += 1
        kind = event_name(event)
        step = int(as_number(event.get("step")) or 0)
        if kind in ("metrics", "eval"):
            values = event.get("values") or {}
            self.history.append({"step": step, "values": values})
            for name, value in values.items():
                self.latest[name] = (step, value)
                number = as_number(value)
                if number is None and isinstance(value, str):
                    number = float("nan")  # a logged "nan"/"inf": kept out of the plot, shown in the table
                if number is not None:
                    self.series.setdefault(name, {})[step] = number
        elif kind in ("progress", "train_begin"):
            self.progress = {**self.progress, **{k: v for k, v in event.items() if k not in ("event", "kind")}}
        elif kind == "alert":
            self.alerts.append(event)
        elif kind == "warning":
            self.warnings.append(str(event.get("message") or ""))
        elif kind == "error":
            self.errors.append(event)
        elif kind == "checkpoint":
            if step not in self.checkpoint_steps:
                self.checkpoint_steps.append(step)
        elif kind == "cancelling":
            self.cancelling = True
        elif kind == "end":
            self.end = event
        elif kind == "start":
            self.end = None
            self.cancelling = False

    # --- what to show ---------------------------------------------------------------------

    def points(self, name: str) -> list[tuple[float, float]]:
        return [(float(step), value) for step, value in sorted(self.series.get(name, {}).items())]

    def first_present(self, names: tuple[str, ...]) -> str | None:
        return next((n for n in names if self.series.get(n)), None)

    def reward_metric(self) -> str | None:
        return self.first_present(REWARD_PLOT_KEYS) or next(
            (n for n in self.series if n.startswith("rewards/") and n.endswith("/mean")), None)

    def kl_metric(self) -> str | None:
        return self.first_present(KL_KEYS)

    def value_loss_metric(self) -> str | None:
        return self.first_present(VALUE_LOSS_KEYS)

    def key_metric(self) -> tuple[str, Any] | None:
        for name in KEY_METRICS:
            if name in self.latest:
                return name, self.latest[name][1]
        return None

    def all_alerts(self) -> list[dict[str, Any]]:
        """The run's own alerts, plus those a replay of its history finds (runs from before
        alerts were written live); one per rule and metric."""
        seen = {(a.get("rule"), a.get("metric")) for a in self.alerts}
        extra = [a for a in replay(self.history, kl_bound=self.kl_bound())
                 if (a["rule"], a["metric"]) not in seen]
        return self.alerts + extra

    def kl_bound(self) -> float | None:
        """A PPO run's ``config.kl_alert`` (the bound its own alerts used), read once from its recipe."""
        if not hasattr(self, "_kl_bound"):
            try:
                self._kl_bound = as_number((self.run.recipe().config or {}).get("kl_alert"))
            except (ValueError, OSError, AttributeError):
                self._kl_bound = None
        return self._kl_bound


# --- rich text of the detail panes -------------------------------------------------------


def status_text(status: str) -> Text:
    return Text(status, style=STATUS_STYLES.get(status, ""))


def step_text(status: dict[str, Any]) -> str:
    step, total = status.get("step"), status.get("max_steps")
    if step is None and total is None:
        return "—"
    return f"{step or 0}/{total}" if total else str(step or 0)


def summary_text(run_id: str, status: dict[str, Any], tail: RunTail) -> Text:
    state = status.get("status", "unknown")
    text = Text(no_wrap=False)
    text.append(run_id, style="bold")
    text.append("  ")
    text.append_text(status_text(state if not (tail.cancelling and state == "running") else "cancelling"))
    step = tail.progress.get("step", status.get("step"))
    total = tail.progress.get("max_steps", status.get("max_steps"))
    if total:
        text.append(f"  step {step or 0}/{total}")
        elapsed = as_number(tail.progress.get("elapsed"))
        if state == "running" and elapsed and step:
            remaining = elapsed / step * max(0, total - step)
            text.append(f" · {format_duration(elapsed)} elapsed, about {format_duration(remaining)} left",
                        style="dim")
    started, ended = as_number(status.get("started")), as_number(status.get("ended"))
    if state not in ("running", "queued") and started and ended and ended >= started:
        text.append(f" · took {format_duration(ended - started)}", style="dim")
    text.append("\n")
    text.append("back-end ", style="dim")
    text.append(str(status.get("backend") or "—"))
    text.append(" · model ", style="dim")
    text.append(str(status.get("model") or "—"))
    text.append("\ndata ", style="dim")
    text.append(str(status.get("dataset") or "—"))
    if status.get("train_records") is not None:
        text.append(f" ({status['train_records']} train / {status.get('eval_records', 0)} eval)", style="dim")
    if status.get("reason") and state in ("failed", "cancelled", "interrupted"):
        text.append("\n")
        text.append(str(status["reason"]), style=STATUS_STYLES.get(state, ""))
    if state == "interrupted":
        text.append("\nthe process is gone: r resumes from the last checkpoint", style="dim")
    return text


def checks_text(metrics: dict[str, Any], expected: int | None, state: str) -> Text:
    checks = (metrics or {}).get("checks")
    text = Text()
    if not checks:
        if expected == 0:
            text.append("the recipe has no learning checks (expect:)", style="dim")
        elif state in ("running", "queued"):
            text.append(f"{expected or 'the'} check(s) run when training ends", style="dim")
        else:
            text.append("no results", style="dim")
        return text
    for index, check in enumerate(checks):
        if index:
            text.append("\n")
        passed = bool(check.get("passed"))
        text.append("✓ " if passed else "✗ ", style="bold green" if passed else "bold red")
        text.append(str(check.get("metric")), style="bold")
        if "first" in check and "last" in check:
            text.append(f"  {format_value(check['first'])} → {format_value(check['last'])}")
        if "value" in check:
            text.append(f"  = {format_value(check['value'])}")
        for detail in check.get("details") or []:
            text.append(f"\n  {detail}", style="red")
    return text


def alerts_text(tail: RunTail) -> Text:
    text = Text()
    items: list[Text] = []
    for error in tail.errors:
        items.append(Text(f"✗ error: {error.get('message')}", style="bold white on dark_red"))
    for alert in tail.all_alerts():
        line = Text(f"⚠ {alert.get('rule')} ", style="bold black on yellow")
        line.append(f" {alert.get('message')}", style="yellow")
        items.append(line)
    for warning in tail.warnings:
        items.append(Text(f"! {warning}", style="yellow"))
    if not items:
        return Text("no alerts", style="dim")
    for index, item in enumerate(items):
        if index:
            text.append("\n")
        text.append_text(item)
    return text


def checkpoints_text(checkpoints: list[dict[str, Any]], tail: RunTail) -> Text:
    if not checkpoints:
        if tail.checkpoint_steps:
            return Text(f"saved at steps {', '.join(map(str, tail.checkpoint_steps))} (since removed)", style="dim")
        return Text("none yet", style="dim")
    text = Text()
    for index, checkpoint in enumerate(checkpoints):
        if index:
            text.append("\n")
        text.append(Path(checkpoint["path"]).name, style="bold" if checkpoint.get("complete") else "dim")
        text.append(f"  step {checkpoint['step']}")
        if not checkpoint.get("complete"):
            text.append("  (incomplete)", style="red")
    return text


def log_text(lines: list[str]) -> Text:
    if not lines:
        return Text("(no output yet)", style="dim")
    text = Text(no_wrap=True, overflow="ellipsis")
    for index, line in enumerate(lines):
        if index:
            text.append("\n")
        lowered = line.lower()
        style = "red" if ("error" in lowered or "traceback" in lowered) else "dim" if line.startswith("$ ") else ""
        text.append(line, style=style)
    return text


def compare_text_value(value: Any, limit: int = 0) -> str:
    if isinstance(value, (list, dict)):
        import json

        text = json.dumps(value, ensure_ascii=False)
    else:
        text = format_value(value) if value is not None else "—"
    return text if not limit or len(text) <= limit else text[: limit - 1] + "…"
