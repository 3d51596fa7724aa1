"""The studio's own CLI commands, registered through ``register_commands`` like any plugin's
(entry point ``commands``). Each command group is a module of ``studio.cli``."""
from __future__ import annotations

from studio.cli import curate, data, evaluate, generate, model, plugins, recipes, review, reward, run, train, workspace
from studio.hookspecs import hookimpl

# The order `studio --help` lists them in.
GROUPS = (workspace, data, curate, review, generate, model, run, recipes, train, reward, evaluate, plugins)


@hookimpl
def register_commands(register):
    for group in GROUPS:
        for command in group.COMMANDS:
            register(command)
