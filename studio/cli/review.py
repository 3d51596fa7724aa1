"""``studio review``: review a dataset version by hand from scripts, the same journal the TUI's
review mode writes (edits survive, and either face can pick up where the other left off).

    studio review show dolly@ab12 [--json]        pending edits, flags (committed and pending)
    studio review flag dolly 3 17 --note "odd"    also: unflag delete undelete accept reject swap
    studio review edit dolly 3 --file rec.json    replace a record (canonical record JSON)
    studio review commit dolly --note "pass 1"    write the reviewed version as a new version
    studio review discard dolly                   throw the pending review away
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from studio.cli.shared import EXIT_OK, console, dispatch, print_json, workspace
from studio.extensions import Command

MARK_ACTIONS = {
    "flag": "flag records for a second look (--note says why)",
    "unflag": "remove flags (pending or committed)",
    "delete": "delete records (they go to the side table on commit)",
    "undelete": "take a pending delete back",
    "accept": "accept preference pairs as they are",
    "reject": "reject preference pairs (removed on commit, restorable)",
    "swap": "swap chosen and rejected of preference pairs",
}


def _session(args):
    from studio.curation.review import ReviewSession

    return ReviewSession(workspace(args), args.ref)


def _state_text(session, index: int) -> str:
    state = session.state(index)
    parts = []
    if session.is_flagged(index):
        note = session.flag_note(index)
        parts.append("flagged" + (f" ({note})" if note else "") + ("" if state.flagged else " [committed]"))
    elif state.flagged is False:
        parts.append("unflagged")
    if state.deleted:
        parts.append("deleted")
    if state.verdict:
        parts.append(state.verdict)
    if state.edit is not None:
        parts.append("edited")
    elif state.swapped:
        parts.append("swapped")
    if state.note:
        parts.append(f"note: {state.note}")
    return ", ".join(parts)


def cmd_show(args) -> int:
    session = _session(args)
    entries = session.entries()
    flags = session.flags()
    indices = sorted(set(flags) | {i for i, _ in entries})
    if args.json:
        print_json({
            "dataset": session.dataset, "version": session.version, "records": session.num_rows,
            "journal": str(session.path) if session.path.is_file() else None,
            "pending": session.pending, "counts": session.counts(),
            "records_reviewed": [{"index": i, **session.state(i).to_dict(), "flagged": session.is_flagged(i),
                                  "flag_note": session.flag_note(i)} for i in indices],
            "flags": [{"index": i, "note": note} for i, note in flags.items()],
        })
        return EXIT_OK
    out = console()
    counts = {k: v for k, v in session.counts().items() if v}
    out.print(f"[bold]{session.ref}[/]: {session.num_rows:,} record(s); "
              f"{session.pending} with pending review edits"
              + (f" ({', '.join(f'{k} {v}' for k, v in counts.items())})" if counts else ""))
    if session.path.is_file():
        out.print(f"  journal: {session.path}", markup=False, style="dim")
    for i in indices:
        out.print(f"  #{i}: {_state_text(session, i)}", markup=False)
    if not indices:
        out.print("  nothing pending and no flags", style="dim")
    return EXIT_OK


def cmd_mark(args) -> int:
    session = _session(args)
    action = args.review_command
    method = getattr(session, action)
    if action in ("flag", "delete", "reject"):
        method(args.indices, note=args.note or "")
    else:
        method(args.indices)
    console().print(f"{action}: {len(set(args.indices))} record(s) of {session.ref}; "
                            f"{session.pending} pending (`studio review commit {session.dataset}@{session.version[:8]}`)",
                            markup=False)
    return EXIT_OK


def cmd_edit(args) -> int:
    from studio.curation.review import ReviewError

    session = _session(args)
    try:
        data: Any = json.loads(Path(args.file).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ReviewError(f"{args.file}: not valid JSON: {exc}") from None
    session.edit(args.index, data, note=args.note or "")
    console().print(f"edited record {args.index} of {session.ref}; {session.pending} pending", markup=False)
    return EXIT_OK


def cmd_commit(args) -> int:
    session = _session(args)
    result = session.commit(note=args.note or "")
    info = result.version
    if args.json:
        print_json({"dataset": info.dataset, "version": info.id, "parent": session.version,
                            "records": info.num_records, "new_version": result.new_version,
                            "counts": result.counts, "flags": result.flags})
        return EXIT_OK
    out = console()
    if result.new_version:
        out.print(f"committed the review of {session.ref} as [bold]{info.dataset}@{info.id}[/]: "
                  f"{info.num_records:,} record(s), {result.flags} flag(s)")
    else:
        out.print(f"no rows changed; {result.flags} flag(s) saved with {info.dataset}@{info.id}")
    return EXIT_OK


def cmd_discard(args) -> int:
    session = _session(args)
    pending = session.pending
    session.discard()
    console().print(f"discarded {pending} pending review edit(s) of {session.ref}", markup=False)
    return EXIT_OK


def configure(review: argparse.ArgumentParser) -> None:
    rsub = review.add_subparsers(dest="review_command", metavar="ACTION", required=True)

    def add(name: str, help_text: str):
        p = rsub.add_parser(name, help=help_text)
        p.add_argument("ref", help="NAME or NAME@VERSION (a version id prefix)")
        p.add_argument("--workspace", "-w", default=argparse.SUPPRESS, help="workspace folder")
        return p

    p = add("show", "pending review edits and flags of a version")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_show)
    for action, help_text in MARK_ACTIONS.items():
        p = add(action, help_text)
        p.add_argument("indices", nargs="+", type=int, metavar="INDEX", help="record indices (0-based)")
        p.add_argument("--note", help="why (kept in the journal and the side table)")
        p.set_defaults(func=cmd_mark)
    p = add("edit", "replace a record with a canonical record JSON file")
    p.add_argument("index", type=int, metavar="INDEX")
    p.add_argument("--file", "-f", required=True,
                   help="JSON object: messages, and chosen/rejected, label, tools, meta as needed")
    p.add_argument("--note")
    p.set_defaults(func=cmd_edit)
    p = add("commit", "write the reviewed version as a new version")
    p.add_argument("--note", help="recorded in the version's lineage")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_commit)
    p = add("discard", "throw the pending review of a version away")
    p.set_defaults(func=cmd_discard)


COMMANDS = [Command("review", "review records by hand: flag, edit, delete, accept/reject/swap pairs", configure,
                    dispatch, description=__doc__)]
