"""Imports point one way: faces (``studio.cli``, ``studio.tui``) -> services -> core, with no
cycle anywhere inside ``studio/``, late (function-level) imports included.

The graph is read from the source with ``ast``, so an import inside a function counts as much as
one at the top of a module: a late import only hides a cycle from Python, not from a reader.
"""
from __future__ import annotations

import ast
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FACES = ("studio.cli", "studio.tui")
# `python -m studio` is the CLI's second door.
ENTRY_POINTS = {"studio.__main__"}
# The CLI opens the terminal app (`studio`, `studio tui`); nothing else of the TUI is its business.
CLI_MAY_IMPORT_FROM_TUI = {"studio.tui.app"}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph(root: Path, package: str = "studio") -> dict[str, set[str]]:
    """Module -> the modules of ``package`` it imports anywhere in its body."""
    files = {module_name(p, root): p for p in (root / package).rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = name.split(".")[: len(name.split(".")) - node.level + (1 if is_package else 0)]
                    base = ".".join(anchor + ([base] if base else []))
                # `from pkg import mod` imports the module pkg.mod; `from mod import name` the module.
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            for target in targets:
                while target and target not in files:
                    target = target.rpartition(".")[0]
                if target and target != name and target.split(".")[0] == package:
                    graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    def within(module: str, prefix: str) -> bool:
        return module == prefix or module.startswith(prefix + ".")

    problems = []
    for module, targets in sorted(graph.items()):
        for target in sorted(targets):
            below = module not in ENTRY_POINTS and not any(within(module, face) for face in FACES)
            if below and any(within(target, face) for face in FACES):
                problems.append(f"core/service module {module} imports the face {target}")
            if within(module, "studio.tui") and within(target, "studio.cli"):
                problems.append(f"{module} (TUI) imports {target} (CLI)")
            if within(module, "studio.cli") and within(target, "studio.tui") and target not in CLI_MAY_IMPORT_FROM_TUI:
                problems.append(f"{module} (CLI) imports {target} (TUI)")
    return problems


def test_no_import_cycles_in_the_studio_package():
    graph = import_graph(ROOT)
    assert "studio.cli.entry" in graph and "studio.tui.app" in graph  # the walk found the tree
    assert cycles(graph) == []


def test_faces_are_imported_by_nobody_below_them_and_not_by_each_other():
    assert layer_violations(import_graph(ROOT)) == []


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / "studio" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return tmp_path


def test_a_late_back_import_is_a_cycle(tmp_path):
    root = _package(tmp_path, {
        "__init__.py": "",
        "store.py": "def open():\n    from studio.cli.entry import main  # a late import back up\n",
        "cli/__init__.py": "",
        "cli/entry.py": "from studio import store\n",
    })
    graph = import_graph(root)
    assert graph["studio.cli.entry"] == {"studio.store"}
    assert cycles(graph) == [["studio.cli.entry", "studio.store"]]
    assert layer_violations(graph) == ["core/service module studio.store imports the face studio.cli.entry"]


def test_relative_and_from_package_imports_are_followed(tmp_path):
    root = _package(tmp_path, {
        "__init__.py": "",
        "models/__init__.py": "",
        "models/embedded.py": "from .loading import quiet\n",
        "models/loading.py": "def load():\n    from studio.models import embedded\n",
        "tui/__init__.py": "",
        "tui/app.py": "import studio.cli.shared\n",
        "cli/__init__.py": "",
        "cli/shared.py": "",
    })
    graph = import_graph(root)
    assert cycles(graph) == [["studio.models.embedded", "studio.models.loading"]]
    assert layer_violations(graph) == ["studio.tui.app (TUI) imports studio.cli.shared (CLI)"]
