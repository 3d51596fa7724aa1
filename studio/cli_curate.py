"""`studio curate`: run curation recipes and inspect, restore or drop what they removed.

    studio curate RECIPE.yaml [KEY=VALUE ...] [--dry-run] [--limit N] [--json]
    studio curate ops [--json]
    studio curate removed NAME[@V] [--op OP] [--reason TEXT] [--offset N] [--limit N] [--json]
    studio curate restore NAME[@V] [ENTRY ...] [--op OP] [--reason TEXT] [--json]
    studio curate drop NAME[@V] INDEX ... [--note TEXT] [--json]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any



def configure(sub) -> None:
    p = sub.add_parser("curate", help="run a curation recipe; inspect, restore or drop removals",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                       add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=run)


def _parser(action: str) -> argparse.ArgumentParser:
    from studio.cli import action_parser

    p = action_parser("curate", action, "curation recipe YAML", "steps.1.threshold=0.9 dataset=dolly@ab12")
    if action == "run":
        p.add_argument("--dry-run", action="store_true", help="report what each step would do; write nothing")
        p.add_argument("--limit", type=int, help="run on the first N records only (implies --dry-run)")
        p.add_argument("--examples", type=int, default=3, help="example removals per step in --dry-run output")
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
    from studio.cli import run_action

    return run_action(args, __doc__, _parser, {"run": _run_recipe, "ops": _ops, "removed": _removed, "restore": _restore, "drop": _drop})


def _ws(args):
    from studio.cli import _workspace

    return _workspace(args)


def _ops_registry():
    from studio.plugins import get_host

    return get_host().items("curation_op")


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def _ops(args) -> int:
    from studio.config_schema import describe

    ops = _ops_registry()
    rows = [{"name": name, "title": op.title, "category": op.category, "summary": op.summary,
             "fields": [{"name": f.name, "type": f.type_name, "default": f.default, "required": f.required,
                         "help": f.help, "choices": f.choices} for f in describe(op.config_model)]}
            for name, op in sorted(ops.items(), key=lambda kv: (kv[1].category, kv[0]))]
    if args.json:
        _print_json(rows)
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Curation ops", title_justify="left")
    for col in ("op", "category", "summary", "options"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(r["name"], r["category"], r["summary"],
                      ", ".join(f"{f['name']}={f['default']!r}" if not f["required"] else f"{f['name']} (required)"
                                for f in r["fields"]))
    Console().print(table)
    return 0


def _run_recipe(args) -> int:
    from studio.curation.pipeline import load_recipe, run_pipeline

    ws = _ws(args)
    recipe = load_recipe(Path(args.recipe), args.overrides)
    ops = _ops_registry()
    emit, finish = _progress_emitter(args.json)
    try:
        result = run_pipeline(ws, recipe, ops, emit=emit, dry_run=args.dry_run, limit=args.limit,
                              base_dir=Path(args.recipe).resolve().parent, examples=args.examples)
    finally:
        finish()
    if args.json:
        data = result.to_dict()
        if result.dry_run:
            for step, report in zip(data["steps"], result.steps):
                step["examples"] = [_example(e) for e in report.examples[: args.examples]]
        _print_json(data)
        return 0
    from rich.console import Console
    from rich.table import Table

    out = Console()
    table = Table(title=f"curate {result.input.dataset}@{result.input.id[:8]}"
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
            for e in s.examples[: args.examples]:
                out.print(f"  step {s.index} {e['action']} #{e['input_index']}: {e['reason']} {e['detail']}",
                          markup=False)
    return 0


def _example(entry: dict[str, Any]) -> dict[str, Any]:
    return {k: entry[k] for k in ("input_index", "action", "reason", "detail", "duplicate_of", "similarity")}


def _progress_emitter(quiet: bool):
    if quiet or not sys.stderr.isatty():
        return (lambda event: None), (lambda: None)
    from rich.progress import Progress

    progress = Progress(transient=True)
    progress.start()
    tasks: dict[int, Any] = {}

    def emit(event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "step_start":
            tasks[event["step"]] = progress.add_task(f"step {event['step']} {event['op']}", total=event["rows"])
        elif kind == "progress" and event.get("step") in tasks:
            progress.update(tasks[event["step"]], completed=event["done"], total=event["total"])
        elif kind == "step_done" and event.get("index") in tasks:
            progress.update(tasks[event["index"]], completed=event["rows_in"])

    return emit, progress.stop


def _side_rows(args) -> list[tuple[int, dict[str, Any]]]:
    from studio.curation.pipeline import load_side_table

    side = load_side_table(_ws(args), args.ref)
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
        _print_json({"total": len(rows), "entries": [{"entry": i, **r, "detail": json.loads(r["detail"])}
                                                    for i, r in page]})
        return 0
    print(f"{len(rows)} removed/changed row(s) in {args.ref}" + (f"; showing {len(page)}" if len(page) < len(rows) else ""))
    for i, r in page:
        dup = f" duplicates #{r['duplicate_of']}" if r["duplicate_of"] is not None else ""
        sim = f" (similarity {r['similarity']:.2f})" if r["similarity"] is not None else ""
        print(f"  entry {i}: step {r['step']} {r['op']} {r['action']} source #{r['source_index']}: "
              f"{r['reason']}{dup}{sim} {r['detail']}")
    return 0


def _restore(args) -> int:
    from studio.curation.pipeline import apply_overrides

    entries = set(args.entries)
    if args.op or args.reason:
        entries |= {i for i, _ in _side_rows(args)}
    if not entries:
        raise ValueError("name side-table entries to restore, or --op / --reason")
    info = apply_overrides(_ws(args), args.ref, restore=sorted(entries), note=args.note)
    return _report_version(args, info, f"restored {len(entries)} row(s)")


def _drop(args) -> int:
    from studio.curation.pipeline import apply_overrides

    info = apply_overrides(_ws(args), args.ref, drop=args.indices, note=args.note)
    return _report_version(args, info, f"dropped {len(set(args.indices))} row(s)")


def _report_version(args, info, what: str) -> int:
    if args.json:
        _print_json({"dataset": info.dataset, "version": info.id, "records": info.num_records, "parent": info.parent})
    else:
        print(f"{what}: {info.dataset} version {info.id} ({info.num_records:,} records, parent {info.parent})")
    return 0
