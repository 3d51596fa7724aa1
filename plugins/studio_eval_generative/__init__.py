"""Evaluators (work in progress)."""
from __future__ import annotations

from studio.hookspecs import hookimpl


@hookimpl
def register_evaluators(register):
    pass
