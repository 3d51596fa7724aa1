"""The command-line face of the studio. Every command is headless and scriptable; listing and
inspection commands take ``--json``. Plain ``studio`` opens the terminal app.

``entry`` builds the parser from the registered commands (the studio's own are registered by
the built-in plugin ``plugins/studio_cli``, like any plugin's); each command group is a module
of its own, and ``shared`` holds what they share (errors, exit codes, the workspace, output)."""
from studio.cli.entry import main

__all__ = ["main"]
