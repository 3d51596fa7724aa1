"""Containers: every shape rows arrive in, with positions for error messages."""
from __future__ import annotations

import gzip
import json

import pytest

from studio.data import containers
from studio.data.containers import BrokenRow, RawRow


def rows_of(path, container=None):
    return list(containers.read_rows(path, container))


def test_json_array_keeps_line_of_each_row(tmp_path):
    path = tmp_path / "a.json"
    path.write_text('[\n  {"a": 1},\n\n  {"a": 2},\n  {"a": 3}\n]\n')
    rows = rows_of(path)
    assert [r.data["a"] for r in rows] == [1, 2, 3]
    assert [r.line for r in rows] == [2, 4, 5]


def test_broken_json_array_keeps_rows_before_the_break(tmp_path):
    path = tmp_path / "a.json"
    path.write_text('[\n{"a": 1},\n{"a": 2},\n{"a": oops},\n{"a": 4}\n]')
    rows = rows_of(path)
    good = [r for r in rows if isinstance(r, RawRow)]
    broken = [r for r in rows if isinstance(r, BrokenRow)]
    assert [r.data["a"] for r in good] == [1, 2]
    assert len(broken) == 1 and broken[0].line == 4 and "broken JSON" in broken[0].message


def test_jsonl_with_broken_lines_crlf_and_bad_utf8(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_bytes(b'{"a": 1}\r\n{"a": \r\n\r\n{"a": "\xff\xfe"}\r\n{"a": 4}\r\n')
    rows = rows_of(path)
    assert [(type(r).__name__, r.line) for r in rows] == [
        ("RawRow", 1), ("BrokenRow", 2), ("BrokenRow", 4), ("RawRow", 5)]
    assert "UTF-8" in rows[2].message


def test_gzip_is_detected_by_content_not_only_name(tmp_path):
    path = tmp_path / "data.jsonl.gz"
    with gzip.open(path, "wt") as fh:
        fh.write('{"a": 1}\n{"a": 2}\n')
    assert containers.sniff_container(path) == "jsonl"
    assert [r.data["a"] for r in rows_of(path)] == [1, 2]


def test_single_object_and_columnar_json(tmp_path):
    single = tmp_path / "one.json"
    single.write_text(json.dumps({"conversations": [{"from": "human", "value": "hi"}]}))
    assert len(rows_of(single)) == 1
    columnar = tmp_path / "cols.json"
    columnar.write_text(json.dumps({"instruction": ["a", "b"], "output": ["1", "2"]}))
    assert [r.data for r in rows_of(columnar)] == [{"instruction": "a", "output": "1"},
                                                   {"instruction": "b", "output": "2"}]


def test_jsonl_named_json_is_read_as_jsonl(tmp_path):
    path = tmp_path / "lines.json"
    path.write_text('{"a": 1}\n{"a": 2}\n')
    assert containers.sniff_container(path) == "jsonl"
    assert len(rows_of(path)) == 2


def test_csv_rows_and_wrong_column_count(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text('q,a\n"multi\nline",x\nonly-one\nz,w\n')
    rows = rows_of(path)
    assert rows[0].data == {"q": "multi\nline", "a": "x"} and rows[0].line == 2
    assert isinstance(rows[1], BrokenRow) and rows[1].line == 4
    assert rows[2].data == {"q": "z", "a": "w"}


@pytest.mark.parametrize("name", ["out.jsonl", "out.json", "out.csv", "out.parquet", "out.jsonl.gz"])
def test_write_then_read_back(tmp_path, name):
    data = [{"a": "x", "b": 1}, {"a": "y", "b": 2}]
    path = tmp_path / name
    count = containers.write_rows(path, iter(data), containers.container_for_output(path, "jsonl"))
    assert count == 2
    back = [r.data for r in rows_of(path)]
    if name.endswith(".csv"):
        back = [{"a": r["a"], "b": int(r["b"])} for r in back]
    assert back == data
    assert not list(tmp_path.glob(".*.tmp"))


def test_interrupted_write_leaves_previous_file(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_text('{"old": true}\n')

    def rows():
        yield {"a": 1}
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        containers.write_rows(path, rows(), "jsonl")
    assert path.read_text() == '{"old": true}\n'
    assert list(tmp_path.iterdir()) == [path]


def test_invalid_utf8_inside_a_json_array_rejects_only_that_row(tmp_path):
    path = tmp_path / "a.json"
    path.write_bytes(b'[\n{"a": "ok"},\n{"a": "bad \xff byte"},\n{"a": "fine"}\n]\n')
    rows = rows_of(path)
    assert [(type(r).__name__, r.line) for r in rows] == [("RawRow", 2), ("BrokenRow", 3), ("RawRow", 4)]
    assert "UTF-8" in rows[1].message
    assert rows[2].data == {"a": "fine"}


def test_invalid_utf8_in_a_csv_row(tmp_path):
    path = tmp_path / "a.csv"
    path.write_bytes(b"q,a\nx,\xff\ny,z\n")
    rows = rows_of(path)
    assert isinstance(rows[0], BrokenRow) and rows[0].line == 2
    assert rows[1].data == {"q": "y", "a": "z"}


def test_written_files_follow_the_umask_not_mkstemp_0600(tmp_path):
    import os
    import stat

    path = tmp_path / "out.jsonl"
    old = os.umask(0o022)
    try:
        containers.write_rows(path, iter([{"a": 1}]), "jsonl")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
