"""A path input that completes file names from the disk (→ accepts the suggestion)."""
from __future__ import annotations

import os
from pathlib import Path

from textual.suggester import Suggester
from textual.widgets import Input


class PathSuggester(Suggester):
    """Suggests the first entry of the typed folder that starts with the typed name."""

    def __init__(self) -> None:
        super().__init__(use_cache=False, case_sensitive=True)

    async def get_suggestion(self, value: str) -> str | None:
        if not value:
            return None
        expanded = os.path.expanduser(value)
        folder, prefix = os.path.split(expanded)
        try:
            names = sorted(os.listdir(folder or "."))
        except OSError:
            return None
        for name in names:
            if name.startswith(prefix) and name != prefix and (prefix.startswith(".") or not name.startswith(".")):
                suffix = name[len(prefix):]
                if os.path.isdir(os.path.join(folder or ".", name)):
                    suffix += os.sep
                return value + suffix
        return None


class PathInput(Input):
    def __init__(self, value: str = "", **kwargs) -> None:
        kwargs.setdefault("placeholder", "path/to/file (→ completes)")
        super().__init__(value, suggester=PathSuggester(), **kwargs)

    @property
    def path(self) -> Path | None:
        text = self.value.strip()
        return Path(os.path.expanduser(text)) if text else None
