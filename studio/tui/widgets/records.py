"""The record browser's widgets: a windowed list of record previews and the record itself.

Neither widget ever holds more than one window of records: the browser screen pages them from
the memory-mapped Arrow file with ``VersionView.page`` and hands the window over.
"""
from __future__ import annotations

from rich.text import Text
from textual import events
from textual.message import Message
from textual.widgets import Static

from studio.records import Record
from studio.rendering import kind_tag, record_preview, render_record


class RecordList(Static):
    """One line per record of the current window; the current record is highlighted."""

    class Resized(Message):
        """The list's height changed: the browser re-pages its window."""

    class Clicked(Message):
        def __init__(self, index: int) -> None:
            super().__init__()
            self.index = index

    def __init__(self, **kwargs) -> None:
        super().__init__("", **kwargs)
        self.start = 0
        self.records: list[Record] = []
        self.current = 0
        self.total = 0

    def show(self, start: int, records: list[Record], current: int, total: int) -> None:
        self.start, self.records, self.current, self.total = start, records, current, total
        self.update(self._render_window())

    def on_resize(self, event: events.Resize) -> None:
        self.post_message(self.Resized())

    def on_click(self, event: events.Click) -> None:
        if 0 <= event.y < len(self.records):
            self.post_message(self.Clicked(self.start + event.y))

    def _render_window(self) -> Text:
        width = max(10, self.size.width or 40)
        number_width = len(f"{max(self.total, 1):,}")
        text = Text(no_wrap=True, overflow="ellipsis")
        for offset, record in enumerate(self.records):
            index = self.start + offset
            selected = index == self.current
            tag, tag_style = kind_tag(record)
            line = Text(no_wrap=True, overflow="ellipsis", end="")
            line.append(f"{index + 1:>{number_width},} ", style="bold" if selected else "dim")
            line.append(f"{tag:<4} ", style=tag_style)
            room = max(0, width - number_width - 6)
            preview = record_preview(record)
            line.append(preview[:room] if len(preview) <= room else preview[: max(0, room - 1)] + "…")
            if selected:
                line.pad_right(max(0, width - line.cell_len))
                line.stylize("reverse")
            if offset:
                text.append("\n")
            text.append_text(line)
        return text

    def window_size(self) -> int:
        """How many records fit: the page size for PageUp/PageDown."""
        return max(1, self.size.height or 1)


class RecordView(Static):
    """The current record as chat turns (or a side-by-side preference pair)."""

    def __init__(self, **kwargs) -> None:
        super().__init__("", **kwargs)
        self.record: Record | None = None

    def show(self, record: Record | None, highlight: str | None = None) -> None:
        self.record = record
        self.update(render_record(record, highlight) if record is not None
                    else Text("(no records)", style="dim italic"))
