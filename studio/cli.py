"""The command-line face of the studio. Every command is headless and scriptable; listing and
inspection commands take ``--json``. Plain ``studio`` opens the terminal app."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from studio import __version__

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_REJECTS = 0, 1, 2, 3


class CliError(Exception):
    """An expected failure: printed as one clear line, no traceback."""


def _console(stderr: bool = False):
    from rich.console import Console

    # Messages are soft-wrapped so file paths and error lines stay greppable, never broken.
    return Console(stderr=stderr, highlight=False, soft_wrap=stderr)


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def _host():
    from studio.plugins import get_host

    return get_host()


def _formats():
    return _host().formats()


def _workspace(args, required: bool = True):
    from studio.store import Workspace

    if getattr(args, "workspace", None):
        return Workspace(Path(args.workspace))
    if os.environ.get("STUDIO_WORKSPACE"):
        return Workspace(Path(os.environ["STUDIO_WORKSPACE"]))
    ws = Workspace.find()
    if ws is None and required:
        raise CliError("not inside a studio workspace: run `studio init` here, pass --workspace DIR, "
                       "or set STUDIO_WORKSPACE")
    return ws


def _failed_plugins_note() -> None:
    failed = [p for p in _host().listing() if p.status == "failed"]
    if failed:
        names = ", ".join(p.name for p in failed)
        _console(stderr=True).print(f"[yellow]warning:[/] {len(failed)} plugin(s) failed to load: {names} "
                                    f"(see `studio plugins list`)")


def action_parser(command: str, action: str, recipe_help: str, overrides_example: str) -> argparse.ArgumentParser:
    """The parser of one action of a recipe-or-action command, with the options all share:
    ``--workspace``, ``--json`` and, for ``run``, the recipe and its ``KEY=VALUE`` overrides."""
    p = argparse.ArgumentParser(prog=f"studio {command}" if action == "run" else f"studio {command} {action}")
    p.add_argument("--workspace", "-w")
    p.add_argument("--json", action="store_true")
    if action == "run":
        p.add_argument("recipe", help=recipe_help)
        p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help=f"e.g. {overrides_example}")
    return p


def run_action(args, usage: str, parser_for, handlers: dict[str, Any]) -> int:
    """Commands that take either a recipe path or an action word (`curate`, `generate`):
    ``handlers["run"]`` takes the recipe; ``parser_for(action)`` parses the rest."""
    rest = list(args.rest)
    if not rest or rest[0] in ("-h", "--help"):
        print(usage.strip())
        return EXIT_OK
    action = rest[0] if rest[0] in handlers and rest[0] != "run" else "run"
    sub_args = parser_for(action).parse_args(rest[1:] if action != "run" else rest)
    if getattr(args, "workspace", None) and not sub_args.workspace:
        sub_args.workspace = args.workspace
    return handlers[action](sub_args)


# --- plugins -------------------------------------------------------------------------------


def cmd_plugins_list(args) -> int:
    listing = _host().listing()
    if args.json:
        _print_json([p.to_dict() for p in listing])
        return EXIT_OK
    from rich.table import Table

    table = Table(title="Plugins", title_justify="left")
    for col in ("name", "version", "status", "provides", "error"):
        table.add_column(col, overflow="fold")
    for p in listing:
        style = {"ok": "green", "failed": "red", "disabled": "dim"}.get(p.status, "")
        table.add_row(p.name + (" (built-in)" if p.builtin else ""), p.version or "-",
                      f"[{style}]{p.status}[/]", ", ".join(p.provides) or "-", p.error or "")
    _console().print(table)
    return EXIT_OK


def cmd_plugins_install(args) -> int:
    from studio import plugins

    return plugins.install(list(args.spec), echo=print, upgrade=args.upgrade)


def cmd_plugins_uninstall(args) -> int:
    from studio import plugins

    try:
        return plugins.uninstall(args.name, echo=print)
    except plugins.PluginError as exc:
        raise CliError(str(exc)) from None


# --- data ----------------------------------------------------------------------------------


def _column_map(args) -> dict[str, str]:
    from studio.data.reading import parse_column_map

    return parse_column_map(getattr(args, "map", None))


def _report_rejects(rejects, as_json: bool) -> None:
    if not rejects or as_json:
        return
    from studio.data.convert import summarise_rejects

    err = _console(stderr=True)
    err.print(f"[yellow]{len(rejects)} row(s) rejected:[/]")
    for line in summarise_rejects(rejects):
        err.print(f"  {line}", markup=False)


def cmd_data_formats(args) -> int:
    formats = _formats()
    rows = [{"name": n, "title": f.title, "summary": f.summary, "plugin": _host().owner("format", n)}
            for n, f in sorted(formats.items())]
    if args.json:
        _print_json(rows)
        return EXIT_OK
    from rich.table import Table

    table = Table(title="Dataset formats", title_justify="left")
    for col in ("name", "title", "plugin", "summary"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(r["name"], r["title"], r["plugin"] or "-", r["summary"])
    _console().print(table)
    return EXIT_OK


def cmd_data_detect(args) -> int:
    from studio.data.convert import read_file, reject_json

    result = read_file(Path(args.file), _formats(), override=args.format, column_map=_column_map(args))
    d = result.detection
    kinds: dict[str, int] = {}
    for r in result.records:
        kinds[r.kind] = kinds.get(r.kind, 0) + 1
    if args.json:
        _print_json({"file": args.file, **d.to_dict(), "records": len(result.records), "kinds": kinds,
                     "rejects": len(result.rejects), "reject_details": reject_json(result.rejects[:1000])})
        return EXIT_OK
    out = _console()
    out.print(f"[bold]{args.file}[/]: [cyan]{d.format}[/] ({d.container})")
    out.print(f"  why: {d.reason}", markup=False)
    if d.column_map:
        out.print("  columns mapped: " + ", ".join(f"{t} <- {s}" for t, s in d.column_map.items()), markup=False)
    out.print(f"  records: {len(result.records)} ({', '.join(f'{k} {v}' for k, v in kinds.items()) or 'none'})")
    out.print(f"  rejects: {len(result.rejects)}")
    others = [c for c in d.candidates[1:4] if c[1] > 0]
    if others:
        out.print("  also considered: " + "; ".join(f"{n} {s:.0%}" for n, s, _ in others))
    _report_rejects(result.rejects, False)
    return EXIT_OK


def cmd_data_convert(args) -> int:
    from studio.data.convert import reject_json
    from studio.data.reading import RejectedRows
    from studio.data.workflows import convert_file

    try:
        result, report = convert_file(Path(args.file), _formats(), args.to, Path(args.output),
                                      override=args.format, column_map=_column_map(args),
                                      rejects_out=Path(args.rejects) if args.rejects else None, strict=args.strict)
    except RejectedRows as exc:
        # --strict: no output file was written; list every reject, then exit 3.
        if args.json:
            _print_json({"from": exc.detection.format, "to": args.to, "output": None, "written": 0,
                         "rejects": len(exc.rejects), "reject_details": reject_json(exc.rejects[:1000])})
        else:
            _report_rejects(exc.rejects, False)
            _console(stderr=True).print(f"error: nothing written: {exc} and --strict is on", markup=False)
        return EXIT_REJECTS
    if args.json:
        _print_json({"from": result.detection.format, "to": args.to, "output": args.output,
                     "read": len(result.records), "rejects": len(result.rejects), **report.to_dict()})
    else:
        out = _console()
        out.print(f"{args.file} ({result.detection.format}) -> {args.output} ({args.to}): "
                  f"{report.written} written, {report.skipped} skipped, {len(result.rejects)} rejected", markup=False)
        for note in report.notes():
            out.print(f"  [yellow]note:[/] {note}")
        _report_rejects(result.rejects, False)
    return EXIT_OK


def cmd_data_import(args) -> int:
    from studio.data.convert import reject_json
    from studio.data.reading import RejectedRows
    from studio.data.workflows import import_file

    ws = _workspace(args)
    try:
        result = import_file(ws, Path(args.file), _formats(), name=args.name, override=args.format,
                             column_map=_column_map(args), rejects_out=Path(args.rejects) if args.rejects else None,
                             strict=args.strict)
    except RejectedRows as exc:
        # --strict: nothing was stored; list every reject, then exit 3.
        if args.json:
            _print_json({"dataset": None, "version": None, "stored": False, "records": 0,
                         "format": exc.detection.format, "rejects": len(exc.rejects),
                         "reject_details": reject_json(exc.rejects[:1000])})
        else:
            _report_rejects(exc.rejects, False)
            _console(stderr=True).print(f"error: nothing stored: {exc} and --strict is on", markup=False)
        return EXIT_REJECTS
    v = result.version
    if args.json:
        _print_json({"dataset": v.dataset, "version": v.id, "stored": True, "records": v.num_records,
                     "format": result.detection.format, "reason": result.detection.reason,
                     "rejects": len(result.rejects), "reject_details": reject_json(result.rejects[:1000])})
    else:
        _console().print(f"imported {v.num_records} record(s) into [bold]{v.dataset}[/] version {v.id} "
                         f"as {result.detection.format} ({len(result.rejects)} rejected)")
        _report_rejects(result.rejects, False)
    return EXIT_OK


def cmd_data_ls(args) -> int:
    ws = _workspace(args)
    rows = []
    for name in ws.dataset_names():
        head = ws.head(name)
        rows.append({"name": name, "head": head.id, "records": head.num_records, "kinds": head.kinds,
                     "versions": len(ws.versions(name)),
                     "source": (head.source or {}).get("path"), "operation": head.operation.get("name")})
    if args.json:
        _print_json(rows)
        return EXIT_OK
    from rich.table import Table

    table = Table(title=f"Datasets in {ws.root}", title_justify="left")
    for col in ("name", "records", "kinds", "versions", "head"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["name"], f"{r['records']:,}", ", ".join(f"{k} {v}" for k, v in r["kinds"].items()),
                      str(r["versions"]), r["head"])
    _console().print(table)
    return EXIT_OK


def cmd_data_show(args) -> int:
    ws = _workspace(args)
    view = ws.open(args.ref)
    if args.search:
        indices = view.search(args.search, start=args.offset, limit=args.limit)
        items = [(i, view.record(i)) for i in indices]
    else:
        items = list(enumerate(view.page(args.offset, args.limit), start=max(0, args.offset)))
    if args.json:
        _print_json({"dataset": view.info.dataset, "version": view.info.id, "total": view.num_rows,
                     "records": [{"index": i, "kind": r.kind, **r.to_row(), "meta": r.meta} for i, r in items]})
        return EXIT_OK
    from rich.panel import Panel

    from studio.rendering import render_record

    out = _console()
    out.print(f"[bold]{view.info.dataset}[/]@{view.info.id}: {view.num_rows:,} record(s)")
    for i, record in items:
        out.print(Panel(render_record(record, highlight=args.search), title=f"#{i} {record.kind}", title_align="left"))
    return EXIT_OK


def cmd_data_stats(args) -> int:
    ws = _workspace(args)
    view = ws.open(args.ref)
    stats = view.stats()
    if args.json:
        _print_json({"dataset": view.info.dataset, "version": view.info.id, **stats})
        return EXIT_OK
    from studio.rendering import render_stats

    out = _console()
    out.print(f"[bold]{view.info.dataset}[/]@{view.info.id}")
    out.print(render_stats(stats))
    return EXIT_OK


def cmd_data_log(args) -> int:
    ws = _workspace(args)
    versions = ws.versions(args.name)
    head = ws.head(args.name).id
    if args.json:
        _print_json([{**v.to_dict(), "head": v.id == head} for v in versions])
        return EXIT_OK
    out = _console()
    for v in reversed(versions):
        origin = f"from {v.source['path']}" if v.source else f"from {v.parent}"
        mark = " (head)" if v.id == head else ""
        out.print(f"[bold]{v.id}[/]{mark}  {v.operation.get('name', '?')} {origin}: "
                  f"{v.num_records:,} record(s), {v.rejects} rejected", markup=True)
    return EXIT_OK


def cmd_data_export(args) -> int:
    from studio.data.convert import get_format
    from studio.data.workflows import export_version

    ws = _workspace(args)
    formats = _formats()
    # Nothing written (every record skipped) raises NothingWritten: main prints it as one error line.
    report = export_version(ws, args.ref, get_format(formats, args.to), Path(args.output), formats=formats)
    if args.json:
        _print_json({"ref": args.ref, "to": args.to, "output": args.output, **report.to_dict()})
    else:
        out = _console()
        out.print(f"exported {report.written} record(s) to {args.output} as {args.to} ({report.skipped} skipped)",
                  markup=False)
        for note in report.notes():
            out.print(f"  [yellow]note:[/] {note}")
    return EXIT_OK


def cmd_data_rejects(args) -> int:
    ws = _workspace(args)
    name, _, version = args.ref.partition("@")
    path = ws.rejects_path(name, version or None)
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] if path.is_file() else []
    if args.json:
        _print_json(rows)
        return EXIT_OK
    out = _console()
    out.print(f"{len(rows)} rejected row(s) in {args.ref}")
    for r in rows:
        where = f"{r['file']}:{r['line']}" if r.get("line") is not None else f"{r['file']}[row {r['index']}]"
        field = f" field {r['field']!r}:" if r.get("field") else ""
        out.print(f"  {where}:{field} {r['message']}", markup=False)
    return EXIT_OK


def cmd_data_rm(args) -> int:
    ws = _workspace(args)
    ws.remove_dataset(args.name)
    print(f"removed dataset {args.name}")
    return EXIT_OK


# --- workspace and app ---------------------------------------------------------------------


def cmd_init(args) -> int:
    from studio.store import Workspace

    ws = Workspace.init(Path(args.dir))
    print(f"workspace ready at {ws.root}")
    return EXIT_OK


def cmd_tui(args) -> int:
    ws = _workspace(args, required=False)
    if ws is None:
        from studio.sample_workspace import ensure_sample_workspace

        ws = ensure_sample_workspace(_formats())
    from studio.tui.app import run_app

    run_app(ws)
    return EXIT_OK


# --- parser --------------------------------------------------------------------------------


def _add_workspace_option(p: argparse.ArgumentParser) -> None:
    # Also accepted after the sub-command; SUPPRESS keeps a global -w from being reset to None.
    p.add_argument("--workspace", "-w", default=argparse.SUPPRESS, help="workspace folder")


def _add_read_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", "-f", help="skip detection and read as this format (see `studio data formats`)")
    p.add_argument("--map", "-m", action="append", metavar="TARGET=SOURCE",
                   help="rename a column before reading, e.g. --map prompt=question (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="studio", description="Alignment and dataset studio. "
                                     "Run without a command to open the terminal app.")
    parser.add_argument("--version", action="version", version=f"studio {__version__}")
    parser.add_argument("--workspace", "-w", help="workspace folder (default: the one containing the current folder)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("init", help="make a workspace in a folder")
    p.add_argument("dir", nargs="?", default=".")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("tui", help="open the terminal app (the default)")
    p.set_defaults(func=cmd_tui)

    plugins = sub.add_parser("plugins", help="list, install and uninstall plugins")
    psub = plugins.add_subparsers(dest="plugins_command", metavar="ACTION", required=True)
    p = psub.add_parser("list", help="loaded plugins with what they provide, status and errors")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_plugins_list)
    p = psub.add_parser("install", help="pip-install a plugin into the studio's environment")
    p.add_argument("spec", nargs="+", help="anything pip accepts: a name, a path, a git URL")
    p.add_argument("--upgrade", "-U", action="store_true")
    p.set_defaults(func=cmd_plugins_install)
    p = psub.add_parser("uninstall", help="remove a plugin (by plugin or distribution name)")
    p.add_argument("name")
    p.set_defaults(func=cmd_plugins_uninstall)

    from studio import cli_curate, cli_generate, cli_model, cli_review, cli_reward, cli_train

    cli_curate.configure(sub)
    cli_review.configure(sub)
    cli_generate.configure(sub)
    cli_model.configure(sub)
    cli_train.configure(sub)
    cli_reward.configure(sub)

    data = sub.add_parser("data", help="detect, convert, import and inspect datasets")
    dsub = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    p = dsub.add_parser("formats", help="the dataset formats plugins provide")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_data_formats)
    p = dsub.add_parser("detect", help="name a file's format and why, count records and rejects")
    p.add_argument("file")
    _add_read_options(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_data_detect)
    p = dsub.add_parser("convert", help="convert a file to another format")
    p.add_argument("file")
    p.add_argument("--to", "-t", required=True, help="target format")
    p.add_argument("--output", "-o", required=True, help="output file; its extension picks the container")
    p.add_argument("--rejects", help="write rejected rows (with file/line/field) to this JSONL file")
    p.add_argument("--strict", action="store_true", help="when any row is rejected, write nothing and exit 3")
    _add_read_options(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_data_convert)
    p = dsub.add_parser("import", help="import a file as a new version of a dataset")
    p.add_argument("file")
    p.add_argument("--name", "-n", help="dataset name (default: from the file name)")
    p.add_argument("--rejects", help="also write rejected rows to this JSONL file")
    p.add_argument("--strict", action="store_true", help="when any row is rejected, store nothing and exit 3")
    _add_read_options(p)
    p.add_argument("--json", action="store_true")
    _add_workspace_option(p)
    p.set_defaults(func=cmd_data_import)
    p = dsub.add_parser("ls", help="datasets in the workspace")
    p.add_argument("--json", action="store_true")
    _add_workspace_option(p)
    p.set_defaults(func=cmd_data_ls)
    p = dsub.add_parser("show", help="print records of NAME or NAME@VERSION")
    p.add_argument("ref")
    p.add_argument("--offset", type=int, default=0)
    p.add_argument("--limit", type=int, default=5)
    p.add_argument("--search", "-s", help="only records containing this text (case-insensitive)")
    p.add_argument("--json", action="store_true")
    _add_workspace_option(p)
    p.set_defaults(func=cmd_data_show)
    p = dsub.add_parser("stats", help="statistics of NAME or NAME@VERSION")
    p.add_argument("ref")
    p.add_argument("--json", action="store_true")
    _add_workspace_option(p)
    p.set_defaults(func=cmd_data_stats)
    p = dsub.add_parser("log", help="version history and lineage of a dataset")
    p.add_argument("name")
    p.add_argument("--json", action="store_true")
    _add_workspace_option(p)
    p.set_defaults(func=cmd_data_log)
    p = dsub.add_parser("export", help="write NAME or NAME@VERSION to a file in any format")
    p.add_argument("ref")
    p.add_argument("--to", "-t", required=True, help="target format")
    p.add_argument("--output", "-o", required=True)
    p.add_argument("--json", action="store_true")
    _add_workspace_option(p)
    p.set_defaults(func=cmd_data_export)
    p = dsub.add_parser("rejects", help="rows an import rejected, with file, line and field")
    p.add_argument("ref")
    p.add_argument("--json", action="store_true")
    _add_workspace_option(p)
    p.set_defaults(func=cmd_data_rejects)
    p = dsub.add_parser("rm", help="delete a dataset and all its versions")
    p.add_argument("name")
    _add_workspace_option(p)
    p.set_defaults(func=cmd_data_rm)
    return parser


def _add_plugin_commands(parser: argparse.ArgumentParser) -> None:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, command in _host().items("command").items():
        if name in sub.choices:
            continue
        p = sub.add_parser(name, help=command.help)
        try:
            command.configure(p)
        except Exception as exc:  # noqa: BLE001 - a broken plugin command must not break the CLI
            _console(stderr=True).print(f"[yellow]warning:[/] command {name!r} could not be set up: {exc}")
            continue
        p.set_defaults(func=command.run)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    from studio.plugins import PluginError

    try:
        # Plugin commands join the parser only when a command is named that we don't know,
        # so built-in commands don't pay for loading every plugin up front.
        known = {"init", "tui", "plugins", "data", "curate", "review", "generate", "providers", "model", "serve",
                 "run", "runs", "recipes", "train", "reward"}
        first = next((a for a in argv if not a.startswith("-")), None)
        if first is not None and first not in known:
            _add_plugin_commands(parser)
        if first in ("curate", "generate"):
            # These parse their own arguments (a recipe path or an action); argparse's
            # REMAINDER would swallow neither a leading --help nor options reliably.
            cut = argv.index(first) + 1
            args = parser.parse_args(argv[:cut])
            args.rest = argv[cut:]
        else:
            args = parser.parse_args(argv)
        if args.command is None:
            return cmd_tui(args)
        code = args.func(args)
        if args.command in ("data", "curate", "generate"):
            _failed_plugins_note()
        return int(code or 0)
    except (PluginError, CliError, ValueError, OSError) as exc:
        from rich.text import Text

        _console(stderr=True).print(Text.assemble(("error: ", "bold red"), str(exc)))
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
