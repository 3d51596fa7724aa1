"""`studio eval`: registered evaluators, evaluation runs, reports and comparisons."""
from __future__ import annotations

COMMANDS: list = []
