"""``studio data``: detect, convert, import, export and inspect datasets."""
from __future__ import annotations

import json
from pathlib import Path

from studio.cli.shared import (
    EXIT_OK, EXIT_REJECTS, add_json_option, add_workspace_option, console, dispatch, host, list_items, print_json,
    workspace,
)
from studio.extensions import Command


def _formats(args=None):
    """The registered formats, with ``--option KEY=VALUE`` applied to the formats that take it."""
    formats = host().formats()
    if args is None or not getattr(args, "option", None):
        return formats
    from studio.data.format_options import configure_formats

    configured, _ = configure_formats(formats, args.option, only=getattr(args, "format", None))
    return configured


def _note_unused_options(args, detected: str) -> None:
    """An --option the file's format does not take changed nothing: say so rather than stay silent."""
    if not getattr(args, "option", None):
        return
    from studio.data.format_options import configure_formats

    _, takers = configure_formats(host().formats(), args.option, only=args.format)
    if detected not in takers:
        console(stderr=True).print(
            f"note: --option {' '.join(args.option)} was not used: {args.file} reads as {detected}, and only "
            f"{', '.join(sorted(takers))} takes it", markup=False)


def _column_map(args) -> dict[str, str]:
    from studio.data.reading import parse_column_map

    return parse_column_map(getattr(args, "map", None))


def _report_rejects(rejects, as_json: bool) -> None:
    if not rejects or as_json:
        return
    from studio.data.convert import summarise_rejects

    err = console(stderr=True)
    err.print(f"[yellow]{len(rejects)} row(s) rejected:[/]")
    for line in summarise_rejects(rejects):
        err.print(f"  {line}", markup=False)


def cmd_formats(args) -> int:
    return list_items(args, "format", "Dataset formats", ("name", "title", "plugin", "summary"))


def cmd_detect(args) -> int:
    from studio.data.convert import read_file, reject_json

    result = read_file(Path(args.file), _formats(args), override=args.format, column_map=_column_map(args))
    d = result.detection
    _note_unused_options(args, d.format)
    kinds: dict[str, int] = {}
    for r in result.records:
        kinds[r.kind] = kinds.get(r.kind, 0) + 1
    if args.json:
        print_json({"file": args.file, **d.to_dict(), "records": len(result.records), "kinds": kinds,
                    "rejects": len(result.rejects), "reject_details": reject_json(result.rejects[:1000])})
        return EXIT_OK
    out = console()
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


def cmd_convert(args) -> int:
    from studio.data.convert import reject_json
    from studio.data.reading import RejectedRows
    from studio.data.workflows import convert_file

    try:
        result, report = convert_file(Path(args.file), _formats(args), args.to, Path(args.output),
                                      override=args.format, column_map=_column_map(args),
                                      rejects_out=Path(args.rejects) if args.rejects else None, strict=args.strict)
    except RejectedRows as exc:
        # --strict: no output file was written; list every reject, then exit 3.
        if args.json:
            print_json({"from": exc.detection.format, "to": args.to, "output": None, "written": 0,
                        "rejects": len(exc.rejects), "reject_details": reject_json(exc.rejects[:1000])})
        else:
            _report_rejects(exc.rejects, False)
            console(stderr=True).print(f"error: nothing written: {exc} and --strict is on", markup=False)
        return EXIT_REJECTS
    _note_unused_options(args, result.detection.format)
    if args.json:
        print_json({"from": result.detection.format, "to": args.to, "output": args.output,
                    "read": len(result.records), "rejects": len(result.rejects), **report.to_dict()})
    else:
        out = console()
        out.print(f"{args.file} ({result.detection.format}) -> {args.output} ({args.to}): "
                  f"{report.written} written, {report.skipped} skipped, {len(result.rejects)} rejected", markup=False)
        for note in report.notes():
            out.print(f"  [yellow]note:[/] {note}")
        _report_rejects(result.rejects, False)
    return EXIT_OK


def cmd_import(args) -> int:
    from studio.data.convert import reject_json
    from studio.data.reading import RejectedRows
    from studio.data.workflows import import_file

    ws = workspace(args)
    try:
        result = import_file(ws, Path(args.file), _formats(args), name=args.name, override=args.format,
                             column_map=_column_map(args), rejects_out=Path(args.rejects) if args.rejects else None,
                             strict=args.strict)
    except RejectedRows as exc:
        # --strict: nothing was stored; list every reject, then exit 3.
        if args.json:
            print_json({"dataset": None, "version": None, "stored": False, "records": 0,
                        "format": exc.detection.format, "rejects": len(exc.rejects),
                        "reject_details": reject_json(exc.rejects[:1000])})
        else:
            _report_rejects(exc.rejects, False)
            console(stderr=True).print(f"error: nothing stored: {exc} and --strict is on", markup=False)
        return EXIT_REJECTS
    v = result.version
    _note_unused_options(args, result.detection.format)
    if args.json:
        print_json({"dataset": v.dataset, "version": v.id, "stored": True, "records": v.num_records,
                    "format": result.detection.format, "reason": result.detection.reason,
                    "rejects": len(result.rejects), "reject_details": reject_json(result.rejects[:1000])})
    else:
        console().print(f"imported {v.num_records} record(s) into [bold]{v.dataset}[/] version {v.id} "
                        f"as {result.detection.format} ({len(result.rejects)} rejected)")
        _report_rejects(result.rejects, False)
    return EXIT_OK


def cmd_ls(args) -> int:
    ws = workspace(args)
    rows = []
    for name in ws.dataset_names():
        head = ws.head(name)
        rows.append({"name": name, "head": head.id, "records": head.num_records, "kinds": head.kinds,
                     "versions": len(ws.versions(name)),
                     "source": (head.source or {}).get("path"), "operation": head.operation.get("name")})
    if args.json:
        print_json(rows)
        return EXIT_OK
    from rich.table import Table

    table = Table(title=f"Datasets in {ws.root}", title_justify="left")
    for col in ("name", "records", "kinds", "versions", "head"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["name"], f"{r['records']:,}", ", ".join(f"{k} {v}" for k, v in r["kinds"].items()),
                      str(r["versions"]), r["head"])
    console().print(table)
    return EXIT_OK


def cmd_show(args) -> int:
    ws = workspace(args)
    view = ws.open(args.ref)
    if args.search:
        indices = view.search(args.search, start=args.offset, limit=args.limit)
        items = [(i, view.record(i)) for i in indices]
    else:
        items = list(enumerate(view.page(args.offset, args.limit), start=max(0, args.offset)))
    if args.json:
        print_json({"dataset": view.info.dataset, "version": view.info.id, "total": view.num_rows,
                    "records": [{"index": i, "kind": r.kind, **r.to_row(), "meta": r.meta} for i, r in items]})
        return EXIT_OK
    from rich.panel import Panel

    from studio.rendering import render_record

    out = console()
    out.print(f"[bold]{view.info.dataset}[/]@{view.info.id}: {view.num_rows:,} record(s)")
    for i, record in items:
        out.print(Panel(render_record(record, highlight=args.search), title=f"#{i} {record.kind}", title_align="left"))
    return EXIT_OK


def cmd_stats(args) -> int:
    ws = workspace(args)
    view = ws.open(args.ref)
    stats = view.stats()
    if args.json:
        print_json({"dataset": view.info.dataset, "version": view.info.id, **stats})
        return EXIT_OK
    from studio.rendering import render_stats

    out = console()
    out.print(f"[bold]{view.info.dataset}[/]@{view.info.id}")
    out.print(render_stats(stats))
    return EXIT_OK


def cmd_log(args) -> int:
    ws = workspace(args)
    versions = ws.versions(args.name)
    head = ws.head(args.name).id
    if args.json:
        print_json([{**v.to_dict(), "head": v.id == head} for v in versions])
        return EXIT_OK
    out = console()
    for v in reversed(versions):
        origin = f"from {v.source['path']}" if v.source else f"from {v.parent}"
        mark = " (head)" if v.id == head else ""
        out.print(f"[bold]{v.id}[/]{mark}  {v.operation.get('name', '?')} {origin}: "
                  f"{v.num_records:,} record(s), {v.rejects} rejected", markup=True)
    return EXIT_OK


def cmd_export(args) -> int:
    from studio.data.convert import get_format
    from studio.data.workflows import export_version

    ws = workspace(args)
    formats = _formats()
    # Nothing written (every record skipped) raises NothingWritten: main prints it as one error line.
    report = export_version(ws, args.ref, get_format(formats, args.to), Path(args.output), formats=formats)
    if args.json:
        print_json({"ref": args.ref, "to": args.to, "output": args.output, **report.to_dict()})
    else:
        out = console()
        out.print(f"exported {report.written} record(s) to {args.output} as {args.to} ({report.skipped} skipped)",
                  markup=False)
        for note in report.notes():
            out.print(f"  [yellow]note:[/] {note}")
    return EXIT_OK


def cmd_rejects(args) -> int:
    ws = workspace(args)
    name, _, version = args.ref.partition("@")
    path = ws.rejects_path(name, version or None)
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] if path.is_file() else []
    if args.json:
        print_json(rows)
        return EXIT_OK
    out = console()
    out.print(f"{len(rows)} rejected row(s) in {args.ref}")
    for r in rows:
        where = f"{r['file']}:{r['line']}" if r.get("line") is not None else f"{r['file']}[row {r['index']}]"
        field = f" field {r['field']!r}:" if r.get("field") else ""
        out.print(f"  {where}:{field} {r['message']}", markup=False)
    return EXIT_OK


def cmd_rm(args) -> int:
    ws = workspace(args)
    ws.remove_dataset(args.name)
    print(f"removed dataset {args.name}")
    return EXIT_OK


def _add_read_options(p) -> None:
    p.add_argument("--format", "-f", help="skip detection and read as this format (see `studio data formats`)")
    p.add_argument("--map", "-m", action="append", metavar="TARGET=SOURCE",
                   help="rename a column before reading, e.g. --map prompt=question (repeatable)")
    p.add_argument("--option", action="append", metavar="KEY=VALUE",
                   help="a reading option of the format that takes it, e.g. --option pairs=best_each for "
                        "scored rows (see `studio data formats`; repeatable)")


def configure(parser) -> None:
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    def action(name, help_text, func, workspace_option=True):
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_json_option(p)
        if workspace_option:
            add_workspace_option(p)
        p.set_defaults(func=func)
        return p

    action("formats", "the dataset formats plugins provide", cmd_formats, workspace_option=False)
    p = action("detect", "name a file's format and why, count records and rejects", cmd_detect, False)
    p.add_argument("file")
    _add_read_options(p)
    p = action("convert", "convert a file to another format", cmd_convert, False)
    p.add_argument("file")
    p.add_argument("--to", "-t", required=True, help="target format")
    p.add_argument("--output", "-o", required=True, help="output file; its extension picks the container")
    p.add_argument("--rejects", help="write rejected rows (with file/line/field) to this JSONL file")
    p.add_argument("--strict", action="store_true", help="when any row is rejected, write nothing and exit 3")
    _add_read_options(p)
    p = action("import", "import a file as a new version of a dataset", cmd_import)
    p.add_argument("file")
    p.add_argument("--name", "-n", help="dataset name (default: from the file name)")
    p.add_argument("--rejects", help="also write rejected rows to this JSONL file")
    p.add_argument("--strict", action="store_true", help="when any row is rejected, store nothing and exit 3")
    _add_read_options(p)
    action("ls", "datasets in the workspace", cmd_ls)
    p = action("show", "print records of NAME or NAME@VERSION", cmd_show)
    p.add_argument("ref")
    p.add_argument("--offset", type=int, default=0)
    p.add_argument("--limit", type=int, default=5)
    p.add_argument("--search", "-s", help="only records containing this text (case-insensitive)")
    p = action("stats", "statistics of NAME or NAME@VERSION", cmd_stats)
    p.add_argument("ref")
    p = action("log", "version history and lineage of a dataset", cmd_log)
    p.add_argument("name")
    p = action("export", "write NAME or NAME@VERSION to a file in any format", cmd_export)
    p.add_argument("ref")
    p.add_argument("--to", "-t", required=True, help="target format")
    p.add_argument("--output", "-o", required=True)
    p = action("rejects", "rows an import rejected, with file, line and field", cmd_rejects)
    p.add_argument("ref")
    p = action("rm", "delete a dataset and all its versions", cmd_rm)
    p.add_argument("name")


COMMANDS = [Command("data", "detect, convert, import and inspect datasets", configure, dispatch)]
