"""A plugin that raises at import must cost only itself: real `python -m studio` subprocesses
with a broken third-party distribution (dist-info + entry point) on PYTHONPATH."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from studio import __version__
from studio.hookspecs import ENTRY_POINT_GROUP

BROKEN = "broken_thing"  # the plugin (entry-point) name
BROKEN_MESSAGE = "the broken plugin refuses to import"


def studio_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("STUDIO_") and k not in {"PYTHONPATH", "PYTHONHOME"}}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               HF_HUB_DISABLE_TELEMETRY="1", TOKENIZERS_PARALLELISM="false", PYTHONNOUSERSITE="1",
               NO_COLOR="1", COLUMNS="200", PIP_DISABLE_PIP_VERSION_CHECK="1")
    env.update(extra)
    return env


def run_studio(args: list[str], cwd: Path, env: dict[str, str], python: str = sys.executable,
               timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([python, "-m", "studio", *args], cwd=cwd, env=env, text=True,
                          capture_output=True, timeout=timeout)


def json_out(proc: subprocess.CompletedProcess):
    assert proc.returncode == 0, f"rc={proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return json.loads(proc.stdout)


@pytest.fixture
def broken_site(tmp_path: Path) -> Path:
    """A directory holding an installed-looking distribution whose plugin raises at import."""
    site = tmp_path / "site"
    (site / "studio_broken_thing").mkdir(parents=True)
    (site / "studio_broken_thing" / "__init__.py").write_text(
        f"raise RuntimeError({BROKEN_MESSAGE!r})\n")
    info = site / "studio_broken_thing-0.3.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: studio-broken-thing\nVersion: 0.3.0\n")
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{BROKEN} = studio_broken_thing\n")
    return site


@pytest.fixture
def env(broken_site: Path) -> dict[str, str]:
    return studio_env(PYTHONPATH=str(broken_site))


@pytest.fixture
def alpaca_file(tmp_path: Path) -> Path:
    rows = [{"instruction": f"Say {i}", "input": "", "output": f"{i}"} for i in range(5)]
    path = tmp_path / "tiny_alpaca.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_plugins_list_shows_the_broken_plugin_failed_and_the_rest_loaded(tmp_path, env):
    listing = {p["name"]: p for p in json_out(run_studio(["plugins", "list", "--json"], tmp_path, env))}
    broken = listing[BROKEN]
    assert broken == {"name": BROKEN, "module": "studio_broken_thing", "distribution": "studio-broken-thing",
                      "version": "0.3.0", "builtin": False, "status": "failed",
                      "error": f"RuntimeError: {BROKEN_MESSAGE}", "provides": []}
    assert listing["alpaca"]["status"] == "ok"
    assert "format:alpaca" in listing["alpaca"]["provides"]


def test_without_the_broken_site_the_plugin_is_absent(tmp_path):
    # The fixture is what puts it there: the listing test above is not vacuous.
    listing = json_out(run_studio(["plugins", "list", "--json"], tmp_path, studio_env()))
    assert BROKEN not in {p["name"] for p in listing}


def test_plugins_list_table_names_the_failure(tmp_path, env):
    proc = run_studio(["plugins", "list"], tmp_path, env)
    assert proc.returncode == 0, proc.stderr
    line = next(line for line in proc.stdout.splitlines() if BROKEN in line)
    assert "failed" in line


def test_data_detect_still_works(tmp_path, env, alpaca_file):
    proc = run_studio(["data", "detect", str(alpaca_file), "--json"], tmp_path, env)
    result = json_out(proc)
    assert (result["format"], result["records"], result["rejects"]) == ("alpaca", 5, 0)
    assert BROKEN in proc.stderr  # a warning points at the failed plugin


def test_version_works(tmp_path, env):
    proc = run_studio(["--version"], tmp_path, env)
    assert (proc.returncode, proc.stdout.strip()) == (0, f"studio {__version__}")


@pytest.mark.parametrize("args", [["plugins", "list", "--json"], ["data", "detect", "{file}", "--json"]])
def test_strict_mode_fails_with_a_message_naming_the_plugin(tmp_path, env, alpaca_file, args):
    args = [a.replace("{file}", str(alpaca_file)) for a in args]
    # STUDIO_PLUGINS keeps the check about this plugin, whatever state the built-ins are in.
    strict = {**env, "STUDIO_STRICT_PLUGINS": "1", "STUDIO_PLUGINS": f"alpaca,{BROKEN}"}
    proc = run_studio(args, tmp_path, strict)
    assert proc.returncode != 0
    assert proc.stdout == ""
    assert f"plugin '{BROKEN}' failed: RuntimeError: {BROKEN_MESSAGE}" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_strict_mode_passes_when_every_plugin_loads(tmp_path, env, alpaca_file):
    # STUDIO_PLUGINS keeps the broken one out, so strict mode has nothing to complain about.
    strict = {**env, "STUDIO_STRICT_PLUGINS": "1", "STUDIO_PLUGINS": "alpaca"}
    result = json_out(run_studio(["data", "detect", str(alpaca_file), "--json"], tmp_path, strict))
    assert (result["format"], result["records"]) == ("alpaca", 5)


def test_studio_plugins_limits_loading(tmp_path, env, alpaca_file):
    limited = {**env, "STUDIO_PLUGINS": "alpaca"}
    listing = {p["name"]: p for p in json_out(run_studio(["plugins", "list", "--json"], tmp_path, limited))}
    assert listing["alpaca"]["status"] == "ok"
    assert listing[BROKEN]["status"] == "disabled" and listing[BROKEN]["error"] is None
    others = {name: p["status"] for name, p in listing.items() if name != "alpaca"}
    assert set(others.values()) == {"disabled"}, others
    proc = run_studio(["data", "detect", str(alpaca_file), "--json"], tmp_path, limited)
    assert json_out(proc)["format"] == "alpaca"
    assert BROKEN not in proc.stderr  # nothing failed, so no warning
    formats = json_out(run_studio(["data", "formats", "--json"], tmp_path, limited))
    assert [f["name"] for f in formats] == ["alpaca"]


def test_uninstall_of_a_builtin_is_refused(tmp_path, env):
    proc = run_studio(["plugins", "uninstall", "alpaca"], tmp_path, env)
    assert proc.returncode == 1
    assert "'alpaca' is built into the studio and cannot be uninstalled" in proc.stderr
    assert "pip" not in proc.stdout  # pip was never run
    listing = {p["name"]: p for p in json_out(run_studio(["plugins", "list", "--json"], tmp_path, env))}
    assert listing["alpaca"]["status"] == "ok"


def test_uninstall_of_a_non_plugin_is_refused(tmp_path, env):
    proc = run_studio(["plugins", "uninstall", "pluggy"], tmp_path, env)
    assert proc.returncode == 1
    assert "no installed plugin is called 'pluggy'" in proc.stderr
    assert BROKEN in proc.stderr  # the message lists the third-party plugins there are
