"""What every command of the CLI shares: errors and exit codes, the workspace a command works
in, console and JSON output, and the listing of registered items."""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Callable

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_REJECTS = 3        # rows were rejected under --strict
EXIT_CHECKS_FAILED = 3  # a run trained, but a learning check failed
EXIT_STOPPED = 4        # a generation run stopped early (budget, cancel); resume continues it
EXIT_INTERRUPTED = 130


class CliError(Exception):
    """An expected failure: printed as one clear line, no traceback."""


def console(stderr: bool = False):
    from rich.console import Console

    # Soft wrap keeps paths, run ids and error lines whole: greppable and copyable.
    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def host():
    from studio.plugins import get_host

    return get_host()


def workspace(args, required: bool = True):
    """The workspace a command works in: ``--workspace``, then ``STUDIO_WORKSPACE``, then the one
    holding the current folder. Outside any, a command that needs one uses the default workspace
    plain ``studio`` opens, and says so; ``required=False`` gives None there instead."""
    from studio.store import Workspace

    if getattr(args, "workspace", None):
        return Workspace(Path(args.workspace))
    if os.environ.get("STUDIO_WORKSPACE"):
        return Workspace(Path(os.environ["STUDIO_WORKSPACE"]))
    found = Workspace.find()
    if found is not None or not required:
        return found
    from studio.sample_workspace import default_workspace

    ws = default_workspace(host().formats())
    console(stderr=True).print(f"[dim]no workspace here: using the default workspace {ws.root} "
                               f"(`studio init DIR` makes one of your own)[/]")
    return ws


def add_workspace_option(parser: argparse.ArgumentParser) -> None:
    # Also accepted after the sub-command; SUPPRESS keeps a global -w from being reset to None.
    parser.add_argument("--workspace", "-w", default=argparse.SUPPRESS, help="workspace folder")


def add_json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def subcommands(parser: argparse.ArgumentParser, dest: str,
                actions: list[tuple[str, str, Callable[[argparse.Namespace], int]]],
                json_option: bool = True) -> dict[str, argparse.ArgumentParser]:
    """Add ``ACTION`` sub-commands to a command group, each with ``--workspace`` (and ``--json``)."""
    sub = parser.add_subparsers(dest=dest, metavar="ACTION", required=True)
    out = {}
    for name, help_text, func in actions:
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_workspace_option(p)
        if json_option:
            add_json_option(p)
        p.set_defaults(func=func)
        out[name] = p
    return out


def dispatch(args: argparse.Namespace) -> int:
    """The ``run`` of a command group: each action set its own ``func``."""
    return args.func(args)


def failed_plugins_note() -> None:
    """A warning line for plugins that failed to load, when the command loaded the plugins."""
    from studio.plugins import loaded_host

    loaded = loaded_host()
    failed = [p for p in loaded.listing() if p.status == "failed"] if loaded is not None else []
    if failed:
        names = ", ".join(p.name for p in failed)
        console(stderr=True).print(f"[yellow]warning:[/] {len(failed)} plugin(s) failed to load: {names} "
                                   f"(see `studio plugins list`)")


def fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


# --- recipe-or-action commands (`studio curate`, `studio generate`) ----------------------------


def action_parser(command: str, action: str, recipe_help: str, overrides_example: str) -> argparse.ArgumentParser:
    """The parser of one action of a recipe-or-action command, with the options all share:
    ``--workspace``, ``--json`` and, for ``run``, the recipe and its ``KEY=VALUE`` overrides."""
    p = argparse.ArgumentParser(prog=f"studio {command}" if action == "run" else f"studio {command} {action}")
    p.add_argument("--workspace", "-w")
    add_json_option(p)
    if action == "run":
        p.add_argument("recipe", help=recipe_help + " (a path or a shipped/workspace recipe's name)")
        p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help=f"e.g. {overrides_example}")
    return p


def run_action(args, usage: str, parser_for, handlers: dict[str, Any]) -> int:
    """Commands that take either a recipe or an action word: ``handlers["run"]`` takes the
    recipe; ``parser_for(action)`` parses the rest."""
    rest = list(args.rest)
    if not rest or rest[0] in ("-h", "--help"):
        print(usage.strip())
        return EXIT_OK
    action = rest[0] if rest[0] in handlers and rest[0] != "run" else "run"
    sub_args = parser_for(action).parse_args(rest[1:] if action != "run" else rest)
    if getattr(args, "workspace", None) and not sub_args.workspace:
        sub_args.workspace = args.workspace
    return handlers[action](sub_args)


def recipe_path(ref: str, ws=None) -> Path:
    """A recipe file from a path or the name of a shipped or workspace recipe."""
    from studio.recipes.catalog import find_recipe

    return find_recipe(ref, ws)


# --- listings of registered items --------------------------------------------------------------


def list_items(args, kind: str, title: str, columns: tuple[str, ...], order=None) -> int:
    """A listing command of registered items: ``--json`` rows, or a table with their options."""
    rows = sorted(host().describe(kind), key=order) if order else host().describe(kind)
    if args.json:
        print_json(rows)
    else:
        print_items(rows, title, columns)
    return EXIT_OK


def print_items(rows: list[dict[str, Any]], title: str, columns: tuple[str, ...]) -> None:
    """The table every listing command prints: the given columns, then each item's options."""
    print_table(title, (*columns, "options"), [
        [*(_cell(row.get(col)) for col in columns),
         ", ".join(f"{f['name']} (required)" if f["required"] else f"{f['name']}={f['default']!r}"
                   for f in row["fields"]) or "-"]
        for row in rows])


def print_table(title: str, columns: tuple[str, ...] | list[str], rows: list[list[str]]) -> None:
    """A titled table whose long cells fold rather than being cut off."""
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for col in columns:
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(*row)
    console().print(table)


def _cell(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value)) or "-"
    return "-" if value in (None, "") else str(value)


class Interrupts:
    """Ctrl-C for a long command: the first asks the work to stop cleanly (``message`` says how),
    the second raises KeyboardInterrupt. Call the object to ask whether a stop was asked for."""

    def __init__(self, message: str):
        self.message = message
        self.asked = False
        self._previous = None

    def __call__(self) -> bool:
        return self.asked

    def _handle(self, signum, frame) -> None:
        if self.asked:
            raise KeyboardInterrupt
        self.asked = True
        console(stderr=True).print(self.message)

    def __enter__(self) -> "Interrupts":
        # Signal handlers can only be set from the main thread (the TUI or a test may call from another).
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
