"""The example third-party plugin examples/studio-chatml: its format in-process, and the whole
life of a third-party plugin in an isolated virtualenv (install with `studio plugins install`,
list, detect, convert, import, uninstall) through real `python -m studio` subprocesses."""
from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest

from studio.data.format_kit import RecordError
from studio.data.reading import Reject, detect, read_records
from studio.plugins import PluginHost
from studio.records import Record, Turn

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "studio-chatml"

SYSTEM_USER_ASSISTANT = ("<|im_start|>system\nYou are terse.<|im_end|>\n"
                         "<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
                         "<|im_start|>assistant\n4<|im_end|>")
MULTI_LINE = ("<|im_start|>user\nWrite two lines.\nPlease.<|im_end|>\n"
              "<|im_start|>assistant\nline one\nline two<|im_end|>\n"
              "<|im_start|>user\nThanks<|im_end|>\n"
              "<|im_start|>assistant\nYou're welcome.<|im_end|>")
TOOL_CALL = ("<|im_start|>user\nWeather in Paris?<|im_end|>\n"
             "<|im_start|>assistant\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call><|im_end|>\n"
             "<|im_start|>tool\n{\"temp_c\": 18}<|im_end|>\n"
             "<|im_start|>assistant\n18 °C in Paris.<|im_end|>")
UNCLOSED = "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\nHi there"


@pytest.fixture(scope="module")
def chatml():
    sys.path.insert(0, str(EXAMPLE))
    try:
        sys.modules.pop("studio_chatml", None)
        import studio_chatml
        assert Path(studio_chatml.__file__).resolve().is_relative_to(EXAMPLE.resolve())
        yield studio_chatml
    finally:
        sys.path.remove(str(EXAMPLE))
        sys.modules.pop("studio_chatml", None)


@pytest.fixture
def fmt(chatml):
    return chatml.ChatMLFormat()


# --- the format, in-process -------------------------------------------------------------------


def test_reads_system_user_assistant(fmt):
    record = fmt.read({"text": SYSTEM_USER_ASSISTANT, "id": 7})
    assert [(t.role, t.content) for t in record.messages] == [
        ("system", "You are terse."), ("user", "What is 2+2?"), ("assistant", "4")]
    assert record.meta == {"id": 7}
    assert record.kind == "conversation"


def test_keeps_newlines_inside_turns(fmt):
    record = fmt.read({"text": MULTI_LINE})
    assert record.messages[0].content == "Write two lines.\nPlease."
    assert record.messages[1].content == "line one\nline two"
    assert len(record.messages) == 4


def test_tool_call_turns(fmt):
    record = fmt.read({"text": TOOL_CALL})
    assert [t.role for t in record.messages] == ["user", "tool_call", "tool", "assistant"]
    assert json.loads(record.messages[1].content) == {"name": "get_weather", "arguments": {"city": "Paris"}}


@pytest.mark.parametrize("text", [SYSTEM_USER_ASSISTANT, MULTI_LINE, TOOL_CALL])
def test_write_read_round_trip(fmt, text):
    row = {"text": text, "source": "unit"}
    record = fmt.read(row)
    written = fmt.write(record)
    assert written.dropped == []
    assert fmt.read(written.row) == record
    assert written.row["source"] == "unit"


def test_writes_exact_chatml(fmt):
    record = Record([Turn("system", "S"), Turn("user", "U"), Turn("assistant", "A")])
    assert fmt.write(record).row == {
        "text": "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\nA<|im_end|>"}


def test_write_reports_what_chatml_cannot_hold(fmt):
    record = Record([Turn("user", "U"), Turn("assistant", "A", weight=0.0)], label=True, tools="[]",
                    meta={"_layout": {"format": "openai"}, "id": 1})
    written = fmt.write(record)
    assert sorted(written.dropped) == ["label", "per-turn weights", "tools"]
    assert written.row == {"text": "<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\nA<|im_end|>", "id": 1}
    pref = Record([Turn("user", "U")], chosen=[Turn("assistant", "a")], rejected=[Turn("assistant", "b")])
    assert fmt.write(pref).row is None


@pytest.mark.parametrize("row, message", [
    ({"text": UNCLOSED}, "turn 2 (assistant): unclosed turn, no <|im_end|> before the end of the text"),
    ({"text": "<|im_start|>user\nHi<|im_start|>assistant\nHello<|im_end|>"},
     "turn 1 (user): unclosed turn, no <|im_end|> before the next <|im_start|>"),
    ({"text": "<|im_start|>narrator\nOnce upon a time<|im_end|>"},
     "turn 1: unknown role 'narrator' (expected one of system, user, assistant, tool)"),
    ({"text": "Hello <|im_start|>user\nHi<|im_end|>"}, "turn 1: expected <|im_start|> at character 0"),
    ({"text": "<|im_start|>user\nHi<|im_end|> trailing words"}, "turn 2: expected <|im_start|>"),
    ({"text": "<|im_start|>user"}, "turn 1: role line 'user' is not followed by a newline"),
    ({"text": "   \n"}, "no ChatML turns (empty text)"),
    ({"text": "<|im_start|>system\nOnly rules.<|im_end|>"}, "only a system turn"),
    ({"text": "<|im_start|>assistant\n<tool_call>{not json}</tool_call><|im_end|>"}, "<tool_call> is not valid JSON"),
    ({"content": SYSTEM_USER_ASSISTANT}, "missing"),
    ({"text": ["<|im_start|>user\nHi<|im_end|>"]}, "expected str, got list"),
])
def test_malformed_rows_raise_record_error_naming_text(fmt, row, message):
    with pytest.raises(RecordError) as info:
        fmt.read(row)
    assert info.value.field == "text"
    assert message in info.value.message


def test_match_scores_the_share_of_parseable_rows(fmt):
    good = {"text": SYSTEM_USER_ASSISTANT}
    assert fmt.match([good] * 4).score == 1.0
    half = fmt.match([good, good, {"text": UNCLOSED}, {"text": "plain prose"}])
    assert half.score == 0.5
    assert "2 of 4 sampled rows" in half.reason and "unclosed turn" in half.reason
    assert fmt.match([{"text": "no markup at all"}]) is None
    assert fmt.match([{"instruction": "x", "output": "y"}]) is None
    assert fmt.match([]) is None


def test_detected_among_other_formats_and_read_with_line_numbers(tmp_path, chatml):
    import studio_format_alpaca

    host = PluginHost(entry_points=[])
    host.add_plugin(studio_format_alpaca, "alpaca")
    host.add_plugin(chatml, "chatml")
    assert host.owner("format", "chatml") == "chatml"
    path = tmp_path / "chats.jsonl"
    rows = [{"text": SYSTEM_USER_ASSISTANT}, {"text": MULTI_LINE}, {"text": UNCLOSED}, {"text": TOOL_CALL}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    detection = detect(path, host.formats())
    assert detection.format == "chatml"
    items = list(read_records(path, host.formats()["chatml"], detection))
    rejects = [i for i in items if isinstance(i, Reject)]
    assert len(items) - len(rejects) == 3
    assert [(r.line, r.field) for r in rejects] == [(3, "text")]
    assert "unclosed turn" in rejects[0].message


# --- the whole life of a third-party plugin, in an isolated virtualenv -------------------------


def _can_build_without_isolation() -> bool:
    """setuptools >= 70.1 builds wheels by itself; older ones need the wheel package."""
    if importlib.util.find_spec("setuptools") is None:
        return False
    major, minor = (int(x) for x in importlib.metadata.version("setuptools").split(".")[:2])
    return (major, minor) >= (70, 1) or importlib.util.find_spec("wheel") is not None


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("STUDIO_", "PIP_", "VIRTUAL_ENV")) and k not in {"PYTHONPATH", "PYTHONHOME"}}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               HF_HUB_DISABLE_TELEMETRY="1", TOKENIZERS_PARALLELISM="false", PYTHONNOUSERSITE="1",
               NO_COLOR="1", COLUMNS="200", PIP_DISABLE_PIP_VERSION_CHECK="1")
    if _can_build_without_isolation():
        # Offline and fast: build with the setuptools already importable instead of fetching one
        # into an isolated build environment; the studio dependency is already satisfied.
        # (PIP_NO_BUILD_ISOLATION=0 is pip's spelling of --no-build-isolation.)
        env.update(PIP_NO_BUILD_ISOLATION="0", PIP_NO_INDEX="1")
    env.update(extra)
    return env


class IsolatedStudio:
    """A virtualenv without system site packages in which the studio is importable through a .pth
    file (checkout + the development venv's site-packages, read-only); anything pip installs
    lands in the isolated venv only."""

    def __init__(self, root: Path):
        self.root = root
        self.venv = root / "venv"
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(self.venv)], check=True,
                       capture_output=True, timeout=120)
        self.python = str(self.venv / "bin" / "python")
        self.site = Path(self.query("import sysconfig; print(sysconfig.get_paths()['purelib'])"))
        outer = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
        (self.site / "studio-dev.pth").write_text("\n".join([str(ROOT), str(ROOT / "plugins"), *outer]) + "\n")
        self.env = _env(HF_HOME=str(root / "hf"))

    def query(self, code: str) -> str:
        proc = subprocess.run([self.python, "-c", code], text=True, capture_output=True, timeout=120,
                              env=_env(), cwd=self.root)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.strip()

    def studio(self, *args: str, cwd: Path | None = None, ok: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run([self.python, "-m", "studio", *args], cwd=cwd or self.root, env=self.env,
                              text=True, capture_output=True, timeout=300)
        if ok:
            assert proc.returncode == 0, f"studio {' '.join(args)}: rc={proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        return proc

    def json(self, *args: str, cwd: Path | None = None):
        return json.loads(self.studio(*args, "--json", cwd=cwd).stdout)

    def plugins(self) -> dict[str, dict]:
        return {p["name"]: p for p in self.json("plugins", "list")}


@pytest.mark.slow
def test_third_party_plugin_install_use_uninstall(tmp_path):
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    iso = IsolatedStudio(tmp_path)
    assert iso.query("import sys; print(sys.prefix != sys.base_prefix)") == "True"
    assert iso.query("import importlib.util as u; print(u.find_spec('studio_chatml') is None)") == "True"
    before = iso.plugins()
    assert "chatml" not in before and before["alpaca"]["status"] == "ok"
    openai = next((p.split(":", 1)[1] for p in before.get("openai_chat", {}).get("provides", [])
                   if p.startswith("format:")), None)
    assert openai, f"the built-in OpenAI chat format is not loaded: {before.get('openai_chat')}"
    timings["venv"] = time.perf_counter() - t0

    # Install from a copy, so that building never writes into the repository.
    source = tmp_path / "studio-chatml"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    t1 = time.perf_counter()
    proc = iso.studio("plugins", "install", str(source))
    timings["install"] = time.perf_counter() - t1
    assert "Successfully installed studio-chatml-0.1.0" in proc.stdout + proc.stderr
    assert any(iso.site.glob("studio_chatml-0.1.0.dist-info")), "installed outside the isolated venv"

    listing = iso.plugins()
    assert {k: listing["chatml"][k] for k in ("module", "distribution", "version", "builtin", "status", "error", "provides")} == {
        "module": "studio_chatml", "distribution": "studio-chatml", "version": "0.1.0", "builtin": False,
        "status": "ok", "error": None, "provides": ["format:chatml"]}
    assert "chatml" in {f["name"] for f in iso.json("data", "formats")}

    chats = tmp_path / "chats.jsonl"
    rows = [{"text": SYSTEM_USER_ASSISTANT, "id": "a"}, {"text": MULTI_LINE, "id": "b"},
            {"text": UNCLOSED, "id": "c"}, {"text": TOOL_CALL, "id": "d"}]
    chats.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    detected = iso.json("data", "detect", str(chats))
    assert (detected["format"], detected["records"], detected["rejects"]) == ("chatml", 3, 1)
    assert "ChatML" in detected["reason"]
    reject = detected["reject_details"][0]
    assert (reject["line"], reject["field"]) == (3, "text") and "unclosed turn" in reject["message"]

    # chatml -> openai: the conversation survives with its roles and contents.
    out = tmp_path / "chats.openai.jsonl"
    iso.studio("data", "convert", str(chats), "--to", openai, "-o", str(out))
    converted = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(converted) == 3
    assert [(m["role"], m["content"]) for m in converted[0]["messages"]] == [
        ("system", "You are terse."), ("user", "What is 2+2?"), ("assistant", "4")]
    assert [m["role"] for m in converted[1]["messages"]] == ["user", "assistant", "user", "assistant"]
    assert converted[1]["messages"][1]["content"] == "line one\nline two"
    assert [c.get("id") for c in converted] == ["a", "b", "d"]

    # ... and back: openai -> chatml gives the original text for the plain conversations.
    back = tmp_path / "chats.back.jsonl"
    iso.studio("data", "convert", str(out), "--to", "chatml", "-o", str(back))
    back_rows = [json.loads(line) for line in back.read_text(encoding="utf-8").splitlines()]
    assert [r["text"] for r in back_rows[:2]] == [SYSTEM_USER_ASSISTANT, MULTI_LINE]
    assert all("_layout" not in r for r in back_rows)

    # Import into a workspace: the records land in the store.
    ws = tmp_path / "ws"
    iso.studio("init", str(ws))
    imported = iso.json("data", "import", str(chats), "--name", "chats", cwd=ws)
    assert (imported["format"], imported["records"], imported["rejects"]) == ("chatml", 3, 1)
    datasets = iso.json("data", "ls", cwd=ws)
    assert [(d["name"], d["records"]) for d in datasets] == [("chats", 3)]

    t2 = time.perf_counter()
    iso.studio("plugins", "uninstall", "chatml")
    timings["uninstall"] = time.perf_counter() - t2
    assert not any(iso.site.glob("studio_chatml*")), "files of the plugin are left in the venv"
    assert "chatml" not in iso.plugins()
    assert "chatml" not in {f["name"] for f in iso.json("data", "formats")}
    proc = iso.studio("data", "detect", str(chats), "--json", ok=False)
    assert proc.returncode != 0 or json.loads(proc.stdout)["format"] != "chatml"
    # The studio itself is untouched by the uninstall.
    assert iso.plugins()["alpaca"]["status"] == "ok"
    timings["total"] = time.perf_counter() - t0
    print("timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
