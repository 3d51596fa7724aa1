"""One widget that cannot be laid out or drawn must not end the app.

Textual 8 sends every exception it does not expect to ``App._handle_exception``, which always
exits: also the ones raised while the screen lays out its widgets (``Screen._refresh_layout``
catches them) or paints them (the screen's update timer catches those). A widget that trips over
a size nobody tried (Rich cannot wrap text into zero columns, say) would take the whole studio
down. :func:`render_culprit` recognises such an error from its traceback and names the widget
it came from; the app then hides that widget, puts a one-line :class:`RenderFailed` in its
place and says so in a notification, and everything else keeps working. Any other exception
still ends the app as before: only layout and paint errors are contained.
"""
from __future__ import annotations

import os
from types import TracebackType

from rich.text import Text
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Static

import textual

TEXTUAL_DIR = os.path.dirname(textual.__file__)

# Textual functions on the path of every layout and paint: an error raised below one of them
# was raised while laying out or drawing a widget.
LAYOUT_AND_PAINT = frozenset({
    "_refresh_layout", "_compositor_refresh", "reflow", "reflow_visible", "render_update", "render_full_update",
    "render_partial_update", "_arrange_root", "arrange", "_get_box_model", "get_content_width",
    "get_content_height", "render_lines", "render_line", "_render_content", "_render",
})


def _frames(tb: TracebackType | None):
    while tb is not None:
        yield tb.tb_frame
        tb = tb.tb_next


def render_culprit(error: BaseException) -> Widget | None:
    """The widget whose layout or paint raised ``error``, or None when the error came from
    anywhere else (a handler, a worker callback, start-up) or from a screen as a whole."""
    frames = list(_frames(error.__traceback__))
    in_layout_or_paint = any(frame.f_code.co_name in LAYOUT_AND_PAINT
                             and frame.f_code.co_filename.startswith(TEXTUAL_DIR) for frame in frames)
    if not in_layout_or_paint:
        return None
    # The innermost widget on the stack is the one that failed; its containers only called it.
    for frame in reversed(frames):
        owner = frame.f_locals.get("self")
        if isinstance(owner, Widget):
            return None if isinstance(owner, Screen) else owner
    return None


class RenderFailed(Static):
    """Stands in for a widget that could not be drawn: one line, never wrapped."""

    DEFAULT_CSS = """
    RenderFailed {
        height: 1;
        width: 1fr;
        color: $error;
        text-wrap: nowrap;
        text-overflow: ellipsis;
    }
    """

    def __init__(self, widget: Widget, error: BaseException) -> None:
        self.failed_widget = widget
        what = type(widget).__name__ + (f" #{widget.id}" if widget.id else "")
        super().__init__(Text(f"✗ {what} could not be drawn: {type(error).__name__}: {error}"))
