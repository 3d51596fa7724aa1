"""``studio eval``: registered evaluators, evaluation runs, reports and comparisons.

    studio eval tasks [--json]
    studio eval run --model MODEL [--model MODEL2 ...] --task NAME=PATH [--task ...] [--num-fewshot K]
                    [--fewshot-from PATH] [--limit N] [--batch-size B] [--judge PROVIDER]
                    [--allow-code-execution] [--name NAME] [--check] [--json]
    studio eval RECIPE [KEY=VALUE ...] [--check] [--json]
    studio eval ls [--json]
    studio eval show ID [--flips N] [--json]
    studio eval compare ID[:LABEL] ID[:LABEL] [--flips N] [--json]

The first model is the base; every other model is compared with it: per metric the delta, a
paired test (McNemar for 0/1 metrics, a paired bootstrap otherwise) and the items that flipped.
Per-item results are cached by model fingerprint, so a re-run or a killed run run again scores
only what is missing. RECIPE is a YAML path or the name of a shipped or workspace recipe
(`studio recipes ls`); NAME comes from `studio eval tasks`; PATH is a file or a folder.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any

from studio.cli.shared import (
    EXIT_OK, EXIT_STOPPED, CliError, Interrupts, action_parser, console, fmt, host, list_items, print_json,
    print_table, recipe_path, workspace,
)
from studio.events import event_name
from studio.extensions import Command

ACTIONS = ("tasks", "run", "ls", "show", "compare")


def _parser(action: str) -> argparse.ArgumentParser:
    if action == "recipe":
        p = action_parser("eval", "run", "evaluation recipe", "limit=50 tasks.0.num_fewshot=5")
        p.add_argument("--check", action="store_true", help="check models, tasks and data; score nothing")
        return p
    # `run` here takes flags; action_parser's "run" is the recipe form above.
    p = action_parser("eval", action if action != "run" else "run flags", "", "")
    p.prog = f"studio eval {action}"
    if action == "run":
        p.add_argument("--model", action="append", required=True, metavar="MODEL",
                       help="embedded[:size], a run, a model folder, a hub id or endpoint:URL#name; the first is "
                            "the base (repeat to compare)")
        p.add_argument("--label", action="append", metavar="LABEL", help="display name per --model, in order")
        p.add_argument("--task", action="append", required=True, metavar="NAME=PATH",
                       help="a task from `studio eval tasks` and its data file or folder (repeatable)")
        p.add_argument("--num-fewshot", type=int, metavar="K", help="solved examples before each item "
                                                                     "(default: each task's lm-eval default)")
        p.add_argument("--fewshot-from", metavar="PATH", help="file the few-shot examples come from (GSM8K)")
        p.add_argument("--limit", type=int, metavar="N", help="score only the first N items of each task")
        p.add_argument("--batch-size", type=int, default=16, metavar="B")
        p.add_argument("--judge", metavar="PROVIDER",
                       help="OpenAI-compatible judge (a saved provider) for judged tasks")
        p.add_argument("--allow-code-execution", action="store_true",
                       help="run model-written code (HumanEval) in the sandbox; off by default")
        p.add_argument("--name", help="evaluation name (part of its id)")
        p.add_argument("--check", action="store_true", help="check models, tasks and data; score nothing")
    elif action == "show":
        p.add_argument("report_id", metavar="ID")
        p.add_argument("--flips", type=int, default=0, metavar="N", help="list up to N flipped items per comparison")
    elif action == "compare":
        p.add_argument("base", metavar="ID[:LABEL]", help="report (and model) taken as the base")
        p.add_argument("tuned", metavar="ID[:LABEL]", help="report (and model) compared with it")
        p.add_argument("--flips", type=int, default=0, metavar="N", help="list up to N flipped items per metric")
    return p


def run(args) -> int:
    rest = list(args.rest)
    if not rest or rest[0] in ("-h", "--help"):
        print(__doc__.strip())
        return EXIT_OK
    action = rest[0] if rest[0] in ACTIONS else "recipe"
    sub_args = _parser(action).parse_args(rest[1:] if action != "recipe" else rest)
    if getattr(args, "workspace", None) and not sub_args.workspace:
        sub_args.workspace = args.workspace
    return {"tasks": _tasks, "run": _run_flags, "recipe": _run_recipe, "ls": _ls, "show": _show,
            "compare": _compare}[action](sub_args)


def _tasks(args) -> int:
    return list_items(args, "evaluator", "Evaluation tasks", ("name", "uses", "default_fewshot", "summary"))


# --- running -----------------------------------------------------------------------------------


def recipe_from_flags(args):
    """An evaluation recipe from `studio eval run` flags; a flag no named task takes is refused."""
    from studio.recipes.evaluate import EvalRecipe

    evaluators = host().items("evaluator")
    tasks = []
    for spec in args.task:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--task {spec!r}: expected NAME=PATH (a task from `studio eval tasks` and its data)")
        entry: dict[str, Any] = {"task": name, "path": path}
        fields = getattr(evaluators.get(name), "config_model", None)
        fields = fields.model_fields if fields is not None else {}
        for flag, key, value in (("--num-fewshot", "num_fewshot", args.num_fewshot),
                                 ("--fewshot-from", "fewshot_from", args.fewshot_from)):
            if value is not None and key in fields:
                entry[key] = value
        tasks.append(entry)
    for flag, key, value in (("--num-fewshot", "num_fewshot", args.num_fewshot),
                             ("--fewshot-from", "fewshot_from", args.fewshot_from)):
        if value is not None and not any(key in t for t in tasks):
            raise ValueError(f"{flag}: none of the tasks ({', '.join(t['task'] for t in tasks)}) takes it")
    return EvalRecipe(models=args.model, labels=args.label, tasks=tasks, name=args.name, limit=args.limit,
                      batch_size=args.batch_size, judge=args.judge, allow_code_execution=args.allow_code_execution)


def _run_flags(args) -> int:
    return _evaluate(args, recipe_from_flags(args))


REJECTS_SHOWN = 10


def _run_recipe(args) -> int:
    from studio.recipes import load_recipe

    ws = workspace(args)
    recipe = load_recipe(recipe_path(args.recipe, ws), args.overrides, kind="evaluate")
    return _evaluate(args, recipe, ws)


def _evaluate(args, recipe, ws=None) -> int:
    from studio.evaluation.runner import check_evaluation, run_evaluation

    ws = ws or workspace(args)
    if args.check:
        plan = check_evaluation(ws, recipe, host())
        if args.json:
            print_json(plan)
        else:
            for model in plan["models"]:
                console().print(f"model {model['label']}: {model['ref']} ({model['location']})")
            for task in plan["tasks"]:
                console().print(f"task {task['task']}: {task['items']} items")
            console().print("[green]ok[/]: the evaluation can start")
        return EXIT_OK
    if recipe.allow_code_execution is False and any(t.task == "humaneval" for t in recipe.tasks):
        console(stderr=True).print("[yellow]note:[/] generated code is not run unless you pass "
                                   "--allow-code-execution (it runs model-written programs, sandboxed)")
    emit, finish = progress_emitter(args.json)
    stop = Interrupts("stopping after the current item: what is scored stays cached (Ctrl-C again to stop at once)")
    try:
        with stop:
            summary = run_evaluation(ws, recipe, emit=emit, cancelled=stop, host=host())
    except RuntimeError as exc:  # a model or judge endpoint that failed for good, a sandbox that could not start
        raise CliError(f"evaluation failed: {exc}; what was scored is cached, so running it again continues") from None
    finally:
        finish()
    for task, rejects in (summary.get("rejected") or {}).items():
        err = console(stderr=True)
        err.print(f"[yellow]{task}:[/] {len(rejects)} row(s) skipped (the others were scored):")
        for reject in rejects[:REJECTS_SHOWN]:
            err.print(f"  {reject['message']}")
        if len(rejects) > REJECTS_SHOWN:
            err.print(f"  ... and {len(rejects) - REJECTS_SHOWN} more (`studio eval show ID --json` lists them all)")
    report_evaluation(summary, args.json)
    return EXIT_STOPPED if summary["status"] == "stopped" else EXIT_OK


def progress_emitter(quiet: bool):
    """A Rich progress bar per model and task on stderr (nothing when quiet or not a terminal)."""
    if quiet or not sys.stderr.isatty():
        return (lambda event: None), (lambda: None)
    from rich.progress import Progress

    progress = Progress(transient=True, console=console(stderr=True))
    progress.start()
    bars: dict[tuple[str, str], Any] = {}

    def emit(event: dict[str, Any]) -> None:
        name = event_name(event)
        key = (event.get("model", ""), event.get("task", ""))
        if name == "task_started":
            bars[key] = progress.add_task(f"{key[0]} {key[1]}", total=event["total"], completed=event["cached"])
        elif name == "progress" and key in bars:
            progress.update(bars[key], completed=event["done"], total=event["total"])
        elif name in ("warning", "error"):
            progress.console.print(f"{name}: {event.get('message')}", markup=False)

    return emit, progress.stop


# --- output --------------------------------------------------------------------------------------


def json_result(summary: dict[str, Any]) -> dict[str, Any]:
    """What --json prints: the base model's metrics by task, each metric under its own name with
    ``NAME_stderr`` and ``n``; with several models, every model's and the comparisons."""

    def flat(metrics: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, value in metrics.items():
            out[name] = value.get("value")
            out[f"{name}_stderr"] = value.get("stderr")
            out.setdefault("n", value.get("n"))
        return out

    labels = [m["label"] for m in summary["models"]]
    by_label = {label: {task: flat(per.get(label, {})) for task, per in summary["tasks"].items()} for label in labels}
    data = {"id": summary["id"], "status": summary["status"], "tasks": by_label[labels[0]] if labels else {}}
    if len(labels) > 1:
        data["models"] = {label: {"tasks": tasks} for label, tasks in by_label.items()}
        data["comparisons"] = summary.get("comparisons", [])
    for key in ("pairwise", "overlap"):
        if summary.get(key):
            data[key] = summary[key]
    if "scored" in summary:
        data["scored"] = summary["scored"]  # items scored now per model and task; the rest came from the cache
    data["path"] = summary.get("path")
    return data


def _value(metric: dict[str, Any] | None) -> str:
    if not metric or metric.get("value") is None:
        return "-"
    stderr = metric.get("stderr")
    return f"{metric['value']:.4f}" + (f" ±{stderr:.4f}" if isinstance(stderr, float) else "")


def _p(value: Any) -> str:
    return "-" if value is None else ("<0.001" if value < 0.001 else f"{value:.3f}")


def print_task_tables(tasks: dict[str, Any], labels: list[str], comparisons: list[dict[str, Any]]) -> None:
    """One compact table per task: a column per model, then per compared model the delta, the
    p-value and a mark when the change is significant (* at 0.05)."""
    by_key = {(c["task"], c["tuned"], c["metric"]): c for c in comparisons}
    for task, per_model in tasks.items():
        metrics = list(dict.fromkeys(m for label in labels for m in per_model.get(label, {})))
        columns = ["metric", *labels]
        for label in labels[1:]:
            suffix = f" {label}" if len(labels) > 2 else ""
            columns += [f"delta{suffix}", f"p{suffix}"]
        rows = []
        for metric in metrics:
            row = [metric, *(_value(per_model.get(label, {}).get(metric)) for label in labels)]
            for label in labels[1:]:
                c = by_key.get((task, label, metric))
                if c is None or c.get("delta") is None:
                    row += ["-", "-"]
                    continue
                mark = " *" if c["significant"] else ""
                row += [f"{c['delta']:+.4f}{mark}", _p(c.get("p_value"))]
            rows.append(row)
        print_table(task, columns, rows)


def report_evaluation(summary: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(json_result(summary))
        return
    out = console()
    labels = [m["label"] for m in summary["models"]]
    print_task_tables(summary["tasks"], labels, summary.get("comparisons", []))
    if len(labels) > 1:
        out.print("[dim]delta: model minus the base (first column); * significant at 0.05 (McNemar for 0/1 "
                  "metrics, paired bootstrap otherwise)[/]")
    for label, entry in (summary.get("overlap") or {}).items():
        for task, info in (entry.get("tasks") or {}).items():
            if info.get("share") is not None:
                out.print(f"overlap: {info['items_overlapping']} of {info['items']} {task} items "
                          f"({info['share']:.1%}) share {entry['n']}-grams with {label}'s training data "
                          f"{entry['dataset']}")
    colour = {"completed": "green", "stopped": "yellow"}.get(summary["status"], "red")
    out.print(f"[{colour}]{summary['status']}[/] evaluation {summary['id']}  ({summary.get('path')})")
    if summary["status"] == "stopped":
        console(stderr=True).print("run the same command again to continue: scored items are cached")


# --- reports ---------------------------------------------------------------------------------------


def _ls(args) -> int:
    from studio.evaluation.reports import list_reports

    rows = list_reports(workspace(args))
    if args.json:
        print_json(rows)
        return EXIT_OK
    if not rows:
        console().print("no evaluations yet: studio eval run --model embedded --task NAME=PATH "
                        "(see `studio eval tasks`)")
        return EXIT_OK
    table_rows = []
    for row in rows:
        primary = "; ".join(f"{task} " + " ".join(fmt(v) for v in values.values())
                            for task, values in row["primary"].items())
        table_rows.append([row["id"], row["status"] or "?", ", ".join(row["models"]), primary or "-"])
    print_table("Evaluations", ("id", "status", "models", "primary metric"), table_rows)
    return EXIT_OK


def _show(args) -> int:
    from studio.evaluation.reports import find_report, flip_details

    report = find_report(workspace(args), args.report_id)
    metrics, status = report.metrics(), report.status()
    if args.flips:
        for c in metrics.get("comparisons", []):
            c["flips"] = flip_details(report, report, c, args.flips)
    if args.json:
        print_json({"id": report.run_id, "path": str(report.path), "status": status, "config": report.config(),
                    **{k: v for k, v in metrics.items() if k not in ("id", "status")}})
        return EXIT_OK
    out = console()
    out.print(f"[bold]{report.run_id}[/]  {status.get('status')}  ({report.path})")
    for model in report.config().get("models", []):
        out.print(f"  {model['label']}: {model['ref']}  fingerprint {model.get('fingerprint')}")
    if metrics:
        print_task_tables(metrics.get("tasks", {}), report.labels(), metrics.get("comparisons", []))
        _print_flips(metrics.get("comparisons", []))
    return EXIT_OK


def _print_flips(comparisons: list[dict[str, Any]]) -> None:
    out = console()
    for c in comparisons:
        for side in ("gained", "lost"):
            for item in (c.get("flips") or {}).get(side, []):
                out.print(f"  {c['task']} {c['metric']} {side} {item['id']}: base {item['base_prediction']!r} -> "
                          f"{c['tuned']} {item['tuned_prediction']!r} (target {item['target']!r})", markup=False)


def _side(ws, spec: str):
    from studio.evaluation.reports import find_report

    report_id, _, label = spec.partition(":")
    return find_report(ws, report_id), (label or None)


def _compare(args) -> int:
    from studio.evaluation.reports import compare, flip_details

    ws = workspace(args)
    (base, base_label), (tuned, tuned_label) = _side(ws, args.base), _side(ws, args.tuned)
    result = compare(base, tuned, base_label, tuned_label)
    if args.flips:
        for c in result["comparisons"]:
            c["flips"] = flip_details(base, tuned, c, args.flips)
    if args.json:
        print_json(result)
        return EXIT_OK
    a, b = result["base"], result["tuned"]
    rows = []
    for c in result["comparisons"]:
        rows.append([c["task"], c["metric"], fmt(c["base_value"]), fmt(c["tuned_value"]),
                     "-" if c["delta"] is None else f"{c['delta']:+.4f}" + (" *" if c["significant"] else ""),
                     _p(c.get("p_value")), f"+{len(c['gained'])}/-{len(c['lost'])}"])
    print_table(f"{a['report']}:{a['label']} -> {b['report']}:{b['label']}",
                ("task", "metric", "base", "tuned", "delta", "p", "flips"), rows)
    for note in result["notes"]:
        console().print(f"[yellow]note:[/] {note}")
    _print_flips(result["comparisons"])
    return EXIT_OK


COMMANDS = [Command("eval", "evaluate models on benchmarks; list, show and compare reports", lambda p: None, run,
                    raw_args=True, description=__doc__)]
