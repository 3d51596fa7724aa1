"""``studio plugins``: list what is loaded (and what failed), install and uninstall plugins."""
from __future__ import annotations

from studio.cli.shared import EXIT_OK, CliError, console, dispatch, host, print_json
from studio.extensions import Command


def cmd_list(args) -> int:
    listing = host().listing()
    if args.json:
        print_json([p.to_dict() for p in listing])
        return EXIT_OK
    from rich.table import Table

    table = Table(title="Plugins", title_justify="left")
    for col in ("name", "version", "status", "provides", "error"):
        table.add_column(col, overflow="fold")
    for p in listing:
        style = {"ok": "green", "failed": "red", "disabled": "dim"}.get(p.status, "")
        table.add_row(p.name + (" (built-in)" if p.builtin else ""), p.version or "-",
                      f"[{style}]{p.status}[/]", ", ".join(p.provides) or "-", p.error or "")
    console().print(table)
    return EXIT_OK


def cmd_install(args) -> int:
    from studio import plugins

    return plugins.install(list(args.spec), echo=print, upgrade=args.upgrade)


def cmd_uninstall(args) -> int:
    from studio import plugins

    try:
        return plugins.uninstall(args.name, echo=print)
    except plugins.PluginError as exc:
        raise CliError(str(exc)) from None


def configure(parser) -> None:
    sub = parser.add_subparsers(dest="plugins_command", metavar="ACTION", required=True)
    p = sub.add_parser("list", help="loaded plugins with what they provide, status and errors")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_list)
    p = sub.add_parser("install", help="pip-install a plugin into the studio's environment")
    p.add_argument("spec", nargs="+", help="anything pip accepts: a name, a path, a git URL")
    p.add_argument("--upgrade", "-U", action="store_true")
    p.set_defaults(func=cmd_install)
    p = sub.add_parser("uninstall", help="remove a plugin (by plugin or distribution name)")
    p.add_argument("name")
    p.set_defaults(func=cmd_uninstall)


COMMANDS = [Command("plugins", "list, install and uninstall plugins", configure, dispatch)]
