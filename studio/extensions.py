"""Small value types that plugins hand to the host through the CLI and TUI hooks."""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any, Callable


@dataclass
class Command:
    """A top-level CLI command: ``studio NAME ...``.

    ``configure(parser)`` adds its arguments (or sub-commands) and ``run(args)`` returns the exit
    code. A command with ``raw_args`` parses its own arguments: they arrive as ``args.rest``
    (for commands that take either a recipe or an action word, like ``studio curate``)."""

    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    description: str | None = None  # longer text for `studio NAME --help`
    raw_args: bool = False


@dataclass
class ScreenEntry:
    name: str
    title: str
    key: str
    factory: Callable[[], Any]  # returns a textual.screen.Screen; imported lazily by the plugin
