"""Rich renderables for records and statistics, shared by the CLI (and usable in the TUI)."""
from __future__ import annotations

import json
from typing import Any

from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from studio.records import Record, Turn

ROLE_STYLES = {
    "system": "magenta",
    "user": "cyan",
    "assistant": "green",
    "tool_call": "yellow",
    "tool": "blue",
}
MAX_CHARS = 2000


def _clip(text: str, limit: int = MAX_CHARS) -> str:
    return text if len(text) <= limit else text[:limit] + f" … [{len(text) - limit:,} more chars]"


def visible_meta(record: Record) -> dict[str, Any]:
    """Meta without the formats' private layout hints (keys starting with '_')."""
    return {k: v for k, v in record.meta.items() if not k.startswith("_")}


def render_turns(turns: list[Turn]) -> Group:
    parts = []
    for turn in turns:
        style = ROLE_STYLES.get(turn.role, "white")
        label = Text(f"{turn.role}" + (f" (weight {turn.weight:g})" if turn.weight is not None else ""), style=f"bold {style}")
        parts.append(label)
        parts.append(Text(_clip(turn.content), style="default"))
    return Group(*parts)


def render_record(record: Record, title: str = "") -> Panel:
    body: list[Any] = []
    if record.messages:
        body.append(render_turns(record.messages))
    if record.kind == "preference":
        table = Table.grid(expand=True, padding=(0, 2))
        table.add_column(ratio=1)
        table.add_column(ratio=1)
        table.add_row(Text("chosen", style="bold green"), Text("rejected", style="bold red"))
        table.add_row(render_turns(record.chosen or []), render_turns(record.rejected or []))
        body.append(table)
    if record.label is not None:
        body.append(Text(f"label: {'desirable' if record.label else 'undesirable'}",
                         style="bold green" if record.label else "bold red"))
    if record.tools:
        body.append(Text(f"tools: {_clip(record.tools, 300)}", style="dim"))
    meta = visible_meta(record)
    if meta:
        body.append(Text("meta: " + _clip(json.dumps(meta, ensure_ascii=False), 300), style="dim"))
    return Panel(Group(*body), title=title, title_align="left")


def render_stats(stats: dict[str, Any], title: str = "") -> Panel:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    table.add_row("records", f"{stats.get('records', 0):,}")
    if "kinds" in stats:
        table.add_row("kinds", ", ".join(f"{k} {v:,}" for k, v in stats["kinds"].items()))
    if "turns" in stats:
        t = stats["turns"]
        table.add_row("turns per record", f"min {t['min']}, mean {t['mean']}, max {t['max']}")
    for role, r in stats.get("roles", {}).items():
        table.add_row(f"  {role}", f"{r['turns']:,} turns, {r['mean_chars']} chars on average")
    if "with_system_prompt" in stats:
        table.add_row("system prompts", f"{stats['with_system_prompt']:,}")
        table.add_row("with tools", f"{stats['with_tools']:,}")
    if "labels" in stats:
        table.add_row("labels", ", ".join(f"{k} {v:,}" for k, v in stats["labels"].items()))
    for key, values in stats.get("meta_fields", {}).items():
        table.add_row(f"meta.{key}", ", ".join(f"{k} {v}" for k, v in values.items()))
    return Panel(table, title=title, title_align="left")
