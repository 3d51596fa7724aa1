"""What every studio screen shares: failed workers are reported by the app's one handler.

``Worker.StateChanged`` does not bubble, it only reaches the node that started the worker, so
each screen forwards failures to :meth:`StudioApp.report_worker_error` through this mixin.
Screens that also need the state (to re-enable a form, say) define their own handler; Textual
calls both.
"""
from __future__ import annotations

from textual.worker import Worker, WorkerState


class ReportsWorkerErrors:
    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR:
            report = getattr(self.app, "report_worker_error", None)  # type: ignore[attr-defined]
            if report is not None:
                report(event.worker)
