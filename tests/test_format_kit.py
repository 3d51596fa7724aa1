"""studio.data.format_kit is the one module a format author needs: the worked example in its
docstring is a working plugin, a format built from the kit alone reads, writes and round-trips
through the host, every built-in format uses nothing else, and every helper is documented."""
from __future__ import annotations

import ast
import importlib.util
import inspect
import json
import textwrap
import types
from pathlib import Path

import pytest

from studio.data import format_kit
from studio.data.convert import read_file, write_file
from studio.data.format_kit import (
    DatasetFormat, Record, Turn, Written, add_meta, canonical, extra_fields, extra_keys_note, layout_of, make_meta,
    match_or_none, pct, read_label, read_messages, share, tools_text, tools_value, unheld, write_label, write_messages,
)
from studio.hookspecs import hookimpl
from studio.plugins import PluginHost

ROOT = Path(__file__).resolve().parents[1]
FORMAT_PLUGINS = sorted(ROOT.glob("plugins/studio_format_*/*.py")) + [
    ROOT / "examples" / "studio-chatml" / "studio_chatml" / "__init__.py"]
ALLOWED = {"studio.data.format_kit", "studio.hookspecs"}


def documented_example() -> str:
    """The indented code block that follows the first ``::`` of the module docstring."""
    doc = format_kit.__doc__
    lines = doc.split("::\n", 1)[1].splitlines()
    block = []
    for line in lines:
        if line.strip() and not line.startswith("    "):
            break
        block.append(line)
    return textwrap.dedent("\n".join(block)).strip() + "\n"


def studio_imports(source: str, own: str = "") -> set[str]:
    """The studio (and plugin) modules a source imports, leaving out the plugin's own package."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {n for n in names if n.split(".")[0].startswith("studio") and n.split(".")[0] != own}


def load_module(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def qa_host(tmp_path):
    """The built-in formats plus the docstring's example, installed the way a third party's
    module is: its own file, imported and registered through the plugin host."""
    source = tmp_path / "studio_qa_example.py"
    source.write_text(documented_example(), encoding="utf-8")
    host = PluginHost()
    info = host.add_plugin(load_module(source, "studio_qa_example"), "qa_example")
    assert info.status == "ok", info.error
    assert host.owner("format", "qa") == "qa_example"
    return host


def test_the_documented_example_uses_only_the_kit_and_hookimpl():
    example = documented_example()
    assert "class QAFormat(DatasetFormat)" in example and "def register_formats(register)" in example
    assert studio_imports(example) == ALLOWED


def test_the_documented_example_detects_reads_and_writes_through_the_host(qa_host, tmp_path):
    formats = qa_host.formats()
    good = [{"q": "What is 2+2?", "a": "4", "id": 7},
            {"q": "Capital of France?", "a": "Paris", "id": 8, "topic": "geography"},
            {"q": "Colour of the sky?", "a": "Blue.", "id": 9}]
    path = write_jsonl(tmp_path / "quiz.jsonl", good[:2] + [{"q": "Broken?", "a": 3, "id": 10}, good[2]])

    result = read_file(path, formats)
    assert result.detection.format == "qa"
    assert "75% of sampled rows have q and a strings" in result.detection.reason
    assert [(r.line, r.field, r.message) for r in result.rejects] == [(3, "a", "expected a string, got int")]
    assert result.records[1].messages == [Turn("user", "Capital of France?"), Turn("assistant", "Paris")]
    assert result.records[1].meta == {"id": 8, "topic": "geography"}

    out = tmp_path / "quiz-again.json"
    report = write_file(result.records, formats["qa"], out)
    assert (report.written, report.skipped, dict(report.dropped)) == (3, 0, {})
    assert json.loads(out.read_text(encoding="utf-8")) == good

    # Through another format and back: nothing is lost on the way.
    openai = tmp_path / "quiz.openai.jsonl"
    write_file(result.records, formats["openai"], openai)
    back = read_file(openai, formats).records
    assert [canonical(r) for r in back] == [canonical(r) for r in result.records]


def test_the_documented_example_reports_what_it_cannot_hold(qa_host):
    qa = qa_host.formats()["qa"]
    with_system = Record([Turn("system", "Be brief."), Turn("user", "Hi?"), Turn("assistant", "Hello.")],
                         tools='[{"name": "f"}]', meta={"id": 1})
    written = qa.write(with_system)
    assert written.row == {"q": "Hi?", "a": "Hello.", "id": 1}
    assert written.dropped == ["system prompt", "tools"]
    pair = Record([Turn("user", "Hi?")], chosen=[Turn("assistant", "a")], rejected=[Turn("assistant", "b")])
    assert qa.write(pair) == Written(None, ["records other than one question and its answer"])


class FeedbackFormat(DatasetFormat):
    """A format a third party might write with the kit's message-list, tool and label helpers:
    ``{"chat": [role/content messages], "good": true|false|"1"|"0", "tools": ..., ...}``."""

    name = "feedback"
    title = "Chat feedback"
    summary = "a chat with a good/bad flag"

    def match(self, rows):
        score = share(rows, lambda r: isinstance(r.get("chat"), list) and "good" in r)
        return match_or_none(score, f"{pct(score)} of sampled rows have chat + good"
                             + extra_keys_note(rows, {"chat", "good", "tools"}))

    def read(self, row):
        turns, chat_hint = read_messages(row.get("chat"), "chat")
        label, label_raw = read_label(row.get("good"), "good")
        tools, tools_raw = tools_text(row.get("tools"))
        hint = {"chat": chat_hint, "label": label_raw, "tools": tools_raw}
        meta = make_meta(extra_fields(row, {"chat", "good", "tools"}), self.name, hint)
        return Record(turns, label=label, tools=tools, meta=meta)

    def write(self, record):
        if record.kind != "unpaired":
            return Written(None, [f"{record.kind} records (feedback needs a good/bad flag)"])
        hint = layout_of(record, self.name)
        row = {"chat": write_messages(record.messages, hint.get("chat")),
               "good": write_label(record.label, hint.get("label"))}
        tools = tools_value(record.tools, hint.get("tools"), as_text=True)
        if tools is not None:
            row["tools"] = tools
        return Written(add_meta(row, record), unheld(record, tools=True, weights=True, label=True))


TOOL_ROW = {
    "chat": [
        {"role": "developer", "content": "Use tools."},
        {"role": "user", "content": [{"type": "text", "text": "Weather in "}, {"type": "text", "text": "Oslo?"}]},
        {"role": "assistant", "content": "Checking.",
         "tool_calls": [{"id": "c1", "type": "function",
                         "function": {"name": "weather", "arguments": "{\"city\": \"Oslo\"}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "{\"temp\": 3}"},
        {"role": "assistant", "content": "3 °C.", "weight": 1},
    ],
    "good": "1",
    "tools": "[{\"name\": \"weather\"}]",
    "session": "s-42",
}


def test_a_format_built_on_the_message_helpers_round_trips_exactly():
    fmt = FeedbackFormat()
    record = fmt.read(TOOL_ROW)
    assert [t.role for t in record.messages] == ["system", "user", "assistant", "tool_call", "tool", "assistant"]
    assert record.messages[1].content == "Weather in Oslo?"
    assert json.loads(record.messages[3].content) == {"name": "weather", "arguments": {"city": "Oslo"}, "id": "c1"}
    assert record.label is True and record.kind == "unpaired"
    assert json.loads(record.tools) == [{"name": "weather"}]
    # The layout hint gives back every source spelling: developer role, content parts, "1", tools text.
    written = fmt.write(record)
    assert written.row == TOOL_ROW and written.dropped == []
    # An edited record gets the default spelling instead of a stale hint.
    record.label = False
    assert fmt.write(record).row["good"] is False


def test_a_format_built_on_the_kit_hands_records_to_the_built_ins(tmp_path):
    host = PluginHost()
    host.add_plugin(types.SimpleNamespace(register_formats=register_formats), "feedback")
    formats = host.formats()
    path = write_jsonl(tmp_path / "feedback.jsonl", [TOOL_ROW, {**TOOL_ROW, "good": False, "session": "s-43"},
                                                     {"chat": [{"role": "wizard", "content": "?"}], "good": True}])
    result = read_file(path, formats)
    assert result.detection.format == "feedback" and "extra keys kept as metadata: session" in result.detection.reason
    assert [(r.line, r.field) for r in result.rejects] == [(3, "chat[0].role")]
    kto = tmp_path / "feedback.kto.jsonl"
    write_file(result.records, formats["kto"], kto)
    again = read_file(kto, formats)
    assert again.detection.format == "kto"
    assert [canonical(r) for r in again.records] == [canonical(r) for r in result.records]


@hookimpl
def register_formats(register):
    register(FeedbackFormat())


@pytest.mark.parametrize("path", FORMAT_PLUGINS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_format_plugin_imports_only_the_kit_from_the_studio(path):
    assert studio_imports(path.read_text(encoding="utf-8"), own=path.parent.name) <= ALLOWED


def test_every_helper_of_the_kit_is_listed_in_its_docstring():
    helpers = [name for name in format_kit.__all__
               if inspect.isfunction(getattr(format_kit, name))
               and getattr(format_kit, name).__module__ == format_kit.__name__]
    assert len(helpers) > 30
    missing = [name for name in helpers if f":func:`{name}`" not in format_kit.__doc__]
    assert missing == []
