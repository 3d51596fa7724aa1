"""Small value types that plugins hand to the host through the CLI and TUI hooks."""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any, Callable


@dataclass
class Command:
    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


@dataclass
class ScreenEntry:
    name: str
    title: str
    key: str
    factory: Callable[[], Any]  # returns a textual.screen.Screen; imported lazily by the plugin
