"""A terminal line plot drawn with braille characters (2 x 4 dots a cell).

:func:`render_plot` is pure: series of ``(x, y)`` points in, a :class:`rich.text.Text` of exactly
``height`` lines out, with the y range labelled on the left (max on the top row, min on the
bottom row) and the x range under the plot. Consecutive points are joined by straight lines; one
point is a dot; a flat series is a line across the middle; values that are not finite numbers
(a diverged run logs ``"nan"``) are left out. :class:`LinePlot` is the widget around it: a title
line with a legend and the plot sized to the widget.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from rich.text import Text
from textual.widget import Widget

BRAILLE = 0x2800
# Dot bits by (row 0..3, column 0..1) inside one braille cell.
DOT_BITS = ((0x01, 0x08), (0x02, 0x10), (0x04, 0x20), (0x40, 0x80))
AXIS_STYLE = "dim"
DEFAULT_STYLES = ("bold cyan", "bold magenta", "bold yellow", "bold green")


@dataclass
class Series:
    label: str
    points: Sequence[Any]  # (x, y) pairs, or plain y values (x = 1, 2, ...)
    style: str = ""


@dataclass
class _Finite:
    label: str
    style: str
    points: list[tuple[float, float]] = field(default_factory=list)


def format_number(value: float) -> str:
    """Short axis labels: 4 significant digits, no trailing noise."""
    if value == 0:
        return "0"
    if abs(value) >= 1e5 or abs(value) < 1e-3:
        return f"{value:.2e}"
    return f"{value:.4g}"


def _as_float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def finite_points(points: Iterable[Any]) -> list[tuple[float, float]]:
    out = []
    for index, point in enumerate(points):
        if isinstance(point, (tuple, list)) and len(point) == 2:
            x, y = _as_float(point[0]), _as_float(point[1])
        else:
            x, y = float(index + 1), _as_float(point)
        if x is not None and y is not None:
            out.append((x, y))
    return out


def _span(low: float, high: float) -> tuple[float, float]:
    if high > low:
        return low, high
    pad = abs(low) * 0.05 or 1.0
    return low - pad, high + pad


def _line(x0: int, y0: int, x1: int, y1: int) -> Iterable[tuple[int, int]]:
    """The dots of a straight line (Bresenham), both ends included."""
    dx, dy = abs(x1 - x0), -abs(y1 - y0)
    sx, sy = (1 if x0 < x1 else -1), (1 if y0 < y1 else -1)
    err = dx + dy
    while True:
        yield x0, y0
        if x0 == x1 and y0 == y1:
            return
        e2 = 2 * err
        if e2 >= dy:
            err += dy
            x0 += sx
        if e2 <= dx:
            err += dx
            y0 += sy


def plot_cells(series: Sequence[Series], columns: int, rows: int,
               x_range: tuple[float, float] | None = None, y_range: tuple[float, float] | None = None
               ) -> list[list[tuple[int, str]]]:
    """The braille canvas: ``rows`` x ``columns`` cells of (dot bits, style of the last series
    that drew in the cell)."""
    grid = [[(0, "") for _ in range(columns)] for _ in range(rows)]
    clean = [s for s in (_clean(s, i) for i, s in enumerate(series)) if s.points]
    if not clean or columns <= 0 or rows <= 0:
        return grid
    xs = [x for s in clean for x, _ in s.points]
    ys = [y for s in clean for _, y in s.points]
    x_lo, x_hi = x_range or (min(xs), max(xs))
    y_lo, y_hi = _span(*(y_range or (min(ys), max(ys))))
    dots_w, dots_h = columns * 2, rows * 4

    def dot(x: float, y: float) -> tuple[int, int]:
        if x_hi > x_lo:
            px = round((x - x_lo) / (x_hi - x_lo) * (dots_w - 1))
        else:
            px = (dots_w - 1) // 2
        py = round((y_hi - y) / (y_hi - y_lo) * (dots_h - 1))
        return min(max(px, 0), dots_w - 1), min(max(py, 0), dots_h - 1)

    for s in clean:
        pixels = [dot(x, y) for x, y in sorted(s.points)]
        path = list(_line(*pixels[0], *pixels[0])) if len(pixels) == 1 else [
            p for a, b in zip(pixels, pixels[1:]) for p in _line(*a, *b)]
        for px, py in path:
            cell_x, cell_y = px // 2, py // 4
            bits, _ = grid[cell_y][cell_x]
            grid[cell_y][cell_x] = (bits | DOT_BITS[py % 4][px % 2], s.style)
    return grid


def _clean(series: Series, index: int) -> _Finite:
    style = series.style or DEFAULT_STYLES[index % len(DEFAULT_STYLES)]
    return _Finite(series.label, style, finite_points(series.points))


def render_plot(series: Sequence[Series] | Series, width: int, height: int, empty: str = "no data yet") -> Text:
    """``height`` lines of at most ``width`` characters: y labels, the canvas, x labels."""
    if isinstance(series, Series):
        series = [series]
    width, height = max(width, 4), max(height, 2)
    clean = [s for s in (_clean(s, i) for i, s in enumerate(series)) if s.points]
    text = Text(no_wrap=True, overflow="crop")
    if not clean:
        lines = [""] * height
        lines[(height - 1) // 2] = empty.center(width)[:width].rstrip()
        for index, line in enumerate(lines):
            text.append(line, style="dim italic")
            if index < height - 1:
                text.append("\n")
        return text
    xs = [x for s in clean for x, _ in s.points]
    ys = [y for s in clean for _, y in s.points]
    x_lo, x_hi = min(xs), max(xs)
    y_lo, y_hi = _span(min(ys), max(ys))
    top, bottom = format_number(y_hi), format_number(y_lo)
    gutter = max(len(top), len(bottom))
    columns = max(1, width - gutter - 1)
    rows = height - 1
    grid = plot_cells(series, columns, rows, (x_lo, x_hi), (y_lo, y_hi))
    for row_index, row in enumerate(grid):
        label = top if row_index == 0 else bottom if row_index == rows - 1 else ""
        text.append(label.rjust(gutter), style=AXIS_STYLE)
        text.append("┤" if label else "│", style=AXIS_STYLE)
        run_style, run = None, []
        for bits, style in row:
            char = chr(BRAILLE + bits) if bits else " "
            style = style if bits else ""
            if style != run_style and run:
                text.append("".join(run), style=run_style or "")
                run = []
            run_style = style
            run.append(char)
        if run:
            text.append("".join(run), style=run_style or "")
        text.append("\n")
    left, right = format_number(x_lo), format_number(x_hi)
    axis = " " * (gutter + 1) + left
    if x_hi > x_lo:
        axis += right.rjust(max(1, columns - len(left)))
    text.append(axis[:width], style=AXIS_STYLE)
    return text


def legend(series: Sequence[Series]) -> Text:
    text = Text()
    for index, s in enumerate(series):
        clean = _clean(s, index)
        if index:
            text.append("  ")
        text.append("━ ", style=clean.style)
        text.append(s.label)
        if clean.points:
            text.append(f" {format_number(clean.points[-1][1])}", style="bold")
    return text


class LinePlot(Widget):
    """A titled plot of one or more series; set them with :meth:`show`."""

    DEFAULT_CSS = """
    LinePlot { height: 9; width: 1fr; }
    """

    def __init__(self, title: str = "", empty: str = "no data yet", **kwargs) -> None:
        super().__init__(**kwargs)
        self.title = title
        self.empty = empty
        self.series: list[Series] = []

    def show(self, series: Sequence[Series]) -> None:
        self.series = list(series)
        self.refresh()

    def point_count(self) -> int:
        return sum(len(finite_points(s.points)) for s in self.series)

    def render(self) -> Text:
        width, height = self.size.width, self.size.height
        head = Text(self.title, style="bold", no_wrap=True, overflow="ellipsis")
        if self.series:
            head.append("  ")
            head.append_text(legend(self.series))
        if height <= 2:
            return head
        head.append("\n")
        head.append_text(render_plot(self.series, width, height - 1, self.empty))
        return head
