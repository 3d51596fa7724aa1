"""What studio screens share: failed workers are reported by the app's one handler, and the
record screens (browser, review) walk their records with the same keys.

``Worker.StateChanged`` does not bubble, it only reaches the node that started the worker, so
each screen forwards failures to :meth:`StudioApp.report_worker_error` through this mixin.
Screens that also need the state (to re-enable a form, say) define their own handler; Textual
calls both.
"""
from __future__ import annotations

from textual.binding import Binding

from textual.worker import Worker, WorkerState

from studio.tui.widgets.records import RecordList


class ReportsWorkerErrors:
    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR:
            report = getattr(self.app, "report_worker_error", None)  # type: ignore[attr-defined]
            if report is not None:
                report(event.worker)


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
        # Imported here because dialogs imports this module.
        from studio.tui.screens.dialogs import GotoDialog

        def chosen(index: int | None) -> None:
            if index is not None:
                self.go(index)

        self.app.push_screen(GotoDialog(self.total, self.index), chosen)
