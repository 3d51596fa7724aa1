"""The columnar import stores exactly what the row path stores: the same version id (content
hash), the same rows, and the same rejects by file, line and field, for every shape the
column-wise formats read and every way a file can hold them."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from conftest import DATASETS, realdata_file

from studio.data import column_kit, columnar
from studio.data.reading import RejectedRows, parse_column_map
from studio.data.workflows import import_file
from studio.plugins import get_host
from studio.store import Workspace, file_sha256


@pytest.fixture(scope="module")
def formats():
    return get_host().formats()


@pytest.fixture
def ws(tmp_path):
    return Workspace.init(tmp_path / "ws")


@pytest.fixture
def small_parts(monkeypatch):
    # Parts of a few hundred bytes: every file spans many parts and batches, so a bad row sends
    # only its own part to the row path and batch boundaries fall inside parts.
    monkeypatch.setattr(columnar, "CHUNK_BYTES", 700)


def write_jsonl(path: Path, rows: list, newline: str = "\n") -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + newline
                            for r in rows), encoding="utf-8")
    return path


def both_ways(ws, path, formats, **kwargs):
    """Import ``path`` by rows and by columns; assert they store the same thing; return both."""
    by_rows = import_file(ws, path, formats, name="rows", use_columns=False, **kwargs)
    by_cols = import_file(ws, path, formats, name="cols", **kwargs)
    assert by_cols.version.id == by_rows.version.id
    assert by_cols.version.num_records == by_rows.version.num_records
    assert by_cols.version.kinds == by_rows.version.kinds
    assert ws.open("cols").dataset.data.table.to_pylist() == ws.open("rows").dataset.data.table.to_pylist()
    assert [r.to_dict() for r in by_cols.rejects] == [r.to_dict() for r in by_rows.rejects]
    assert by_cols.version.source == by_rows.version.source
    return by_rows, by_cols


TRICKY = ['quote " and backslash \\ and slash /', "new\nline\r\nand\ttab",
          "nul \u0000 bell \u0007 esc \u001b back \b feed \f",
          "unicode: héllo 日本語 😀 \u2028 \u00a0 \u200b", "", "  padded  ", "{\"json\": [1, 2]}"]


def alpaca_rows(n: int) -> list[dict]:
    rows = []
    for i in range(n):
        text = TRICKY[i % len(TRICKY)]
        rows.append({"instruction": f"Task {i}: {text or 'x'}", "input": text if i % 3 else "",
                     "output": f"answer {i} {text}"})
    return rows


def test_alpaca_columnar_matches_rows(ws, formats, tmp_path, small_parts):
    path = write_jsonl(tmp_path / "a.jsonl", alpaca_rows(60))
    _, by_cols = both_ways(ws, path, formats)
    assert by_cols.detection.format == "alpaca" and by_cols.columnar_rows > 0
    assert by_cols.columnar_rows == 60 and not by_cols.rejects


@pytest.mark.parametrize("part_bytes", [1 << 16, None])
def test_many_batches_and_parts(ws, formats, tmp_path, monkeypatch, part_bytes):
    # 20,000 rows in parts of ~64 KB (store batches of 8192 rows gather many parts) or in one
    # part (the batches are slices of it).
    if part_bytes:
        monkeypatch.setattr(columnar, "CHUNK_BYTES", part_bytes)
    path = write_jsonl(tmp_path / "big.jsonl", alpaca_rows(20_000))
    _, by_cols = both_ways(ws, path, formats)
    assert by_cols.columnar_rows == 20_000


@pytest.mark.parametrize("shape", ["extras", "no_input", "system", "preference", "empty_strings"])
def test_alpaca_shapes(ws, formats, tmp_path, small_parts, shape):
    rows = alpaca_rows(30)
    for i, row in enumerate(rows):
        if shape == "extras":
            row.update(id=i, source=TRICKY[i % len(TRICKY)], ok=i % 2 == 0, Zeta="z", _layout="not a hint")
        elif shape == "no_input":
            del row["input"]
        elif shape == "system":
            row["system"] = "" if i % 2 else f"Be brief {TRICKY[i % len(TRICKY)]}"
        elif shape == "preference":
            row["chosen"], row["rejected"] = row.pop("output"), f"worse {i}"
        elif shape == "empty_strings":
            row.update(input="", output="")
    path = write_jsonl(tmp_path / f"{shape}.jsonl", rows)
    _, by_cols = both_ways(ws, path, formats)
    assert by_cols.columnar_rows == 30


def test_values_columns_cannot_spell_take_the_row_path(ws, formats, tmp_path, small_parts):
    # Nulls (absent and null differ to the formats), floats and nested extras: the parts holding
    # them go through the row path, the others stay columnar, and the version is the same.
    rows = alpaca_rows(40)
    rows[3]["input"] = None
    rows[17]["score"] = 0.1
    rows[30]["tags"] = {"a": [1, 2]}
    path = write_jsonl(tmp_path / "mixed.jsonl", rows)
    _, by_cols = both_ways(ws, path, formats)
    assert 0 < by_cols.columnar_rows < 40


def test_bad_rows_are_reported_by_line_and_field(ws, formats, tmp_path, small_parts):
    rows: list = alpaca_rows(50)
    rows[5] = '{"instruction": "broken", '
    rows[12] = {"instruction": "no output"}
    rows[20] = {"instruction": 7, "output": "x"}
    rows[33] = {"instruction": " \u3000\t", "output": "only whitespace"}
    rows.insert(40, "")  # a blank line: skipped, but counted in line numbers
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    with open(path, "ab") as fh:
        fh.write(b'{"instruction": "bad byte \xff", "output": "x"}\n')
    by_rows, by_cols = both_ways(ws, path, formats)
    got = [(r.line, r.index, r.field) for r in by_cols.rejects]
    assert got == [(6, 5, None), (13, 12, "output"), (21, 20, "instruction"), (34, 33, "instruction"),
                   (52, 50, None)]
    assert by_cols.version.num_records == 46 and by_cols.version.rejects == 5
    assert by_cols.columnar_rows > 0


@pytest.mark.parametrize("layout", ["two_objects_on_a_line", "object_over_two_lines", "nested_over_two_lines",
                                    "indented", "trailing_spaces", "no_final_newline"])
def test_lines_that_are_not_one_object_each(ws, formats, tmp_path, small_parts, layout):
    # Arrow reads these as rows; the row path reads them line by line (and rejects some). The
    # columnar path must leave them to the row path: same records, same rejects.
    lines = [json.dumps(r) for r in alpaca_rows(12)]
    if layout == "two_objects_on_a_line":
        lines[4] = lines[4] + " " + lines[5]
        lines[8] = lines[8] + lines[9]
    elif layout == "object_over_two_lines":
        lines[4] = lines[4].replace(', "output"', ',\n"output"')
    elif layout == "nested_over_two_lines":
        lines[4] = lines[4].replace(', "output"', ', "extra": {"a": 1}\n, "output"')
    elif layout == "indented":
        lines[4] = "  " + lines[4]
    elif layout == "trailing_spaces":
        lines[4] = lines[4] + "  "
    path = tmp_path / "odd.jsonl"
    path.write_text("\n".join(lines) + ("" if layout == "no_final_newline" else "\n"), encoding="utf-8")
    by_rows, by_cols = both_ways(ws, path, formats)
    if layout in ("two_objects_on_a_line", "object_over_two_lines", "nested_over_two_lines"):
        assert by_cols.rejects
    else:
        assert not by_cols.rejects and by_cols.version.num_records == 12


def test_progress_and_cancel(ws, formats, tmp_path, small_parts):
    path = write_jsonl(tmp_path / "a.jsonl", alpaca_rows(40))
    seen: list[int] = []
    import_file(ws, path, formats, name="a", progress=seen.append)
    assert seen == sorted(seen) and seen[-1] == 40
    with pytest.raises(InterruptedError):
        import_file(ws, path, formats, name="b", cancelled=lambda: True)
    assert ws.dataset_names() == ["a"]


def test_strict_import_rejects_the_same_rows(ws, formats, tmp_path, small_parts):
    rows: list = alpaca_rows(30)
    rows[9] = {"instruction": "no output"}
    path = write_jsonl(tmp_path / "strict.jsonl", rows)
    seen = []
    for use_columns in (False, True):
        with pytest.raises(RejectedRows) as err:
            import_file(ws, path, formats, name="strict", strict=True, use_columns=use_columns)
        seen.append([r.to_dict() for r in err.value.rejects])
    assert seen[0] == seen[1] and len(seen[0]) == 1
    assert ws.dataset_names() == []


@pytest.mark.parametrize("container", ["gzip", "crlf", "bom"])
def test_containers(ws, formats, tmp_path, small_parts, container):
    rows = alpaca_rows(25)
    if container == "gzip":
        path = tmp_path / "a.jsonl.gz"
        with gzip.open(path, "wt", encoding="utf-8") as fh:
            fh.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    elif container == "crlf":
        path = write_jsonl(tmp_path / "a.jsonl", rows, newline="\r\n")
    else:
        path = write_jsonl(tmp_path / "a.jsonl", rows)
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    before = file_sha256(path)
    _, by_cols = both_ways(ws, path, formats)
    assert by_cols.columnar_rows == 25
    assert file_sha256(path) == before == by_cols.version.source["sha256"]  # hashed as read, never changed


def test_json_array_file_stores_the_same_version_as_jsonl(ws, formats, tmp_path):
    rows = alpaca_rows(20)
    jsonl = import_file(ws, write_jsonl(tmp_path / "a.jsonl", rows), formats, name="jsonl")
    array = tmp_path / "a.json"
    array.write_text(json.dumps(rows, ensure_ascii=False, indent=1), encoding="utf-8")
    as_array = import_file(ws, array, formats, name="array")
    assert jsonl.columnar_rows == 20 and as_array.columnar_rows == 0  # arrays take the row path
    assert as_array.version.id == jsonl.version.id


def test_column_map(ws, formats, tmp_path, small_parts):
    rows = [{"question": f"q{i} {TRICKY[i % len(TRICKY)]}", "answer": f"a{i}", "instruction": "shadowed", "id": i}
            for i in range(20)]
    path = write_jsonl(tmp_path / "mapped.jsonl", rows)
    mapping = parse_column_map(["instruction=question", "output=answer"])
    _, by_cols = both_ways(ws, path, formats, override="alpaca", column_map=mapping)
    assert by_cols.columnar_rows == 20
    assert ws.open("cols").record(0).messages[0].content.startswith("q0")


@pytest.mark.parametrize("context", ["with", "null", "blank"])
def test_dolly(ws, formats, tmp_path, small_parts, context):
    rows = []
    for i in range(30):
        row = {"instruction": f"Say {TRICKY[i % len(TRICKY)]}", "response": f"r{i}", "category": "open_qa",
               "context": TRICKY[i % len(TRICKY)] if i % 2 else ""}
        if context == "null" and i % 7 == 3:
            row["context"] = None  # null and absent differ to Dolly: these parts take the row path
        rows.append(row)
    if context == "blank":
        rows[4].update(instruction="  ", context="")
    path = write_jsonl(tmp_path / "dolly.jsonl", rows)
    _, by_cols = both_ways(ws, path, formats)
    assert by_cols.detection.format == "dolly"
    assert by_cols.columnar_rows > 0
    assert len(by_cols.rejects) == (1 if context == "blank" else 0)


@pytest.mark.parametrize("shape", ["preference", "prompt_completion", "extras", "conversational"])
def test_trl(ws, formats, tmp_path, small_parts, shape):
    rows = []
    for i in range(30):
        text = TRICKY[i % len(TRICKY)]
        if shape == "prompt_completion":
            rows.append({"prompt": f"p{i} {text}", "completion": f"c{i} {text}"})
        elif shape == "conversational":
            rows.append({"prompt": [{"role": "user", "content": f"p{i}"}],
                         "chosen": [{"role": "assistant", "content": text}],
                         "rejected": [{"role": "assistant", "content": f"r{i}"}]})
        else:
            rows.append({"prompt": f"p{i} {text}", "chosen": f"good {text}", "rejected": ""})
            if shape == "extras":
                rows[-1].update(id=i, score_chosen=i % 3 == 0, source=text)
    path = write_jsonl(tmp_path / "trl.jsonl", rows)
    _, by_cols = both_ways(ws, path, formats)
    assert by_cols.detection.format == "trl_preference"
    assert by_cols.columnar_rows == (0 if shape == "conversational" else 30)


@pytest.mark.parametrize("shape", ["bool_labels", "text_labels", "extras"])
def test_kto(ws, formats, tmp_path, small_parts, shape):
    rows = []
    for i in range(30):
        text = TRICKY[i % len(TRICKY)]
        label = i % 3 != 0
        rows.append({"prompt": f"p{i} {text}", "completion": f"c{i} {text}",
                     "label": str(label).lower() if shape == "text_labels" else label})
        if shape == "extras":
            rows[-1].update(id=i, note=text)
    path = write_jsonl(tmp_path / "kto.jsonl", rows)
    _, by_cols = both_ways(ws, path, formats)
    assert by_cols.detection.format == "kto"
    assert by_cols.version.kinds == {"unpaired": 30}
    assert by_cols.columnar_rows == (0 if shape == "text_labels" else 30)


def test_openai_chat_in_one_part(ws, formats, tmp_path):
    # 10,000 chats in one part: the stored batches are slices of the flattened messages.
    rows = [{"messages": [{"role": "system", "content": "s"}] * (i % 3)
             + [{"role": "user", "content": f"q{i} {TRICKY[i % len(TRICKY)]}"}, {"role": "assistant", "content": "a"}]}
            for i in range(10_000)]
    _, by_cols = both_ways(ws, write_jsonl(tmp_path / "chat.jsonl", rows), formats)
    assert by_cols.columnar_rows == 10_000


@pytest.mark.parametrize("shape", ["plain", "extras", "developer_role", "weights", "bad_role", "empty"])
def test_openai_chat(ws, formats, tmp_path, small_parts, shape):
    rows = []
    for i in range(30):
        text = TRICKY[i % len(TRICKY)]
        msgs = [{"role": "user", "content": f"q{i} {text}"}, {"role": "assistant", "content": text}]
        if i % 4 == 0:
            msgs.insert(0, {"role": "system", "content": "be brief"})
        rows.append({"messages": msgs})
        if shape == "extras":
            rows[-1].update(id=f"r{i}", n=i)
    if shape == "developer_role":
        rows[7]["messages"][0]["role"] = "developer"
    elif shape == "weights":
        rows[7]["messages"][-1]["weight"] = 0
    elif shape == "bad_role":
        rows[7]["messages"][0]["role"] = "wizard"
    elif shape == "empty":
        rows[7]["messages"] = []
    path = write_jsonl(tmp_path / "chat.jsonl", rows)
    _, by_cols = both_ways(ws, path, formats)
    assert by_cols.detection.format == "openai"
    assert 0 < by_cols.columnar_rows <= 30
    assert len(by_cols.rejects) == (1 if shape in ("bad_role", "empty") else 0)


@pytest.mark.parametrize("shape", ["plain", "system_column", "extras", "other_spelling", "bad_role", "big"])
def test_sharegpt(ws, formats, tmp_path, small_parts, monkeypatch, shape):
    n = 9000 if shape == "big" else 30
    if shape == "big":
        monkeypatch.setattr(columnar, "CHUNK_BYTES", 1 << 22)  # one part, batches sliced from it
    rows = []
    for i in range(n):
        text = TRICKY[i % len(TRICKY)]
        conv = [{"from": "human", "value": f"q{i} {text}"}, {"from": "gpt", "value": text}]
        if i % 5 == 0:
            conv = [{"from": "system", "value": "be kind"}] + conv + [{"from": "human", "value": "more"},
                                                                    {"from": "gpt", "value": "ok"}]
        rows.append({"conversations": conv})
        if shape in ("system_column", "big"):
            rows[-1]["system"] = "" if i % 3 else f"You are {text}"
        if shape == "extras":
            rows[-1].update(id=i, lang="en")
    if shape == "other_spelling":
        rows[7]["conversations"][0]["from"] = "user"
    elif shape == "bad_role":
        rows[7]["conversations"][0]["from"] = "wizard"
    path = write_jsonl(tmp_path / "sg.jsonl", rows)
    _, by_cols = both_ways(ws, path, formats)
    assert by_cols.detection.format == "sharegpt"
    assert 0 < by_cols.columnar_rows <= n
    assert len(by_cols.rejects) == (1 if shape == "bad_role" else 0)


def test_formats_without_columns_use_the_row_path(ws, formats, tmp_path):
    rows = [{"question": f"q{i}", "response_j": "good", "response_k": "bad"} for i in range(5)]
    path = write_jsonl(tmp_path / "stack.jsonl", rows)
    result = import_file(ws, path, formats, name="stack")
    assert result.detection.format == "trl_preference"
    assert result.columnar_rows == 0 and result.version.num_records == 5


def test_json_text_spells_like_json_dumps():
    import pyarrow as pa

    values = TRICKY + ["".join(chr(c) for c in range(0x20)) + "\u007f\ud7ff\ue000"]
    got = column_kit.json_text(pa.array(values)).to_pylist()
    assert got == [json.dumps(v, ensure_ascii=False) for v in values]


SAMPLES = sorted(DATASETS.glob("*.jsonl*"))


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_every_sample_dataset_stores_the_same_version(ws, formats, path, small_parts):
    # The noisy Dolly sample mixes bad rows in; the other formats still take the row path.
    both_ways(ws, path, formats)


@pytest.mark.parametrize("relative", [
    "alpaca/llamafactory_alpaca_en_demo.json", "alpaca/llamafactory_alpaca_zh_demo.json",
    "alpaca/alpaca_data_first200.json", "alpaca/torchtune_alpaca_tiny.json", "alpaca/llamafactory_identity.json",
    "sharegpt/fastchat_dummy_conversation.json", "sharegpt/llamafactory_glaive_toolcall_en_demo.json"])
def test_real_files_as_jsonl(ws, formats, tmp_path, relative):
    rows = json.loads(realdata_file(relative).read_text(encoding="utf-8"))
    path = write_jsonl(tmp_path / "real.jsonl", rows)
    _, by_cols = both_ways(ws, path, formats)
    assert by_cols.detection.format == relative.split("/")[0]


@pytest.mark.parametrize("relative", ["openai_chat/openai_cookbook_toy_chat_fine_tuning.jsonl",
                                      "openai_chat/pirate_training_set.jsonl"])
def test_real_jsonl_files(ws, formats, relative):
    both_ways(ws, realdata_file(relative), formats)


def test_the_stored_file_is_the_stream_arrow_writes(ws, formats, tmp_path, monkeypatch):
    # The store writes the IPC stream message by message; it must be the stream Arrow's own
    # writer makes of the same batches.
    import pyarrow as pa

    monkeypatch.setattr(columnar, "CHUNK_BYTES", 1 << 15)
    result = import_file(ws, write_jsonl(tmp_path / "a.jsonl", alpaca_rows(9000)), formats, name="a")
    stored = (ws.version_dir("a") / "data.arrow").read_bytes()
    table = pa.ipc.open_stream(stored).read_all()
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        for batch in table.to_batches():
            writer.write_batch(batch)
    assert [b.num_rows for b in table.to_batches()] == [8192, 808]
    assert sink.getvalue().to_pybytes() == stored and result.version.num_records == 9000
