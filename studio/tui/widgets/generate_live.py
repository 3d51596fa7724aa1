"""The Generate screen's live panel: the cost estimate before a run, the meter while it runs.

The rendering is plain functions from the run's event dicts (``estimate`` and the ``progress``
meter snapshot of :mod:`studio.generation.runner`) to Rich objects, so tests read them without
a running app; :class:`LivePanel` only keeps the latest of each and redraws.
"""
from __future__ import annotations

from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual.widgets import Static


def money(value: float | None) -> str:
    return "—" if value is None else f"${value:,.4f}"


def estimate_text(estimate: dict[str, Any], budget: float | None = None) -> Text:
    """One line (plus notes): requests, tokens and cost, or "unpriced" when the provider has no prices."""
    text = Text()
    text.append("estimate  ", style="bold")
    text.append(f"{estimate.get('requests', 0):,} requests", style="bold")
    text.append(f" · {estimate.get('prompt_tokens', 0):,} prompt + {estimate.get('completion_tokens', 0):,} "
                f"completion tokens · ")
    if estimate.get("priced"):
        text.append(f"cost ≤ {money(estimate.get('cost'))}", style="bold")
        if budget is not None:
            over = (estimate.get("cost") or 0) > budget
            text.append(f" (budget {money(budget)}{': it will stop early' if over else ''})",
                        style="yellow" if over else "dim")
    else:
        text.append("unpriced", style="bold yellow")
        text.append(" (the provider has no price for this model", style="dim")
        text.append("; a budget cannot stop it" if budget is not None else "", style="yellow")
        text.append(")", style="dim")
    for note in estimate.get("notes") or []:
        text.append(f"\n  · {note}", style="dim italic")
    return text


def meter_table(meter: dict[str, Any], estimate: dict[str, Any] | None, budget: float | None) -> Table:
    """The counters of a run, three label/value pairs a line."""
    grid = Table.grid(padding=(0, 1))
    for _ in range(3):
        grid.add_column(style="dim", no_wrap=True)
        grid.add_column(style="bold", no_wrap=True)
    target = meter.get("target")
    rows = Text(f"{meter.get('rows', 0):,}")
    rows.append(f" / {target:,} target" if target else "", style="dim")
    failed_rows = meter.get("failed_rows", 0)
    done = meter.get("answered", 0) + meter.get("cached", 0) + meter.get("failed", 0)
    requests = Text(f"{done:,}")
    if estimate and estimate.get("requests"):
        requests.append(f" / ~{estimate['requests']:,} est.", style="dim")
    priced = bool(estimate and estimate.get("priced"))
    cost = Text(money(meter.get("cost", 0.0)) if priced else "unpriced")
    if budget is not None:
        cost.append(f" of budget {money(budget)}", style="dim")
    throttled = meter.get("throttled", 0)
    grid.add_row("rows made", rows,
                 "failed rows", Text(f"{failed_rows:,}", style="bold red" if failed_rows else ""),
                 "in flight", f"{meter.get('in_flight', 0):,}")
    grid.add_row("requests done", requests, "cached", f"{meter.get('cached', 0):,}",
                 "sent", f"{meter.get('sent', 0):,}")
    grid.add_row("throughput", f"{meter.get('requests_per_s', 0):.1f} req/s · {meter.get('tokens_per_s', 0):,.0f} tok/s",
                 "retries", f"{meter.get('retries', 0):,}",
                 "429s", Text(f"{throttled:,}", style="bold yellow" if throttled else ""))
    grid.add_row("cost so far", cost, "elapsed", f"{meter.get('elapsed', 0):.1f} s", "", "")
    if meter.get("message"):
        grid.add_row("generator", Text(str(meter["message"]), style="italic"), "", "", "", "")
    return grid


class LivePanel(Static):
    """The estimate, then the live counters of the run (the latest meter snapshot)."""

    def __init__(self, **kwargs) -> None:
        super().__init__("", **kwargs)
        self.estimate: dict[str, Any] | None = None
        self.meter: dict[str, Any] | None = None
        self.budget: float | None = None

    def reset(self, budget: float | None = None) -> None:
        self.estimate, self.meter, self.budget = None, None, budget
        self.update(self._content())

    def show(self, *, estimate: dict[str, Any] | None = None, meter: dict[str, Any] | None = None) -> None:
        if estimate is not None:
            self.estimate = estimate
        if meter is not None:
            self.meter = meter
        self.update(self._content())

    def _content(self) -> RenderableType:
        parts: list[RenderableType] = []
        if self.estimate is not None:
            parts.append(estimate_text(self.estimate, self.budget))
        if self.meter is not None:
            parts.append(meter_table(self.meter, self.estimate, self.budget))
        if not parts:
            return Text("e estimates the cost (nothing is sent) · r starts the run", style="dim")
        return Group(*parts)
