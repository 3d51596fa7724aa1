"""The studio's command palette entries (ctrl+p): open a dataset, switch screens, dialogs."""
from __future__ import annotations

from textual.command import DiscoveryHit, Hit, Hits, Provider


class StudioCommands(Provider):
    async def startup(self) -> None:
        # Read once per palette opening: dataset names come from the disk.
        self.commands = list(self.app.palette_commands(self.screen))  # type: ignore[attr-defined]

    async def discover(self) -> Hits:
        for title, help_text, callback in self.commands:
            yield DiscoveryHit(title, callback, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, help_text, callback in self.commands:
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, matcher.highlight(title), callback, help=help_text)
