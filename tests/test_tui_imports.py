"""Imports in the terminal app point one way: no cycle between its modules, none hidden inside
a function either, and the services it calls never import it back."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TUI = ROOT / "studio" / "tui"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[str, bool]]:
    """(imported module, inside a function?) for every ``studio`` import of a file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, nested: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = nested or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                found.append((child.module, inner))
            elif isinstance(child, ast.Import):
                found.extend((alias.name, inner) for alias in child.names)
            visit(child, inner)

    visit(tree, False)
    return [(name, nested) for name, nested in found if name == "studio" or name.startswith("studio.")]


def tui_graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in TUI.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for target, _ in imports(path):
            # `from studio.tui.screens import x` names a package; the module is the longest known prefix.
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                graph[name].add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if state.get(nxt) is None and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if state.get(node) is None and (cycle := visit(node)):
            return cycle
    return None


def test_the_terminal_app_has_no_import_cycle():
    assert find_cycle(tui_graph()) is None, " -> ".join(find_cycle(tui_graph()) or [])


def test_the_cycle_check_sees_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_function_imports_another_module_of_the_terminal_app():
    # A late import is how a cycle hides: modules of the app import each other at the top.
    late = [(module_name(path), target) for path in TUI.rglob("*.py")
            for target, nested in imports(path) if nested and target.startswith("studio.tui")]
    assert late == []


def test_nothing_below_the_faces_imports_the_terminal_app():
    faces = (TUI, ROOT / "studio" / "cli")
    offenders = [(module_name(path), target) for path in (ROOT / "studio").rglob("*.py")
                 if not any(path.is_relative_to(face) for face in faces) and not path.name.startswith("cli")
                 for target, _ in imports(path) if target.startswith("studio.tui")]
    assert offenders == []
