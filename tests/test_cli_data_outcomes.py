"""Honest outcomes of `studio data export / convert / import`, through the real CLI entry:
a write that skips every record writes no file and fails with the reasons and the formats that
could take the records; `--strict` stores and writes nothing when any row is rejected, still
reports every reject (and writes `--rejects FILE`), and exits 3."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from conftest import DATASETS
from studio.cli import main
from studio.store import Workspace

KTO = DATASETS / "kto.jsonl"
KTO_RECORDS = 12
KTO_SKIP_REASON = "unpaired (labelled) records: write them with the kto format"

GOOD = {"instruction": "Name a colour.", "input": "", "output": "Teal."}
MALFORMED = [json.dumps(GOOD), '{"instruction": "x", "output": 3}', "not json",
             json.dumps({"instruction": "Sum", "input": "2 and 3", "output": "5"})]


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error:")]


@pytest.fixture
def ws(tmp_path, capsys) -> Path:
    folder = tmp_path / "ws"
    assert main(["init", str(folder)]) == 0
    capsys.readouterr()
    return folder


@pytest.fixture
def malformed(tmp_path) -> Path:
    path = tmp_path / "malformed.jsonl"
    path.write_text("\n".join(MALFORMED) + "\n", encoding="utf-8")
    return path


def assert_nothing_written_error(err: str, out: Path) -> None:
    (line,) = error_lines(err)
    assert f"nothing written to {out}" in line
    assert f"trl_preference skipped all {KTO_RECORDS} record(s)" in line
    assert KTO_SKIP_REASON in line
    holders = line.split("formats that hold them: ", 1)[1]
    assert {"kto", "openai", "sharegpt"} <= {name.strip(" .") for name in holders.split(",")}
    assert "trl_preference" not in holders and "dolly" not in holders


# --- export / convert that skip every record ---------------------------------------------------


def test_export_that_skips_every_record_writes_no_file_and_fails(capsys, ws, tmp_path):
    code, out, err = run(capsys, "data", "import", KTO, "--name", "kto", "-w", ws, "--json")
    assert code == 0 and json.loads(out)["records"] == KTO_RECORDS

    target = tmp_path / "exports" / "kto-as-trl.jsonl"
    code, out, err = run(capsys, "data", "export", "kto", "--to", "trl_preference", "-o", target, "-w", ws)
    assert code == 1
    assert_nothing_written_error(err, target)
    assert not target.exists()
    assert not list(tmp_path.rglob("*.tmp"))

    # A file already at that path is left exactly as it was.
    existing = tmp_path / "existing.jsonl"
    existing.write_text("keep me\n", encoding="utf-8")
    code, _, err = run(capsys, "data", "export", "kto", "--to", "trl_preference", "-o", existing, "-w", ws)
    assert code == 1 and error_lines(err)
    assert existing.read_text(encoding="utf-8") == "keep me\n"

    # The formats it names do take the records.
    good = tmp_path / "kto-again.jsonl"
    code, out, _ = run(capsys, "data", "export", "kto", "--to", "kto", "-o", good, "-w", ws, "--json")
    assert code == 0 and json.loads(out)["written"] == KTO_RECORDS
    assert len(good.read_text(encoding="utf-8").splitlines()) == KTO_RECORDS


def test_convert_that_skips_every_record_writes_no_file_and_fails(capsys, tmp_path):
    before = digest(KTO)
    target = tmp_path / "kto-as-trl.jsonl"
    code, _, err = run(capsys, "data", "convert", KTO, "--to", "trl_preference", "-o", target)
    assert code == 1
    assert_nothing_written_error(err, target)
    assert not target.exists()
    assert digest(KTO) == before


def test_convert_of_a_file_whose_rows_are_all_rejected_writes_no_file(capsys, tmp_path):
    src = tmp_path / "all-bad.jsonl"
    src.write_text('{"instruction": "x", "output": 3}\n{"instruction": "y", "output": [1]}\n', encoding="utf-8")
    target = tmp_path / "out.jsonl"
    rejects = tmp_path / "rejects.jsonl"
    code, _, err = run(capsys, "data", "convert", src, "--format", "alpaca", "--to", "openai", "-o", target,
                       "--rejects", rejects)
    assert code == 1
    (line,) = error_lines(err)
    assert f"nothing written to {target}: there are no records to write; 2 row(s) of the input rejected" in line
    assert not target.exists()
    assert [json.loads(r)["line"] for r in rejects.read_text(encoding="utf-8").splitlines()] == [1, 2]


# --- strict import ------------------------------------------------------------------------------


def test_strict_import_with_rejects_stores_nothing_and_exits_3(capsys, ws, malformed, tmp_path):
    before = digest(malformed)
    rejects = tmp_path / "rejects.jsonl"
    code, out, err = run(capsys, "data", "import", malformed, "--name", "colours", "--strict",
                         "--rejects", rejects, "-w", ws)
    assert code == 3
    assert Workspace(ws).dataset_names() == []
    assert not (ws / "data" / "colours").exists()
    # Every reject is still reported with file, line and field, and written to --rejects.
    assert f"{malformed}:2: field 'output': expected str, got int" in err
    assert f"{malformed}:3:" in err and "broken JSON" in err
    assert "nothing stored" in err and "imported" not in out
    rows = [json.loads(line) for line in rejects.read_text(encoding="utf-8").splitlines()]
    assert [(r["file"], r["line"], r["field"]) for r in rows] == [(str(malformed), 2, "output"),
                                                                   (str(malformed), 3, None)]
    assert digest(malformed) == before


def test_strict_import_json_lists_the_rejects_and_stores_nothing(capsys, ws, malformed):
    code, out, _ = run(capsys, "data", "import", malformed, "--name", "colours", "--strict", "-w", ws, "--json")
    assert code == 3
    data = json.loads(out)
    assert data["stored"] is False and data["version"] is None and data["rejects"] == 2
    assert [(r["line"], r["field"]) for r in data["reject_details"]] == [(2, "output"), (3, None)]
    assert Workspace(ws).dataset_names() == []


def test_strict_import_into_an_existing_dataset_keeps_its_versions(capsys, ws, malformed, tmp_path):
    clean = tmp_path / "clean.jsonl"
    clean.write_text(json.dumps(GOOD) + "\n", encoding="utf-8")
    assert run(capsys, "data", "import", clean, "--name", "colours", "--strict", "-w", ws)[0] == 0
    head = Workspace(ws).head("colours")
    code, _, _ = run(capsys, "data", "import", malformed, "--name", "colours", "--strict", "-w", ws)
    assert code == 3
    assert [v.id for v in Workspace(ws).versions("colours")] == [head.id]
    assert Workspace(ws).head("colours").id == head.id


def test_import_without_strict_still_stores_the_good_rows(capsys, ws, malformed):
    code, out, _ = run(capsys, "data", "import", malformed, "--name", "colours", "-w", ws, "--json")
    assert code == 0
    assert json.loads(out)["records"] == 2 and json.loads(out)["rejects"] == 2
    assert Workspace(ws).dataset_names() == ["colours"]


# --- strict convert -----------------------------------------------------------------------------


def test_strict_convert_with_rejects_writes_no_output_and_exits_3(capsys, malformed, tmp_path):
    target = tmp_path / "colours.openai.jsonl"
    rejects = tmp_path / "rejects.jsonl"
    code, _, err = run(capsys, "data", "convert", malformed, "--to", "openai", "-o", target, "--strict",
                       "--rejects", rejects)
    assert code == 3
    assert not target.exists()
    assert f"{malformed}:2: field 'output'" in err and "nothing written" in err
    assert [json.loads(r)["line"] for r in rejects.read_text(encoding="utf-8").splitlines()] == [2, 3]

    # Without --strict the good rows are converted.
    code, _, _ = run(capsys, "data", "convert", malformed, "--to", "openai", "-o", target)
    assert code == 0 and len(target.read_text(encoding="utf-8").splitlines()) == 2


# --- the services, called the way the terminal app calls them ------------------------------------


def test_export_without_the_formats_list_still_writes_nothing(ws, tmp_path):
    from studio.data.convert import NothingWritten
    from studio.data.workflows import export_version
    from studio.plugins import get_host

    formats = get_host().formats()
    workspace = Workspace(ws)
    main(["data", "import", str(KTO), "--name", "kto", "-w", str(ws)])
    target = tmp_path / "out.jsonl"
    with pytest.raises(NothingWritten) as info:
        export_version(workspace, "kto", formats["trl_preference"], target)
    assert info.value.report.skipped == KTO_RECORDS and info.value.holders is None
    assert "formats that hold them" not in str(info.value) and KTO_SKIP_REASON in str(info.value)
    assert not target.exists()
    # Given the formats, it names those that hold the records; a lossy one is named only when no
    # format holds them whole.
    with pytest.raises(NothingWritten) as info:
        export_version(workspace, "kto", formats["trl_preference"], target, formats=formats)
    assert {"kto", "openai", "sharegpt"} <= set(info.value.holders)
    assert not any("alpaca" in h for h in info.value.holders)
    only_lossy = {name: formats[name] for name in ("alpaca", "dolly", "trl_preference")}
    with pytest.raises(NothingWritten) as info:
        export_version(workspace, "kto", formats["trl_preference"], target, formats=only_lossy)
    assert info.value.holders == ["alpaca (drops label)"]
