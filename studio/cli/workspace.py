"""``studio init`` (make a workspace) and ``studio tui`` (the terminal app, also plain ``studio``)."""
from __future__ import annotations

from pathlib import Path

from studio.cli.shared import EXIT_OK, workspace
from studio.extensions import Command


def cmd_init(args) -> int:
    from studio.store import Workspace

    ws = Workspace.init(Path(args.dir))
    print(f"workspace ready at {ws.root}")
    return EXIT_OK


def cmd_tui(args) -> int:
    from studio.tui.app import run_app

    run_app(workspace(args))
    return EXIT_OK


def _configure_init(p) -> None:
    p.add_argument("dir", nargs="?", default=".")


COMMANDS = [
    Command("init", "make a workspace in a folder", _configure_init, cmd_init),
    Command("tui", "open the terminal app (the default)", lambda p: None, cmd_tui),
]
