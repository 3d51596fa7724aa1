"""``studio``: builds the parser from the registered commands and runs one. Plain ``studio``
opens the terminal app."""
from __future__ import annotations

import argparse
import sys

from studio import __version__
from studio.cli.shared import EXIT_ERROR, EXIT_INTERRUPTED, CliError, console, failed_plugins_note, host

COMMANDS_PLUGIN = "commands"  # the entry point that registers the studio's own commands


def build_parser(commands: dict) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="studio", description="Alignment and dataset studio. "
                                     "Run without a command to open the terminal app.")
    parser.add_argument("--version", action="version", version=f"studio {__version__}")
    parser.add_argument("--workspace", "-w", help="workspace folder (default: the one containing the current folder)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, command in commands.items():
        extra = {"description": command.description, "formatter_class": argparse.RawDescriptionHelpFormatter} \
            if command.description else {}
        p = sub.add_parser(name, help=command.help, add_help=not command.raw_args, **extra)
        try:
            if command.raw_args:
                p.add_argument("rest", nargs=argparse.REMAINDER)
            else:
                command.configure(p)
        except Exception as exc:  # noqa: BLE001 - a broken plugin command must not break the CLI
            console(stderr=True).print(f"[yellow]warning:[/] command {name!r} could not be set up: {exc}")
            sub._name_parser_map.pop(name, None)
            continue
        p.set_defaults(run=command.run, raw_args=command.raw_args)
    return parser


def _own_commands() -> dict:
    """The studio's own commands, from its entry point alone: most invocations need no other
    plugin, and loading every plugin costs about a second."""
    import importlib.metadata as md

    from studio.hookspecs import ENTRY_POINT_GROUP
    from studio.plugins import PluginHost

    own = [ep for ep in md.entry_points(group=ENTRY_POINT_GROUP) if ep.name == COMMANDS_PLUGIN]
    return PluginHost(own, selection=False).items("command")


def _command_word(argv: list[str]) -> str | None:
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg in ("-w", "--workspace"):
            skip = True
        elif not arg.startswith("-"):
            return arg
    return None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    from studio.plugins import PluginError

    try:
        commands = _own_commands()
        word = _command_word(argv)
        if word not in commands or not argv:
            # A plugin's command, or the overview of every command: load them all.
            commands = {**commands, **{n: c for n, c in host().items("command").items() if n not in commands}}
        parser = build_parser(commands)
        if word is not None and getattr(commands.get(word), "raw_args", False):
            # These parse their own arguments (a recipe path or an action word); argparse's
            # REMAINDER would swallow neither a leading --help nor options reliably.
            cut = argv.index(word) + 1
            args = parser.parse_args(argv[:cut])
            args.rest = argv[cut:]
        else:
            args = parser.parse_args(argv)
        if args.command is None:
            from studio.cli.workspace import cmd_tui

            return cmd_tui(args)
        code = args.run(args)
        if args.command != "plugins":
            failed_plugins_note()
        return int(code or 0)
    except (PluginError, CliError, ValueError, OSError) as exc:
        from rich.text import Text

        console(stderr=True).print(Text.assemble(("error: ", "bold red"), str(exc)))
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
