"""The headless core and the plugin host never pull in the heavy faces: no textual (TUI), torch or
transformers at import time. Each check runs in a fresh interpreter and inspects sys.modules."""
from __future__ import annotations

import json
import os
import pkgutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import studio.data

HEAVY = ("textual", "torch", "transformers", "trl", "peft", "accelerate")


def core_modules() -> list[str]:
    data = sorted(f"studio.data.{m.name}" for m in pkgutil.iter_modules(studio.data.__path__))
    return ["studio.plugins", "studio.hookspecs", "studio.store", "studio.records", *data]


def heavy_modules_after(code: str) -> dict[str, list[str]]:
    script = textwrap.dedent(code) + textwrap.dedent(f"""
        import json, sys
        heavy = {HEAVY!r}
        print(json.dumps({{h: sorted(m for m in sys.modules if m == h or m.startswith(h + "."))[:5]
                           for h in heavy}}))
    """)
    env = {k: v for k, v in os.environ.items() if not k.startswith("STUDIO_")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-c", script], text=True, capture_output=True, timeout=120,
                          env=env, cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    return {name: mods for name, mods in found.items() if mods}


def test_core_modules_exist():
    modules = core_modules()
    assert "studio.data.format_kit" in modules and "studio.data.reading" in modules


def test_importing_the_core_imports_no_heavy_library():
    imports = "\n".join(f"import {m}" for m in core_modules())
    assert heavy_modules_after(imports) == {}


def test_loading_every_plugin_imports_no_heavy_library():
    # What `studio data ...` and `studio plugins list` pay at start-up: plugins must import heavy
    # libraries lazily (inside the function that trains or draws a screen).
    loaded = heavy_modules_after("""
        from studio.plugins import get_host
        host = get_host()
        host.listing()
        for kind in ("format", "curation_op", "generator", "backend", "evaluator", "command", "screen"):
            host.items(kind)
    """)
    assert loaded == {}


def test_the_check_sees_heavy_imports():
    # Importing textual must be caught: the check can fail.
    pytest.importorskip("textual")
    assert "textual" in heavy_modules_after("import textual.app")
