"""F1 / ?: every key active on the screen below, read from its live bindings so it never drifts."""
from __future__ import annotations

import dataclasses

from rich import box
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Label, Static


def bindings_table(screen: Screen) -> Table:
    app = screen.app
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, expand=True)
    table.add_column("key", style="bold", no_wrap=True)
    table.add_column("does")
    table.add_column("where", style="dim")
    rows: dict[tuple[str, str], list[str]] = {}
    palette_text = "Command palette: open a dataset, switch screens, import, export …"
    for key, active in screen.active_bindings.items():
        binding = active.binding
        if binding.action == "command_palette":
            binding = dataclasses.replace(binding, description=palette_text)
        if not binding.description:
            continue
        where = "everywhere" if active.node is app else (
            getattr(active.node, "title", None) or type(active.node).__name__)
        if active.node is screen and where != "everywhere":
            where = "this screen"
        rows.setdefault((binding.description, where), []).append(app.get_key_display(binding))
    if not any(description == palette_text for description, _ in rows):
        palette = app.get_key_display(Binding(app.COMMAND_PALETTE_BINDING, ""))
        rows.setdefault((palette_text, "everywhere"), []).append(palette)
    order = {"this screen": 0, "everywhere": 1}
    for (description, where), keys in sorted(rows.items(), key=lambda item: order.get(item[0][1], 2)):
        table.add_row(" / ".join(dict.fromkeys(keys)), description, where)
    return table


class HelpScreen(ModalScreen):
    BINDINGS = [Binding("escape,f1,question_mark,q", "close", "Close")]

    def action_close(self) -> None:
        self.dismiss(None)

    def __init__(self, below: Screen) -> None:
        super().__init__()
        self.table = bindings_table(below)
        self.below_title = getattr(below, "title", None) or type(below).__name__

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="help-dialog"):
            yield Label(f"Keys · {self.below_title}", classes="dialog-title")
            with VerticalScroll(id="help-scroll"):
                yield Static(self.table, id="help-keys")
            yield Static(Text("Esc closes this help.", style="dim"))

