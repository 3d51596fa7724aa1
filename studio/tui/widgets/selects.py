"""Select helpers shared by the screens that pick plugins, datasets and recipes."""
from __future__ import annotations

from textual.widgets import Select


def set_select_options(select: Select, options: list[tuple[str, str]], default: str | None = None,
                       force: bool = False) -> None:
    """Replace the options without firing Changed, keeping the current choice when it is still
    offered (or ``default`` when ``force`` or when it is not)."""
    current = select.value
    values = [value for _, value in options]
    with select.prevent(Select.Changed):
        select.set_options(options)
        if force and default in values:
            select.value = default
        elif current in values:
            select.value = current
        elif default in values:
            select.value = default


def select_value(select: Select) -> str | None:
    value = select.value
    return None if value is Select.NULL else str(value)
