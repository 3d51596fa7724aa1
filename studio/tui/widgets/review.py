"""The review list: the record browser's windowed list with each record's review marks
(⚑ flagged, ✗ deleted/rejected, ✎ edited, ⇄ swapped, ✓ accepted). Like the browser's list it
only ever holds one window of records."""
from __future__ import annotations

from typing import Any

from rich.text import Text

from studio.rendering import kind_tag, record_preview, review_mark
from studio.tui.widgets.records import RecordList


class ReviewList(RecordList):
    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.marks: dict[int, tuple[bool, Any]] = {}  # window index -> (flagged, review state)

    def show_marked(self, start: int, records: list, current: int, total: int,
                    marks: dict[int, tuple[bool, Any]]) -> None:
        self.marks = marks
        self.show(start, records, current, total)

    def _render_window(self) -> Text:
        width = max(10, self.size.width or 40)
        number_width = len(f"{max(self.total, 1):,}")
        text = Text(no_wrap=True, overflow="ellipsis")
        for offset, record in enumerate(self.records):
            index = self.start + offset
            selected = index == self.current
            flagged, state = self.marks.get(index, (False, None))
            tag, tag_style = kind_tag(record)
            line = Text(no_wrap=True, overflow="ellipsis", end="")
            line.append(f"{index + 1:>{number_width},} ", style="bold" if selected else "dim")
            line.append_text(review_mark(flagged, state))
            line.append(f" {tag:<4} ", style=tag_style)
            room = max(0, width - number_width - 9)
            preview = record_preview(record)
            shown = preview[:room] if len(preview) <= room else preview[: max(0, room - 1)] + "…"
            line.append(shown, style="strike dim" if state is not None and state.removed else "")
            if selected:
                line.pad_right(max(0, width - line.cell_len))
                line.stylize("reverse")
            if offset:
                text.append("\n")
            text.append_text(line)
        return text
