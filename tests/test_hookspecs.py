"""The plugin contract stays documented: every hook has a docstring that names its arguments,
is listed in the user-facing docs, and is actually called by the plugin host.
(Like datasette's test_plugin_hooks_are_documented.)"""
from __future__ import annotations

import inspect
import re
import types
from pathlib import Path

import pluggy
import pytest

from studio import hookspecs, plugins

ROOT = Path(__file__).resolve().parents[1]


def hookspec_functions(module) -> dict[str, object]:
    marker = f"{hookspecs.PROJECT}_spec"
    return {name: fn for name, fn in vars(module).items()
            if inspect.isfunction(fn) and hasattr(fn, marker)}


def readme_plugins_section(readme: Path = ROOT / "README.md") -> str:
    """The "Plugins" section of README.md (a heading containing "Plugins" up to the next heading
    of the same or a higher level), or "" when there is none."""
    if not readme.is_file():
        return ""
    lines = readme.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"(#+)\s+.*\bplugins?\b", line, re.IGNORECASE)
        if m:
            level = len(m.group(1))
            end = next((j for j in range(i + 1, len(lines))
                        if re.match(rf"#{{1,{level}}}\s", lines[j])), len(lines))
            return "\n".join(lines[i:end])
    return ""


def undocumented(module, docs: str) -> list[str]:
    return [name for name in hookspec_functions(module) if not re.search(rf"\b{name}\b", docs)]


def missing_docstrings(module) -> list[str]:
    problems = []
    for name, fn in hookspec_functions(module).items():
        doc = inspect.getdoc(fn) or ""
        if len(doc.strip()) < 20:
            problems.append(f"{name}: no docstring")
            continue
        for param in inspect.signature(fn).parameters:
            if param not in doc:
                problems.append(f"{name}: docstring does not mention argument {param!r}")
    return problems


def docs_text() -> str:
    return (hookspecs.__doc__ or "") + "\n" + readme_plugins_section()


# --- the real contract -----------------------------------------------------------------------


def test_there_are_hooks():
    names = set(hookspec_functions(hookspecs))
    assert {"register_formats", "register_commands", "register_screens"} <= names


def test_every_hook_has_a_docstring_naming_its_arguments():
    assert missing_docstrings(hookspecs) == []


def test_every_hook_is_documented():
    assert undocumented(hookspecs, docs_text()) == []


def test_every_hook_is_called_by_the_host():
    # A hook the host never calls would be a silent dead end for plugin authors.
    assert set(hookspec_functions(hookspecs)) == set(plugins.KINDS)


def test_hookspecs_use_the_project_markers():
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    for name in hookspec_functions(hookspecs):
        assert getattr(pm.hook, name).has_spec()


# --- the checks themselves can fail -----------------------------------------------------------


def _fake_specs() -> types.ModuleType:
    module = types.ModuleType("fake_specs")
    exec(
        "from studio.hookspecs import hookspec\n"
        "@hookspec\n"
        "def register_documented(register):\n"
        "    '''Register documented things: call ``register(thing)`` for each.'''\n"
        "@hookspec\n"
        "def register_bare(register):\n"
        "    pass\n"
        "@hookspec\n"
        "def register_vague(register, extra):\n"
        "    '''Register vague things; the register callback takes each one.'''\n",
        module.__dict__,
    )
    return module


def test_checks_catch_missing_docstrings_and_arguments():
    assert missing_docstrings(_fake_specs()) == [
        "register_bare: no docstring",
        "register_vague: docstring does not mention argument 'extra'",
    ]


def test_checks_catch_undocumented_hooks():
    docs = "Hooks: register_documented, register_vague_ones"
    # register_vague is not matched by the longer register_vague_ones: whole names only.
    assert undocumented(_fake_specs(), docs) == ["register_bare", "register_vague"]


@pytest.mark.parametrize("readme, expected", [
    ("# Studio\n\n## Plugins\n\nuse register_formats\n\n## Other\n\nregister_screens\n", "register_formats"),
    ("# Studio\n\nno section\n", ""),
])
def test_readme_section_is_cut_at_the_next_heading(tmp_path, readme, expected):
    (tmp_path / "README.md").write_text(readme, encoding="utf-8")
    section = readme_plugins_section(tmp_path / "README.md")
    assert (expected in section) if expected else section == ""
    assert "register_screens" not in section
