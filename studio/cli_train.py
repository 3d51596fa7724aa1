"""Training from the command line.

    studio run RECIPE [KEY=VALUE ...] [--detach] [--check] [--launcher accelerate|torchrun] [--nproc N]
    studio runs ls | show RUN | logs RUN | cancel RUN | resume RUN [--detach] | compare RUN RUN
    studio recipes ls | validate [RECIPE ...] | cp RECIPE DEST
    studio train backends | preview RECIPE [KEY=VALUE ...] [--index N]

RECIPE is a YAML path or the name of a shipped recipe (`studio recipes ls`). A pipeline recipe
(``steps:``) runs its steps in order; ``model: previous`` starts a step from the one before.
A run is a subprocess writing into ``<workspace>/runs/<id>/``; Ctrl-C asks it to checkpoint and
stop, and `studio runs resume ID` continues it with the same results as an uninterrupted run.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def configure(sub) -> None:
    p = sub.add_parser("run", help="start a training run (or a pipeline of runs) from a recipe",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("recipe", help="recipe YAML or shipped recipe name")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="e.g. training.max_steps=100 adapter.r=16")
    p.add_argument("--detach", action="store_true", help="start the run and return (watch with `studio runs show`)")
    p.add_argument("--check", action="store_true", help="check recipe and data, print the plan, train nothing")
    p.add_argument("--launcher", choices=("none", "accelerate", "torchrun"), help="multi-process launcher")
    p.add_argument("--nproc", type=int, help="processes for the launcher")
    p.add_argument("--launcher-config", help="accelerate / DeepSpeed / FSDP config file passed through")
    p.add_argument("--name", help="run name")
    p.add_argument("--quiet", "-q", action="store_true", help="print only the outcome")
    p.add_argument("--json", action="store_true", help="print the outcome as JSON")
    p.add_argument("--workspace", "-w", default=argparse.SUPPRESS)
    p.set_defaults(func=cmd_run)

    runs = sub.add_parser("runs", help="list, inspect, cancel, resume and compare training runs")
    rsub = runs.add_subparsers(dest="runs_command", metavar="ACTION", required=True)
    q = rsub.add_parser("ls", help="runs of this workspace, newest first")
    q.set_defaults(func=cmd_runs_ls)
    for action, helptext, func in (("show", "status, metrics, checks, alerts and checkpoints of a run", cmd_runs_show),
                                   ("logs", "the run process's output", cmd_runs_logs),
                                   ("cancel", "ask a run to checkpoint and stop", cmd_runs_cancel),
                                   ("resume", "continue a stopped or killed run from its last checkpoint",
                                    cmd_runs_resume)):
        q = rsub.add_parser(action, help=helptext)
        q.add_argument("run_id", metavar="RUN")
        q.set_defaults(func=func)
    rsub.choices["logs"].add_argument("-n", type=int, default=60, help="lines")
    rsub.choices["resume"].add_argument("--detach", action="store_true")
    rsub.choices["resume"].add_argument("--quiet", "-q", action="store_true")
    q = rsub.add_parser("compare", help="metrics side by side and the config diff of two runs")
    q.add_argument("run_a", metavar="RUN")
    q.add_argument("run_b", metavar="RUN")
    q.set_defaults(func=cmd_runs_compare)
    for q in rsub.choices.values():
        q.add_argument("--workspace", "-w", default=argparse.SUPPRESS)
        q.add_argument("--json", action="store_true")

    recipes = sub.add_parser("recipes", help="shipped and workspace recipes: list, validate, copy to edit")
    csub = recipes.add_subparsers(dest="recipes_command", metavar="ACTION", required=True)
    q = csub.add_parser("ls", help="recipes with what they do and the command that runs them")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_recipes_ls)
    q = csub.add_parser("validate", help="validate recipes against the plugins' schemas (default: all shipped)")
    q.add_argument("recipes", nargs="*", metavar="RECIPE")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_recipes_validate)
    q = csub.add_parser("cp", help="copy a recipe to edit (repository data paths made absolute)")
    q.add_argument("recipe", metavar="RECIPE")
    q.add_argument("dest", nargs="?", default=".", metavar="DEST")
    q.set_defaults(func=cmd_recipes_cp)
    for q in csub.choices.values():
        q.add_argument("--workspace", "-w", default=argparse.SUPPRESS)

    train = sub.add_parser("train", help="tuning back-ends and the template / loss-mask preview")
    tsub = train.add_subparsers(dest="train_command", metavar="ACTION", required=True)
    q = tsub.add_parser("backends", help="installed tuning back-ends and their options")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_train_backends)
    q = tsub.add_parser("preview", help="render one training record through the chat template, loss tokens marked")
    q.add_argument("recipe", metavar="RECIPE")
    q.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    q.add_argument("--index", type=int, default=0, help="which training record")
    q.add_argument("--json", action="store_true")
    q.add_argument("--workspace", "-w", default=argparse.SUPPRESS)
    q.set_defaults(func=cmd_train_preview)


# --- helpers -------------------------------------------------------------------------------


def _ws(args, required: bool = True):
    from studio.cli import _workspace

    return _workspace(args, required)


def _console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def _error(message: str) -> Exception:
    from studio.cli import CliError

    return CliError(message)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _recipe_path(ref: str, ws=None) -> Path:
    from studio.training.catalog import find_recipe

    return find_recipe(ref, ws)


def _load(args, ws) -> tuple[Path, dict[str, Any]]:
    from studio.training.recipe import read_recipe_file

    path = _recipe_path(args.recipe, ws)
    return path, read_recipe_file(path)


def _launcher_overrides(args) -> list[str]:
    extra = []
    if getattr(args, "launcher", None):
        extra.append(f"launcher.kind={args.launcher}")
    if getattr(args, "nproc", None):
        extra.append(f"launcher.nproc={args.nproc}")
    if getattr(args, "launcher_config", None):
        extra.append(f"launcher.config_file={args.launcher_config}")
    if getattr(args, "name", None):
        extra.append(f"name={args.name}")
    return extra


class _Printer:
    """Turns run events into terminal lines: progress on one line, metrics every log step."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.console = _console(stderr=True)

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event.get("kind")
        if kind in ("alert", "warning", "error"):
            style = "red" if kind == "error" else "yellow"
            self.console.print(f"[{style}]{kind}:[/] {event.get('message')}")
            return
        if self.quiet:
            return
        if kind == "start":
            self.console.print(f"training {event.get('backend')} on {event.get('train_records')} records "
                               f"({event.get('eval_records')} held out){' — resuming' if event.get('resume') else ''}")
        elif kind in ("metrics", "eval"):
            values = event.get("values", {})
            shown = {k: v for k, v in values.items() if k in SHOWN_METRICS or k.startswith("eval_")
                     and not k.endswith(("runtime", "per_second"))}
            if shown:
                text = "  ".join(f"{k}={_fmt(v)}" for k, v in shown.items())
                self.console.print(f"step {event.get('step'):>5}  {text}")
        elif kind == "checkpoint":
            self.console.print(f"[dim]checkpoint at step {event.get('step')}[/]")
        elif kind == "cancelling":
            self.console.print(f"cancelling at step {event.get('step')}: saving a checkpoint")


SHOWN_METRICS = ("loss", "learning_rate", "mean_token_accuracy", "rewards/margins", "rewards/accuracies",
                 "reward", "kl", "logps/chosen", "accuracy")


def _watch(run, process, quiet: bool) -> dict[str, Any]:
    from studio.training import runs

    printer = _Printer(quiet)
    interrupted = False
    try:
        for event in runs.follow(run, process):
            printer(event)
    except KeyboardInterrupt:
        interrupted = True
        _console(stderr=True).print("stopping: the run saves a checkpoint first (Ctrl-C again to leave it running)")
        run.request_cancel()
        try:
            for event in runs.follow(run, process):
                printer(event)
        except KeyboardInterrupt:
            pass
    status = run.status()
    if interrupted or status.get("status") in ("cancelled", "interrupted"):
        _console(stderr=True).print(f"resume with: studio runs resume {run.run_id}")
    return status


def _outcome(run, status: dict[str, Any], as_json: bool) -> int:
    metrics = run.metrics()
    if as_json:
        _print_json({"run_id": run.run_id, "run_dir": str(run.path), **status, "checks": metrics.get("checks", [])})
    else:
        console = _console()
        state = status.get("status")
        colour = {"completed": "green", "failed": "red"}.get(state, "yellow")
        console.print(f"[{colour}]{state}[/] {run.run_id}  ({run.path})")
        if status.get("reason") and state != "completed":
            console.print(f"  reason: {status['reason']}")
        for check in metrics.get("checks", []):
            mark = "[green]pass[/]" if check["passed"] else "[red]FAIL[/]"
            detail = "; ".join(check["details"]) or _check_text(check)
            console.print(f"  {mark} {check['metric']}: {detail}")
        if status.get("final_dir"):
            use = (f"judge with it: studio reward eval {run.run_id} --data DATA" if status.get("backend") == "reward"
                   else f"serve it: studio serve {run.path}")
            console.print(f"  model: {status['final_dir']}  ({use})")
    state = status.get("status")
    if state == "failed":
        return 1
    if state == "completed" and not status.get("checks_passed", True):
        return 3  # trained, but a learning check failed
    return 0 if state in ("completed", "running", "queued") else 1


def _check_text(check: dict[str, Any]) -> str:
    if "first" in check:
        return f"{_fmt(check['first'])} -> {_fmt(check['last'])}"
    return f"{_fmt(check.get('value'))}"


# --- studio run ----------------------------------------------------------------------------


def cmd_run(args) -> int:
    from studio.training.catalog import kind_of

    ws = _ws(args)
    path = _recipe_path(args.recipe, ws)
    if kind_of(path) == "pipeline":
        return _run_pipeline(args, ws, path)
    return _run_one(args, ws, path, list(args.overrides) + _launcher_overrides(args))[0]


def _run_one(args, ws, path: Path, overrides: list[str]):
    """Run one recipe; returns (exit code, the run or None)."""
    from studio.training import runs
    from studio.training.recipe import load_recipe

    recipe = load_recipe(path, overrides)
    if args.check:
        from studio.training.preflight import preflight

        checked = preflight(ws, recipe)
        plan = {"backend": recipe.backend, "model": recipe.model, "dataset": checked.source["ref"],
                "train_records": len(checked.train), "eval_records": len(checked.eval),
                "max_steps": recipe.training.max_steps, "adapter": recipe.adapter.method,
                "config": checked.config.model_dump(), "warnings": checked.warnings}
        if args.json:
            _print_json(plan)
        else:
            for key, value in plan.items():
                _console().print(f"{key}: {value}")
            _console().print("[green]ok[/]: the run can start")
        return 0, None
    run = runs.prepare_run(ws, recipe)
    process = runs.start(run)
    if not args.quiet and not args.json:
        _console(stderr=True).print(f"run {run.run_id} started (pid {process.pid}); folder {run.path}")
    if args.detach:
        if args.json:
            _print_json({"run_id": run.run_id, "run_dir": str(run.path), "pid": process.pid})
        return 0, run
    status = _watch(run, process, args.quiet or args.json)
    return _outcome(run, status, args.json), run


def _run_pipeline(args, ws, path: Path) -> int:
    """Steps run one after another; ``model: previous`` takes the last step's trained model."""
    from studio.training.recipe import read_recipe_file

    data = read_recipe_file(path)
    previous = None
    code = 0
    for number, step in enumerate(data.get("steps") or [], start=1):
        step_path = _recipe_path(str(step["recipe"]), ws) if Path(step["recipe"]).is_absolute() else (
            _pipeline_step(path, step["recipe"], ws))
        overrides = [f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in (step.get("set") or {}).items()]
        if args.check:
            overrides = [o for o in overrides if o != "model=previous"]  # nothing trained to start from
        elif previous is not None:
            overrides = [o if o != "model=previous" else f"model={previous}" for o in overrides]
        elif "model=previous" in overrides:
            raise _error(f"{path}: step {number} starts from `previous` but no step ran before it")
        overrides += list(args.overrides) if number == len(data["steps"]) else []
        _console(stderr=True).print(f"[bold]step {number}[/]: {step_path.name}")
        if args.detach:
            raise _error("a pipeline runs its steps one after another: run it without --detach")
        code, run = _run_one(args, ws, step_path, overrides + _launcher_overrides(args))
        if code != 0 or run is None:
            if args.check and code == 0:
                continue
            return code
        previous = str(run.path)
    return code


def _pipeline_step(pipeline: Path, ref: str, ws) -> Path:
    local = pipeline.parent / ref
    return local if local.is_file() else _recipe_path(ref, ws)


# --- studio runs ---------------------------------------------------------------------------


def _find(args):
    from studio.training.runs import find_run

    return find_run(_ws(args), args.run_id)


def cmd_runs_ls(args) -> int:
    from studio.training.runs import list_runs

    rows = list_runs(_ws(args))
    if args.json:
        _print_json(rows)
        return 0
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    for column in ("run", "back-end", "status", "step", "loss/metric", "checks"):
        table.add_column(column)
    for row in rows:
        metrics = row.get("metrics") or {}
        key = next((k for k in ("eval_loss", "eval_accuracy", "train_loss") if k in metrics), None)
        checks = {True: "pass", False: "FAIL"}.get(row.get("checks_passed"), "")
        table.add_row(row["run_id"], str(row.get("backend", "")), row.get("status", ""),
                      f"{row.get('step') or 0}/{row.get('max_steps') or '?'}",
                      f"{key}={_fmt(metrics[key])}" if key else "", checks)
    _console().print(table if rows else "no runs yet: studio run RECIPE (see `studio recipes ls`)")
    return 0


def cmd_runs_show(args) -> int:
    from studio.training.alerts import replay

    run = _find(args)
    status = run.status()
    history = run.metric_history()
    latest: dict[str, Any] = {}
    for event in history:
        latest.update(event.get("values", {}))
    alerts = [e for e in run.events() if e.get("kind") == "alert"] or replay(history)
    info = {"run_id": run.run_id, "run_dir": str(run.path), **status, "latest": latest,
            "checks": run.metrics().get("checks", []), "alerts": alerts, "checkpoints": run.checkpoints(),
            "errors": [e.get("message") for e in run.events() if e.get("kind") == "error"]}
    if args.json:
        _print_json(info)
        return 0
    console = _console()
    console.print(f"[bold]{run.run_id}[/]  {status.get('status')}  back-end {status.get('backend')}  "
                  f"step {status.get('step') or 0}/{status.get('max_steps')}")
    console.print(f"  model {status.get('model')}  data {status.get('dataset')}  "
                  f"({status.get('train_records')} train / {status.get('eval_records')} held out)")
    if status.get("reason"):
        console.print(f"  reason: {status['reason']}")
    for name in sorted(latest):
        console.print(f"  {name:<32} {_fmt(latest[name])}")
    for check in info["checks"]:
        console.print(f"  check {check['metric']}: {'pass' if check['passed'] else 'FAIL ' + '; '.join(check['details'])}")
    for alert in alerts:
        console.print(f"  [yellow]alert[/] {alert.get('message')}")
    for cp in info["checkpoints"]:
        console.print(f"  checkpoint step {cp['step']}{'' if cp['complete'] else ' (incomplete)'}")
    return 0


def cmd_runs_logs(args) -> int:
    sys.stdout.write(_find(args).log_tail(args.n) + "\n")
    return 0


def cmd_runs_cancel(args) -> int:
    from studio.training import runs

    run = _find(args)
    state = runs.cancel(run)
    if args.json:
        _print_json({"run_id": run.run_id, "status": state})
    else:
        _console().print(f"{run.run_id}: {state}" + (f" (resume: studio runs resume {run.run_id})"
                                                       if state == "cancelled" else ""))
    return 0


def cmd_runs_resume(args) -> int:
    from studio.training import runs

    run = _find(args)
    process = runs.resume(run)
    if args.detach:
        _console().print(f"resumed {run.run_id} (pid {process.pid})")
        return 0
    status = _watch(run, process, args.quiet or args.json)
    return _outcome(run, status, args.json)


def cmd_runs_compare(args) -> int:
    from studio.training.compare import compare_runs
    from studio.training.runs import find_run

    ws = _ws(args)
    a, b = find_run(ws, args.run_a), find_run(ws, args.run_b)
    result = compare_runs(a, b)
    if args.json:
        _print_json(result)
        return 0
    from rich.table import Table

    console = _console()
    table = Table(title="metrics", box=None, header_style="bold")
    for column in ("metric", a.run_id, b.run_id, "delta"):
        table.add_column(column)
    for row in result["metrics"]:
        table.add_row(row["name"], _fmt(row["a"]), _fmt(row["b"]), _fmt(row.get("delta", "")))
    console.print(table)
    diff = Table(title="config diff", box=None, header_style="bold")
    for column in ("key", a.run_id, b.run_id):
        diff.add_column(column)
    for row in result["config_diff"]:
        diff.add_row(row["key"], _fmt(row["a"]), _fmt(row["b"]))
    console.print(diff if result["config_diff"] else "same config")
    return 0


# --- studio recipes ------------------------------------------------------------------------


def cmd_recipes_ls(args) -> int:
    from studio.training.catalog import list_recipes

    rows = list_recipes(_ws(args, required=False))
    if args.json:
        _print_json(rows)
        return 0
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    for column in ("recipe", "kind", "what it does"):
        table.add_column(column, overflow="ellipsis", no_wrap=column != "what it does")
    for row in rows:
        table.add_row(row["name"], row["kind"] + (f" ({row['backend']})" if row.get("backend") else ""),
                      row["description"][:160])
    _console().print(table)
    return 0


def validate_recipe_file(path: Path, host=None) -> list[str]:
    """Schema problems of any recipe kind (no data is read, nothing runs)."""
    from studio.training.catalog import header, kind_of

    kind = kind_of(path)
    command, _ = header(path)
    problems = [] if command.startswith("studio ") else [f"{path.name}: the first comment line should give "
                                                          "the `studio ...` command that runs it"]
    try:
        if kind == "train":
            from studio.training.adapters import adapter_problems
            from studio.training.preflight import backend_config, find_backend
            from studio.training.recipe import load_recipe

            recipe = load_recipe(path)
            backend, _ = find_backend(recipe.backend, host)
            backend_config(backend, recipe)
            problems += [p for p in adapter_problems(recipe.adapter, tuple(backend.adapter_methods), backend.name)
                         if "QLoRA" not in p]  # a QLoRA recipe is valid; it needs a GPU to run
            problems += backend.check(recipe, backend_config(backend, recipe))
        elif kind == "pipeline":
            from studio.training.recipe import read_recipe_file

            for step in read_recipe_file(path).get("steps") or []:
                problems += validate_recipe_file(_pipeline_step(path, step["recipe"], None), host)
        elif kind == "generate":
            from studio.generation.runner import load_recipe as load_generation, resolve

            resolve(None, load_generation(path), host)
        elif kind == "curate":
            from studio.curation.pipeline import load_recipe as load_curation, resolve_steps
            from studio.plugins import get_host

            resolve_steps(load_curation(path), (host or get_host()).items("curation_op"))
        else:
            problems.append(f"{path.name}: not a mapping")
    except (ValueError, KeyError) as exc:
        problems.append(f"{path.name}: {exc}")
    return problems


def cmd_recipes_validate(args) -> int:
    from studio.training.catalog import list_recipes

    ws = _ws(args, required=False)
    paths = [_recipe_path(r, ws) for r in args.recipes] or [Path(r["path"]) for r in list_recipes(None)]
    results = {str(p): validate_recipe_file(p) for p in paths}
    if args.json:
        _print_json(results)
    else:
        for path, problems in results.items():
            _console().print(f"{'[green]ok[/]  ' if not problems else '[red]bad[/] '} {path}")
            for problem in problems:
                _console().print(f"     {problem}")
    return 0 if all(not p for p in results.values()) else 1


def cmd_recipes_cp(args) -> int:
    from studio.training.catalog import copy_recipe

    dest = copy_recipe(args.recipe, Path(args.dest), _ws(args, required=False))
    _console().print(f"copied to {dest}; run it with: studio run {dest}")
    return 0


# --- studio train --------------------------------------------------------------------------


def cmd_train_backends(args) -> int:
    from studio.config_schema import describe
    from studio.plugins import get_host

    host = get_host()
    rows = []
    for name, backend in sorted(host.items("backend").items()):
        rows.append({"name": name, "title": backend.title, "summary": backend.summary, "data": backend.data_kind,
                     "adapters": list(backend.adapter_methods),
                     "options": [{"name": s.name, "type": s.type_name, "default": s.default, "help": s.help}
                                 for s in describe(backend.config_model)]})
    if args.json:
        _print_json(rows)
        return 0
    console = _console()
    for row in rows:
        console.print(f"[bold]{row['name']}[/]  {row['summary']}  (data: {row['data']}; adapters: "
                      f"{', '.join(row['adapters'])})")
        for option in row["options"]:
            console.print(f"    {option['name']:<24} {option['type']:<10} {option['help']} "
                          f"[dim](default {option['default']!r})[/]")
    return 0


def cmd_train_preview(args) -> int:
    from studio.training.preview import preview
    from studio.training.recipe import load_recipe

    ws = _ws(args)
    recipe = load_recipe(_recipe_path(args.recipe, ws), args.overrides)
    shown = preview(ws, recipe, args.index)
    if args.json:
        _print_json(shown)
        return 0
    from rich.text import Text

    text = Text()
    for segment in shown["segments"]:
        text.append(segment["text"], style="bold green underline" if segment["loss"] else "dim")
    console = _console()
    console.print(f"record {shown['index']} of {shown['records']}: {shown['tokens']} tokens, "
                  f"{shown['loss_tokens']} carry loss (bold green)")
    console.print(text)
    return 0
