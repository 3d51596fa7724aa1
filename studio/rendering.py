"""Rich renderables for records, statistics, versions and plugins.

Plain functions from core objects to Rich objects, so they are testable without running the app
and the screens stay about layout and keys. Record text is always wrapped in ``Text`` (never
parsed as markup): dataset content is untrusted and full of square brackets.
"""
from __future__ import annotations

import json
import time
from typing import Any, Iterable

from rich import box
from rich.columns import Columns
from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from studio.records import Record, Turn

ROLE_STYLES = {
    "system": "magenta",
    "user": "cyan",
    "assistant": "green",
    "tool_call": "yellow",
    "tool": "bright_blue",
}
KIND_TAGS = {"conversation": ("conv", "cyan"), "preference": ("pref", "magenta"), "unpaired": ("kto", "yellow")}
# A turn longer than this is cut in the viewer: Rich wraps the whole text on every render.
MAX_TURN_CHARS = 20_000


def role_style(role: str) -> str:
    return ROLE_STYLES.get(role, "white")


def short_id(version_id: str | None) -> str:
    return (version_id or "")[:8]


def format_time(stamp: float | None) -> str:
    if not stamp:
        return "—"
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(stamp))


def kinds_text(kinds: dict[str, int] | None) -> str:
    if not kinds:
        return "empty"
    return " · ".join(f"{kind} {count:,}" for kind, count in sorted(kinds.items()))


# --- records ---------------------------------------------------------------------------------


def _turn_body(turn: Turn, highlight: str | None = None) -> Text:
    body = _plain_body(turn)
    if highlight:
        body.highlight_words([highlight], style="bold black on yellow", case_sensitive=False)
    return body


def _plain_body(turn: Turn) -> Text:
    content = turn.content or ""
    if turn.role == "tool_call" or (turn.role == "tool" and content[:1] in "{[" and len(content) < MAX_TURN_CHARS):
        try:
            content = json.dumps(json.loads(content), indent=2, ensure_ascii=False)
        except (json.JSONDecodeError, TypeError):
            pass
    if len(content) > MAX_TURN_CHARS:
        hidden = len(content) - MAX_TURN_CHARS
        body = Text(content[:MAX_TURN_CHARS])
        body.append(f"\n… {hidden:,} more characters not shown", style="dim italic")
        return body
    if not content:
        return Text("(empty)", style="dim italic")
    return Text(content)


def render_turn(turn: Turn, highlight: str | None = None) -> Panel:
    style = role_style(turn.role)
    title = Text(f" {turn.role} ", style=f"bold {style}")
    if turn.weight is not None:
        title.append(f" weight {turn.weight:g} ", style="dim")
    return Panel(_turn_body(turn, highlight), title=title, title_align="left", border_style=style,
                 box=box.ROUNDED, padding=(0, 1))


def render_turns(turns: Iterable[Turn], highlight: str | None = None) -> list[RenderableType]:
    return [render_turn(t, highlight) for t in turns]


def _tool_names(tools: str) -> list[str]:
    try:
        data = json.loads(tools)
    except json.JSONDecodeError:
        return []
    if isinstance(data, dict):
        data = [data]
    names = []
    for item in data if isinstance(data, list) else []:
        if not isinstance(item, dict):
            continue
        fn = item.get("function") if isinstance(item.get("function"), dict) else item
        name = fn.get("name")
        if name:
            desc = fn.get("description") or ""
            names.append(f"{name}: {desc}" if desc else str(name))
    return names


def render_tools(tools: str) -> Panel:
    names = _tool_names(tools)
    body = Text("\n".join(f"• {n}" for n in names)) if names else Text(tools[:2000])
    return Panel(body, title=Text(" tools offered ", style="bold yellow"), title_align="left",
                 border_style="yellow", box=box.SQUARE, padding=(0, 1))


def render_meta(meta: dict[str, Any]) -> Text:
    text = Text("meta  ", style="dim bold")
    parts = []
    for key, value in sorted(meta.items()):
        if key.startswith("_"):  # a format's private layout hint, not data
            continue
        shown = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        if len(shown) > 80:
            shown = shown[:80] + "…"
        parts.append((key, shown))
    for i, (key, shown) in enumerate(parts):
        if i:
            text.append("  ·  ", style="dim")
        text.append(f"{key}: ", style="dim")
        text.append(shown)
    return text


def render_label(label: bool) -> Text:
    if label:
        return Text(" ✓ label: desirable (true) ", style="bold black on green")
    return Text(" ✗ label: undesirable (false) ", style="bold white on red")


def render_record(record: Record, highlight: str | None = None) -> RenderableType:
    """One record as chat turns; a preference pair as prompt above, chosen | rejected below.
    ``highlight`` marks a search query in the turns."""
    parts: list[RenderableType] = []
    if record.tools:
        parts.append(render_tools(record.tools))
    if record.kind == "preference":
        parts.append(Text("prompt", style="bold"))
        parts.extend(render_turns(record.messages, highlight) or [Text("(no prompt turns)", style="dim italic")])
        pair = Table.grid(expand=True, padding=(0, 1))
        pair.add_column(ratio=1)
        pair.add_column(ratio=1)
        pair.add_row(Text("✓ chosen", style="bold green"), Text("✗ rejected", style="bold red"))
        pair.add_row(Group(*render_turns(record.chosen or [], highlight)) if record.chosen else Text("(none)", style="dim"),
                     Group(*render_turns(record.rejected or [], highlight)) if record.rejected else Text("(none)", style="dim"))
        parts.append(pair)
    else:
        parts.extend(render_turns(record.messages, highlight) or [Text("(no turns)", style="dim italic")])
    if record.label is not None:
        parts.append(render_label(record.label))
    if any(not key.startswith("_") for key in record.meta):
        parts.append(render_meta(record.meta))
    return Group(*parts)


def _one_line(text: str, limit: int = 300) -> str:
    # Only the start is ever visible; splitting a 100 kB turn on every key press would not be.
    return " ".join((text or "")[:limit].split())


def record_preview(record: Record) -> str:
    """The first user prompt (or any first turn) on one line, for the record list."""
    for turn in record.messages:
        if turn.role == "user":
            return _one_line(turn.content)
    if record.messages:
        return _one_line(record.messages[0].content)
    side = record.chosen or record.rejected
    return _one_line(side[0].content) if side else ""


def kind_tag(record: Record) -> tuple[str, str]:
    tag, style = KIND_TAGS.get(record.kind, (record.kind[:4], "white"))
    if record.kind == "unpaired":
        tag = "kto+" if record.label else "kto-"
        style = "green" if record.label else "red"
    return tag, style


# --- statistics ------------------------------------------------------------------------------


def _pct(part: int, whole: int) -> str:
    return f"{part / whole:.1%}" if whole else "—"


def _table(title: str, *columns: str) -> Table:
    table = Table(title=title, title_justify="left", title_style="bold", box=box.SIMPLE_HEAD,
                  show_edge=False, pad_edge=False, expand=False, min_width=max(30, len(title)))
    for i, column in enumerate(columns):
        table.add_column(column, justify="left" if i == 0 else "right")
    return table


def render_stats(stats: dict[str, Any]) -> RenderableType:
    n = int(stats.get("records", 0))
    parts: list[RenderableType] = []
    summary = _table("Overview", "", "value", "share")
    summary.add_row("records", f"{n:,}", "")
    if "with_system_prompt" in stats:
        summary.add_row("with a system prompt", f"{stats['with_system_prompt']:,}", _pct(stats["with_system_prompt"], n))
    if "with_tools" in stats:
        summary.add_row("with tools", f"{stats['with_tools']:,}", _pct(stats["with_tools"], n))
    parts.append(summary)
    if stats.get("kinds"):
        kinds = _table("Kinds", "kind", "records", "share")
        for kind, count in sorted(stats["kinds"].items(), key=lambda kv: -kv[1]):
            kinds.add_row(kind, f"{count:,}", _pct(count, n))
        parts.append(kinds)
    if stats.get("turns"):
        turns = _table("Turns per record", "min", "mean", "max")
        t = stats["turns"]
        turns.columns[0].justify = "right"
        turns.add_row(str(t.get("min")), str(t.get("mean")), str(t.get("max")))
        parts.append(turns)
    if stats.get("roles"):
        roles = _table("Roles", "role", "turns", "mean chars")
        for role, data in stats["roles"].items():
            side, _, plain = role.rpartition(":")
            label = Text(role, style=role_style(plain))
            roles.add_row(label, f"{data.get('turns', 0):,}", f"{data.get('mean_chars', 0):,}")
        parts.append(roles)
    if stats.get("labels"):
        labels = _table("KTO labels", "label", "records", "share")
        for label, count in sorted(stats["labels"].items()):
            labels.add_row(Text(label, style="green" if label == "true" else "red"), f"{count:,}", _pct(count, n))
        parts.append(labels)
    for field, values in (stats.get("meta_fields") or {}).items():
        table = _table(f"meta: {field} (first 20,000 records)", "value", "records")
        for value, count in values.items():
            table.add_row(Text(value), f"{count:,}")
        parts.append(table)
    known = {"records", "kinds", "turns", "roles", "with_system_prompt", "with_tools", "labels", "meta_fields"}
    extra = {k: v for k, v in stats.items() if k not in known}
    if extra:
        other = _table("Other", "", "value")
        for key, value in extra.items():
            other.add_row(key, Text(json.dumps(value, ensure_ascii=False, default=str)))
        parts.append(other)
    return Columns(parts, padding=(1, 4))


# --- versions --------------------------------------------------------------------------------


def render_version_detail(info, rejects: list[dict[str, Any]] | None = None, head: bool = False) -> RenderableType:
    """Lineage of one version: what it came from (file or parent + operation) and its rejects."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="dim", no_wrap=True)
    grid.add_column()
    grid.add_row("version", Text(info.id + ("  (head)" if head else ""), style="bold"))
    grid.add_row("created", format_time(info.created))
    grid.add_row("records", f"{info.num_records:,}  ({kinds_text(info.kinds)})")
    grid.add_row("parent", short_id(info.parent) or "— (first version)")
    operation = dict(info.operation or {})
    op_name = operation.pop("name", "—")
    operation.pop("at", None)
    op_text = op_name + (" " + json.dumps(operation, ensure_ascii=False, default=str) if operation else "")
    grid.add_row("operation", Text(op_text))
    source = info.source or {}
    if source:
        grid.add_row("source", Text(str(source.get("path", "—"))))
        if source.get("format"):
            grid.add_row("format", Text(f"{source['format']} ({source.get('container', '?')})"))
        if source.get("reason"):
            grid.add_row("detected", Text(str(source["reason"])))
        if source.get("sha256"):
            grid.add_row("sha256", str(source["sha256"])[:16] + "…")
    grid.add_row("rejects", f"{info.rejects or 0:,}")
    parts: list[RenderableType] = [grid]
    if rejects:
        lines = Text()
        for r in rejects:
            lines.append(reject_line(r) + "\n")
        if info.rejects and info.rejects > len(rejects):
            lines.append(f"… and {info.rejects - len(rejects):,} more\n", style="dim")
        parts.append(Panel(lines, title="rejected rows", title_align="left", border_style="red", box=box.SQUARE))
    return Group(*parts)


def reject_where(file: str | None, line: int | None, index: int | None) -> str:
    from pathlib import Path

    name = Path(file).name if file else "?"
    return f"{name}:{line}" if line is not None else f"{name}[row {index}]"


def reject_line(r: dict[str, Any]) -> str:
    where = reject_where(r.get("file"), r.get("line"), r.get("index"))
    field = f" {r['field']}:" if r.get("field") else ""
    return f"{where}{field} {r.get('message', '')}"


# --- curation and review ------------------------------------------------------------------------


def render_titled_record(title: Text, record: Record | None, empty: str = "(not available)") -> RenderableType:
    body = render_record(record) if record is not None else Text(empty, style="dim italic")
    return Group(title, body)


def render_side_by_side(left_title: Text, left: Record | None, right_title: Text, right: Record | None,
                        right_empty: str = "(not available)") -> Table:
    """Two records as columns: a removed duplicate | its kept original, a row before | after."""
    grid = Table.grid(expand=True, padding=(0, 1))
    grid.add_column(ratio=1)
    grid.add_column(ratio=1)
    grid.add_row(render_titled_record(left_title, left), render_titled_record(right_title, right, right_empty))
    return grid


def render_side_entry_header(entry: dict[str, Any], cluster: int | None = None) -> Text:
    """What a pipeline (or review) did to one row: op, action, reason, similarity and detail."""
    action = entry.get("action") or "removed"
    text = Text()
    text.append(f" {action} ", style="bold white on red" if action == "removed" else "bold black on yellow")
    text.append(f" {entry.get('reason') or '—'}", style="bold")
    step = entry.get("step")
    text.append(f"  by {entry.get('op') or '?'}" + (f" (step {step})" if isinstance(step, int) and step >= 0 else ""),
                style="dim")
    facts = []
    if entry.get("similarity") is not None:
        facts.append((f"similarity {entry['similarity']:.3f}", "magenta"))
    if cluster:
        facts.append((f"cluster: 1 kept + {cluster:,} removed", "cyan"))
    if facts:
        text.append("\n")
        for i, (fact, style) in enumerate(facts):
            if i:
                text.append("  ·  ", style="dim")
            text.append(fact, style=style)
    try:
        detail = json.loads(entry.get("detail") or "{}")
    except (json.JSONDecodeError, TypeError):
        detail = {"detail": entry.get("detail")}
    if detail:
        shown = json.dumps(detail, ensure_ascii=False, default=str)
        text.append("\n")
        text.append(shown[:400] + ("…" if len(shown) > 400 else ""), style="dim")
    return text


def render_step_examples(steps: Iterable[Any], limit: int = 5) -> RenderableType:
    """A preview's sample of removals and changes per step (StepReport.examples)."""
    parts: list[RenderableType] = []
    for step in steps:
        examples = list(getattr(step, "examples", []) or [])
        title = Text(f"{step.index}. {step.op}", style="bold", no_wrap=True, overflow="ellipsis")
        if step.by_reason:
            title.append("  " + " · ".join(f"{reason} {count:,}" for reason, count in step.by_reason.items()),
                         style="dim")
        parts.append(title)
        if not examples:
            parts.append(Text("   nothing removed or changed in the sample", style="dim italic"))
        for example in examples[:limit]:
            line = Text("   ", no_wrap=True, overflow="ellipsis")
            removed = example.get("action") == "removed"
            line.append("✗ " if removed else "✎ ", style="red" if removed else "yellow")
            line.append(f"#{example.get('source_index')} ", style="dim")
            line.append(f"{example.get('reason')}: ", style="bold")
            line.append(record_preview(Record.from_row(example))[:120])
            if example.get("duplicate_of") is not None:
                line.append(f"  = #{example['duplicate_of']}", style="magenta")
            parts.append(line)
        if len(examples) > limit:
            parts.append(Text(f"   … {len(examples) - limit} more in the sample", style="dim"))
    return Group(*parts) if parts else Text("Run a preview to see what each step removes.", style="dim")


def review_mark(flagged: bool, state: Any) -> Text:
    """Two cells of marks for the review list: flag, then what the review does to the record."""
    text = Text(no_wrap=True, end="")
    text.append("⚑" if flagged else " ", style="yellow")
    if state is None:
        text.append(" ")
    elif state.removed:
        text.append("✗", style="bold red")
    elif state.edit is not None:
        text.append("✎", style="cyan")
    elif state.swapped:
        text.append("⇄", style="magenta")
    elif state.verdict == "accepted":
        text.append("✓", style="green")
    else:
        text.append(" ")
    return text


def render_review_state(state: Any, flagged: bool, flag_note: str, committed_flag: bool = False) -> Text:
    """One line: what the review will do to the current record."""
    parts: list[tuple[str, str]] = []
    if flagged:
        parts.append((f"⚑ flagged{': ' + flag_note if flag_note else ''}{' (committed)' if committed_flag else ''}",
                      "bold yellow"))
    if state is not None:
        if state.flagged is False:
            parts.append(("flag removed", "dim"))
        if state.deleted:
            parts.append(("✗ deleted", "bold red"))
        if state.verdict == "rejected":
            parts.append(("✗ rejected", "bold red"))
        elif state.verdict == "accepted":
            parts.append(("✓ accepted", "bold green"))
        if state.edit is not None:
            parts.append(("✎ edited", "bold cyan"))
        elif state.swapped:
            parts.append(("⇄ chosen and rejected swapped", "bold magenta"))
        if state.note:
            parts.append((f"note: {state.note}", "dim"))
    if not parts:
        return Text("not reviewed", style="dim")
    text = Text()
    for i, (label, style) in enumerate(parts):
        if i:
            text.append("  ·  ", style="dim")
        text.append(label, style=style)
    return text


def review_counts_text(counts: dict[str, int]) -> Text:
    shown = [(k, v) for k, v in counts.items() if v]
    if not shown:
        return Text("nothing pending", style="dim")
    text = Text()
    for i, (key, value) in enumerate(shown):
        if i:
            text.append(" · ", style="dim")
        text.append(f"{key} {value:,}")
    return text
