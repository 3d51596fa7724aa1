"""The `studio run` printer: messages print as text, PPO metrics are shown."""
from __future__ import annotations

import io

from rich.console import Console

from studio.cli.run import Printer


def printed(events) -> str:
    printer = Printer(quiet=False)
    out = io.StringIO()
    printer.console = Console(file=out, width=200, color_system=None)
    for event in events:
        printer(event)
    return out.getvalue()


def test_a_message_with_markup_like_text_prints_as_it_is():
    # A gloo error quotes paths such as "[/tmp/x]"; as markup this raised MarkupError and ended the CLI.
    text = printed([{"event": "error", "message": "Connection closed by peer [/tmp/gloo-x] [/]"}])
    assert "Connection closed by peer [/tmp/gloo-x] [/]" in text


def test_ppo_metrics_are_printed():
    text = printed([{"event": "metrics", "step": 3, "values": {"objective/scores": 0.5, "objective/kl": 0.1,
                                                                 "policy/clipfrac": 0.0}}])
    assert "objective/scores=" in text and "objective/kl=" in text and "clipfrac" not in text
