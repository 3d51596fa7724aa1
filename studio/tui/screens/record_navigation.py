"""The record-walking keys the record screens (browser, review) share."""
from __future__ import annotations

from textual.binding import Binding

from studio.tui.screens.dialogs import GotoDialog
from studio.tui.widgets.records import RecordList


class RecordNavigation:
    """The record-walking keys of a screen that shows ``total`` records one at a time.

    The screen provides ``index``, ``total`` and ``go(index)`` (which clamps and redraws), sets
    ``list_widget`` to the list whose height is one page, and says in ``has_records`` whether
    anything is open to walk.
    """

    # The hidden movement keys both screens share; screens splice them into their BINDINGS.
    MOVE_BINDINGS = [
        Binding("down,j", "move(1)", "Next record", show=False),
        Binding("up,k", "move(-1)", "Previous record", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("home", "first", "First record", show=False),
        Binding("end,G", "last", "Last record", show=False),
    ]

    list_widget: type[RecordList]

    def has_records(self) -> bool:
        raise NotImplementedError

    def action_move(self, delta: int) -> None:
        self.go(self.index + delta)

    def action_next(self) -> None:
        self.go(self.index + 1)

    def action_prev(self) -> None:
        self.go(self.index - 1)

    def action_page(self, direction: int) -> None:
        self.go(self.index + direction * self.query_one(self.list_widget).window_size())

    def action_first(self) -> None:
        self.go(0)

    def action_last(self) -> None:
        self.go(self.total - 1)

    def action_goto(self) -> None:
        if not self.has_records():
            return
        def chosen(index: int | None) -> None:
            if index is not None:
                self.go(index)

        self.app.push_screen(GotoDialog(self.total, self.index), chosen)
