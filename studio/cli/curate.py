"""``studio curate``: run curation recipes and inspect, restore or drop what they removed.

    studio curate RECIPE [KEY=VALUE ...] [--dry-run] [--limit N] [--engine local|ray [--address ADDR]] [--json]
    studio curate ops [--json]
    studio curate removed NAME[@V] [--op OP] [--reason TEXT] [--offset N] [--limit N] [--json]
    studio curate restore NAME[@V] [ENTRY ...] [--op OP] [--reason TEXT] [--json]
    studio curate drop NAME[@V] INDEX ... [--note TEXT] [--json]

RECIPE is a YAML path or the name of a shipped or workspace recipe (`studio recipes ls`). Steps
are numbered from 0, as `steps.N.option=VALUE` overrides count them; rows are named by their
row number in the recipe's input dataset (`source #N`).
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from studio.cli.shared import (
    EXIT_OK, action_parser, console, host, list_items, print_json, recipe_path, run_action, workspace,
)
from studio.extensions import Command


def _parser(action: str) -> argparse.ArgumentParser:
    p = action_parser("curate", action, "curation recipe", "steps.1.threshold=0.9 dataset=dolly@ab12")
    if action == "run":
        p.add_argument("--dry-run", action="store_true", help="report what each step would do; write nothing")
        p.add_argument("--limit", type=int, help="run on the first N records only (implies --dry-run)")
        p.add_argument("--examples", type=int, default=3, help="example removals per step in --dry-run output")
        p.add_argument("--engine", choices=("local", "ray"),
                       help="where the steps run: this machine's cores (local) or Ray Data (ray); "
                            "default: the recipe's engine (local)")
        p.add_argument("--address", help="with --engine ray: a running Ray cluster (HOST:PORT, or auto); "
                                         "default: a local Ray instance sized to this machine")
    elif action == "removed":
        p.add_argument("ref")
        p.add_argument("--op")
        p.add_argument("--reason")
        p.add_argument("--offset", type=int, default=0)
        p.add_argument("--limit", type=int, default=20)
    elif action == "restore":
        p.add_argument("ref")
        p.add_argument("entries", nargs="*", type=int, help="side-table entry numbers (see `curate removed`)")
        p.add_argument("--op", help="restore every entry of this op")
        p.add_argument("--reason", help="restore every entry whose reason contains this text")
        p.add_argument("--note", default="")
    elif action == "drop":
        p.add_argument("ref")
        p.add_argument("indices", nargs="+", type=int, help="record numbers of the version to drop")
        p.add_argument("--note", default="")
    return p


def run(args) -> int:
    return run_action(args, __doc__, _parser,
                      {"run": _run_recipe, "ops": _ops, "removed": _removed, "restore": _restore, "drop": _drop})


def _ops(args) -> int:
    return list_items(args, "curation_op", "Curation ops", ("name", "category", "summary"),
                      order=lambda r: (r["category"] or "", r["name"]))


def _run_recipe(args) -> int:
    from studio.curation.engines import run_curation
    from studio.recipes import load_recipe

    ws = workspace(args)
    path = recipe_path(args.recipe, ws)
    recipe = load_recipe(path, args.overrides, kind="curate")
    emit, finish = _progress_emitter(args.json)
    try:
        result = run_curation(ws, recipe, host().items("curation_op"), engine=args.engine, address=args.address,
                              emit=emit, dry_run=args.dry_run, limit=args.limit, base_dir=path.resolve().parent,
                              examples=args.examples)
    finally:
        finish()
    report_curation(result, args.json, args.examples)
    return EXIT_OK


def report_curation(result, as_json: bool, examples: int = 3) -> None:
    """What a curation run did, step by step; a dry run also shows example removals."""
    if as_json:
        data = result.to_dict()
        if result.dry_run:
            for step, report in zip(data["steps"], result.steps):
                step["examples"] = [_example(e) for e in report.examples[:examples]]
        print_json(data)
        return
    from rich.table import Table

    out = console()
    engine = result.engine
    where = "" if engine.get("name") == "local" else \
        f" on {engine['name']} ({engine.get('nodes', 1)} node(s), {engine.get('cpus', '?')} CPUs)"
    table = Table(title=f"curate {result.input.dataset}@{result.input.id[:8]}{where}"
                        + (" (dry run)" if result.dry_run else ""), title_justify="left")
    for col in ("step", "op", "in", "removed", "changed", "out", "seconds", "reasons"):
        table.add_column(col, overflow="fold")
    for s in result.steps:
        table.add_row(str(s.index), s.op, f"{s.rows_in:,}", f"{s.removed:,}", f"{s.changed:,}", f"{s.rows_out:,}",
                      f"{s.seconds:.2f}", ", ".join(f"{k} {v}" for k, v in s.by_reason.items()))
    out.print(table)
    if result.version is not None:
        out.print(f"wrote [bold]{result.version.dataset}[/] version {result.version.id} "
                  f"({result.version.num_records:,} records); `studio curate removed {result.version.dataset}` "
                  f"lists the {result.side_rows:,} removed/changed rows")
    for name, info in result.outputs.items():
        out.print(f"split [bold]{name}[/]: {info.dataset} version {info.id} ({info.num_records:,} records)")
    if result.dry_run:
        for s in result.steps:
            for e in s.examples[:examples]:
                dup = f" (duplicates source #{e['duplicate_of']})" if e.get("duplicate_of") is not None else ""
                out.print(f"  step {s.index} {e['action']} source #{e['source_index']}: {e['reason']}{dup} "
                          f"{e['detail']}", markup=False)


def _example(entry: dict[str, Any]) -> dict[str, Any]:
    return {k: entry[k] for k in ("source_index", "action", "reason", "detail", "duplicate_of", "similarity")}


def _progress_emitter(quiet: bool):
    if quiet or not sys.stderr.isatty():
        return (lambda event: None), (lambda: None)
    from rich.progress import Progress

    from studio.events import event_name

    progress = Progress(transient=True)
    progress.start()
    tasks: dict[int, Any] = {}

    def emit(event: dict[str, Any]) -> None:
        name = event_name(event)
        if name == "step_start":
            tasks[event["step"]] = progress.add_task(f"step {event['step']} {event['op']}", total=event["rows"])
        elif name == "progress" and event.get("step") in tasks:
            progress.update(tasks[event["step"]], completed=event["done"], total=event["total"])
        elif name == "step_done" and event.get("index") in tasks:
            progress.update(tasks[event["index"]], completed=event["rows_in"])
        elif name == "engine":
            engine = event["engine"]
            progress.console.print(f"engine: {engine['name']} at {engine['address']} ({engine['nodes']} node(s), "
                                   f"{engine['cpus']} CPUs)")
        elif name == "engine_note":
            progress.console.print(f"step {event['step']}: {event['note']}", markup=False)
        elif name == "imported":
            progress.console.print(f"imported {event['file']} as {event['dataset']} ({event['records']:,} records, "
                                   f"{event['rejects']} rejected)")

    return emit, progress.stop


def _side_rows(args) -> list[tuple[int, dict[str, Any]]]:
    from studio.curation.pipeline import load_side_table

    side = load_side_table(workspace(args), args.ref)
    rows = []
    for i, row in enumerate(side.data.table.select(["step", "op", "action", "reason", "detail", "source_index",
                                                    "duplicate_of", "similarity"]).to_pylist()):
        if args.op and row["op"] != args.op:
            continue
        if args.reason and args.reason.lower() not in row["reason"].lower():
            continue
        rows.append((i, row))
    return rows


def _removed(args) -> int:
    rows = _side_rows(args)
    page = rows[args.offset: args.offset + args.limit]
    if args.json:
        print_json({"total": len(rows), "entries": [{"entry": i, **r, "detail": json.loads(r["detail"])}
                                                   for i, r in page]})
        return EXIT_OK
    print(f"{len(rows)} removed/changed row(s) in {args.ref}" + (f"; showing {len(page)}" if len(page) < len(rows) else ""))
    for i, r in page:
        dup = f" duplicates #{r['duplicate_of']}" if r["duplicate_of"] is not None else ""
        sim = f" (similarity {r['similarity']:.2f})" if r["similarity"] is not None else ""
        print(f"  entry {i}: step {r['step']} {r['op']} {r['action']} source #{r['source_index']}: "
              f"{r['reason']}{dup}{sim} {r['detail']}")
    return EXIT_OK


def _restore(args) -> int:
    from studio.curation.pipeline import amend_curated

    entries = set(args.entries)
    if args.op or args.reason:
        entries |= {i for i, _ in _side_rows(args)}
    if not entries:
        raise ValueError("name side-table entries to restore, or --op / --reason")
    info = amend_curated(workspace(args), args.ref, restore=sorted(entries), note=args.note)
    return _report_version(args, info, f"restored {len(entries)} row(s)")


def _drop(args) -> int:
    from studio.curation.pipeline import amend_curated

    info = amend_curated(workspace(args), args.ref, drop=args.indices, note=args.note)
    return _report_version(args, info, f"dropped {len(set(args.indices))} row(s)")


def _report_version(args, info, what: str) -> int:
    if args.json:
        print_json({"dataset": info.dataset, "version": info.id, "records": info.num_records, "parent": info.parent})
    else:
        print(f"{what}: {info.dataset} version {info.id} ({info.num_records:,} records, parent {info.parent})")
    return EXIT_OK


COMMANDS = [Command("curate", "run a curation recipe; inspect, restore or drop removals", lambda p: None, run,
                    raw_args=True, description=__doc__)]
