"""The items that flipped between the base and a compared model, for one task and metric: a list
on the left (fixed ones first, then broken ones), the item on the right with its prompt, its
choices (the right one marked) and both models' predictions and scores. Walked with the same
keys as the record browser (:class:`~studio.tui.screens.record_navigation.RecordNavigation`).
"""
from __future__ import annotations

from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, Header, Static

from studio.tui.screens.base import ReportsWorkerErrors
from studio.tui.screens.record_navigation import RecordNavigation

PROMPT_CHARS = 2000  # an item's prompt shown in full up to this (5-shot prompts are long)


def flip_list(details: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """``flip_details``' gained and lost items as one list, fixed ones first, each marked."""
    return ([{**item, "fixed": True} for item in details.get("gained") or []]
            + [{**item, "fixed": False} for item in details.get("lost") or []])


def _value(value: Any) -> str:
    return "—" if value is None else f"{float(value):g}"


def _is_target(target: Any, index: int, choice: Any) -> bool:
    if isinstance(target, list):
        return index in target
    return target == index or (isinstance(target, str) and target == choice)


def _choices_table(flip: dict[str, Any], base_label: str, other_label: str) -> Table:
    table = Table(box=None, show_header=True, header_style="dim", pad_edge=False, expand=True)
    table.add_column("", no_wrap=True)
    table.add_column("choice", ratio=1)
    table.add_column(base_label, justify="right", no_wrap=True, max_width=14)
    table.add_column(other_label, justify="right", no_wrap=True, max_width=14)
    for index, choice in enumerate(flip["choices"]):
        cells = []
        for side in ("base", "tuned"):
            picked = flip.get(f"{side}_prediction") == index
            scores = flip.get(f"{side}_scores") or []
            score = scores[index] if index < len(scores) and isinstance(scores[index], (int, float)) else None
            cell = Text("◀ " if picked else "", style="bold")
            cell.append("" if score is None else f"{score:.2f}", style="bold" if picked else "dim")
            cells.append(cell)
        mark = Text("✓", style="green") if _is_target(flip.get("target"), index, choice) else Text(" ")
        table.add_row(mark, str(choice), *cells)
    return table


def _prediction(flip: dict[str, Any], side: str) -> str:
    prediction = flip.get(f"{side}_prediction")
    choices = flip.get("choices") or []
    if isinstance(prediction, int) and not isinstance(prediction, bool) and 0 <= prediction < len(choices):
        return f"{choices[prediction]}"
    return "—" if prediction is None else str(prediction)


def flip_renderable(flip: dict[str, Any], metric: str, base_label: str, other_label: str) -> Group:
    """One flipped item: prompt, choices (the right one marked, each model's pick and scores)
    and both predictions."""
    head = Text()
    head.append("fixed" if flip["fixed"] else "broken", style="bold green" if flip["fixed"] else "bold red")
    head.append(f"  item {flip['id']}  ·  {metric} {_value(flip.get('base_value'))} → "
                f"{_value(flip.get('tuned_value'))}", style="dim")
    prompt = str(flip.get("prompt") or "")
    if len(prompt) > PROMPT_CHARS:
        prompt = "…" + prompt[-PROMPT_CHARS:]  # the end of a few-shot prompt is the item itself
    parts: list[Any] = [head, Text(""), Text("prompt", style="bold"), Text(prompt)]
    if flip.get("choices"):
        parts += [Text(""), _choices_table(flip, base_label, other_label)]
    elif flip.get("target") is not None:
        parts += [Text(""), Text.assemble(("target  ", "bold"), str(flip["target"]))]
    parts += [Text(""), Text.assemble((f"{base_label}: ", "bold"), _prediction(flip, "base")),
              Text.assemble((f"{other_label}: ", "bold"), _prediction(flip, "tuned"))]
    return Group(*parts)


class FlipList(Static):
    """One line per flipped item of the window; the current one highlighted."""

    class Clicked(Message):
        def __init__(self, index: int) -> None:
            super().__init__()
            self.index = index

    def __init__(self, **kwargs) -> None:
        super().__init__("", **kwargs)
        self.start = 0
        self.count = 0

    def show(self, start: int, flips: list[dict[str, Any]], current: int) -> None:
        self.start, self.count = start, len(flips)
        width = max(10, self.size.width or 30)
        text = Text(no_wrap=True, overflow="ellipsis")
        for offset, flip in enumerate(flips):
            index = start + offset
            line = Text(no_wrap=True, overflow="ellipsis", end="")
            line.append("+ " if flip["fixed"] else "− ", style="green" if flip["fixed"] else "red")
            # The end of a prompt is the item itself (a few-shot prompt starts with the examples).
            prompt = " ".join(str(flip.get("prompt") or "").split()[-12:])
            head = f"{flip['id']} "
            line.append(head, style="bold")
            room = max(0, width - 2 - len(head))
            line.append(prompt if len(prompt) <= room else prompt[: max(0, room - 1)] + "…", style="dim")
            line.truncate(width)
            if index == current:
                line.pad_right(max(0, width - line.cell_len))
                line.stylize("reverse")
            if offset:
                text.append("\n")
            text.append_text(line)
        self.update(text)

    def window_size(self) -> int:
        return max(1, self.size.height or 1)

    def on_click(self, event: events.Click) -> None:
        if 0 <= event.y < self.count:
            self.post_message(self.Clicked(self.start + event.y))

    def on_resize(self, event: events.Resize) -> None:
        screen = self.screen
        if isinstance(screen, EvalFlipsScreen):
            screen.go(screen.index)


class EvalFlipsScreen(RecordNavigation, ReportsWorkerErrors, Screen):
    TITLE = "Flipped items"
    list_widget = FlipList
    BINDINGS = [
        *RecordNavigation.MOVE_BINDINGS,
        Binding("g", "goto", "Go to item"),
        Binding("escape", "app.pop_screen", "Back"),
    ]

    def __init__(self, row: dict[str, Any], details: dict[str, list[dict[str, Any]]]) -> None:
        super().__init__()
        self.row, self.flips = row, flip_list(details)
        self.index = 0

    @property
    def total(self) -> int:
        return len(self.flips)

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="flips-bar", classes="form-bar")
        with Horizontal(id="flips-body"):
            yield FlipList(id="flips-list")
            with VerticalScroll(id="flips-detail-scroll"):
                yield Static("", id="flips-detail")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        fixed = sum(1 for f in self.flips if f["fixed"])
        bar = Text(no_wrap=True, overflow="ellipsis")
        bar.append(f" {self.row['task']} ", style="bold")
        bar.append(f"{self.row['metric']}  ", style="dim")
        bar.append(f"{self.row['base']} → {self.row['other']}  ", style="dim")
        bar.append(f"{fixed} fixed", style="green")
        bar.append(" · ", style="dim")
        bar.append(f"{len(self.flips) - fixed} broken", style="red")
        self.query_one("#flips-bar", Static).update(bar)
        self.go(0)

    def has_records(self) -> bool:
        return bool(self.flips)

    def go(self, index: int) -> None:
        detail = self.query_one("#flips-detail", Static)
        if not self.flips:
            self.query_one("#flips-list", FlipList).show(0, [], 0)
            detail.update(Text("No item changed its score between the two models.", style="dim"))
            return
        self.index = max(0, min(index, len(self.flips) - 1))
        flips_list = self.query_one("#flips-list", FlipList)
        size = flips_list.window_size()
        start = min(max(0, self.index - size // 2), max(0, len(self.flips) - size))
        flips_list.show(start, self.flips[start:start + size], self.index)
        detail.update(flip_renderable(self.flips[self.index], self.row["metric"], self.row["base"],
                                      self.row["other"]))

    def on_flip_list_clicked(self, event: FlipList.Clicked) -> None:
        self.go(event.index)
