"""``studio run`` (any recipe, or a pipeline of recipes) and ``studio runs`` (training runs).

    studio run RECIPE [KEY=VALUE ...] [--check] [--detach] [--launcher accelerate|torchrun] [--nproc N]
    studio runs ls | show RUN | logs RUN | cancel RUN | resume RUN [--detach] | compare RUN RUN

RECIPE is a YAML path or the name of a shipped or workspace recipe (`studio recipes ls`); it may
be a training, curation or generation recipe, or a pipeline (``steps:`` of recipes) whose steps
run in order, ``model: previous`` / ``dataset: previous`` taking what the step before made (a
step with ``id:`` is named later as ``step:<id>``, e.g. ``config.reward_model: step:rm``).
A training run is a subprocess writing into ``<workspace>/runs/<id>/``; Ctrl-C asks it to
checkpoint and stop, and `studio runs resume ID` continues it with the same results as an
uninterrupted run.
"""
from __future__ import annotations

import argparse
from typing import Any

from rich.markup import escape

from studio.cli.shared import (
    EXIT_CHECKS_FAILED, EXIT_ERROR, EXIT_OK, EXIT_STOPPED, Interrupts, add_json_option, add_workspace_option, console,
    dispatch, fmt, print_json, recipe_path, subcommands, workspace,
)

# The first Ctrl-C during `studio run`; the second leaves a training run running in the background.
RUN_STOPPING = "stopping: a training run saves a checkpoint first (Ctrl-C again to leave it running)"
from studio.events import event_name
from studio.extensions import Command
from studio.serving.launch import build_event_text

SHOWN_METRICS = ("loss", "learning_rate", "mean_token_accuracy", "rewards/margins", "rewards/accuracies",
                 "reward", "kl", "logps/chosen", "accuracy", "objective/scores", "objective/kl",
                 "val/eos_rate", "loss/value")


class Printer:
    """Turns run events into terminal lines (stderr): progress on one line, metrics every log step."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.console = console(stderr=True)

    def __call__(self, event: dict[str, Any]) -> None:
        name = event_name(event)
        if name in ("alert", "warning", "error"):
            style = "red" if name == "error" else "yellow"
            # Messages quote tracebacks and paths: "[/...]" in them must print as text, not markup.
            self.console.print(f"[{style}]{name}:[/] {escape(str(event.get('message')))}")
            return
        if name == "pipeline_step":  # even when quiet: which step a later message belongs to
            self.console.print(f"[bold]step {event['step']}[/] of {event['steps']}: {event['recipe']}")
            return
        if self.quiet:
            return
        if name == "run_started":
            self.console.print(f"run {event['run_id']} started (pid {event['pid']}); folder {event['run_dir']}")
        elif name == "start" and "backend" in event:
            self.console.print(f"training {event.get('backend')} on {event.get('train_records')} records "
                               f"({event.get('eval_records')} held out){' — resuming' if event.get('resume') else ''}")
        elif name in ("metrics", "eval"):
            values = event.get("values", {})
            shown = {k: v for k, v in values.items() if k in SHOWN_METRICS or k.startswith("eval_")
                     and not k.endswith(("runtime", "per_second"))}
            if shown:
                text = "  ".join(f"{k}={fmt(v)}" for k, v in shown.items())
                self.console.print(f"step {event.get('step'):>5}  {text}")
        elif name == "checkpoint":
            self.console.print(f"[dim]checkpoint at step {event.get('step')}[/]")
        elif name == "cancelling":
            self.console.print(f"cancelling at step {event.get('step')}: saving a checkpoint")
        elif name == "step_done":
            self.console.print(f"curation step {event['index']} {event['op']}: {event['rows_in']:,} in, "
                               f"{event['removed']:,} removed, {event['rows_out']:,} out")
        elif name == "imported":
            self.console.print(f"imported {event['file']} as {event['dataset']} ({event['records']:,} records)")
        elif name == "serving":
            self.console.print(f"no API configured: serving the embedded model ({event['model']}) on 127.0.0.1")
        elif name == "evaluation" and event.get("stage") == "task_done":
            values = "  ".join(f"{k}={fmt(v.get('value'))}" for k, v in (event.get("metrics") or {}).items())
            self.console.print(f"evaluation {event.get('model')} {event.get('task')}: {values}")
        elif name == "task_done":  # an evaluation step of a pipeline
            values = "  ".join(f"{k}={fmt(v.get('value'))}" for k, v in (event.get("metrics") or {}).items())
            self.console.print(f"{event.get('model')} {event.get('task')}: {values}")
        elif name == "model_build" and build_event_text(event):
            self.console.print(build_event_text(event))


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


# --- studio run ------------------------------------------------------------------------------


def cmd_run(args) -> int:
    from studio.recipe_runs import run_pipeline, run_recipe
    from studio.recipes import load_recipe
    from studio.recipes.catalog import recipe_kind

    ws = workspace(args)
    path = recipe_path(args.recipe, ws)
    kind = recipe_kind(path)
    overrides = list(args.overrides)
    if kind == "train":
        overrides += _launcher_overrides(args)
    elif _launcher_overrides(args) and kind != "pipeline":
        raise ValueError(f"--launcher, --nproc and --name are for training recipes; {path.name} is a {kind} recipe")
    printer = Printer(args.quiet or args.json)
    with Interrupts(RUN_STOPPING) as interrupts:
        try:
            if kind == "pipeline":
                if args.detach:
                    raise ValueError("a pipeline runs its steps one after another: run it without --detach")
                outcomes = run_pipeline(ws, path, overrides + _launcher_overrides(args), emit=printer,
                                        cancelled=interrupts, check=args.check)
            else:
                recipe = load_recipe(path, overrides)
                outcomes = [run_recipe(ws, recipe, emit=printer, cancelled=interrupts, check=args.check,
                                       detach=args.detach)]
        except KeyboardInterrupt:
            console(stderr=True).print("left running; `studio runs ls` shows it")
            return EXIT_ERROR
    for outcome in outcomes:
        _report(outcome, args.json)
    return exit_code(outcomes[-1]) if outcomes else EXIT_ERROR


def exit_code(outcome) -> int:
    if outcome.status == "checks_failed":
        return EXIT_CHECKS_FAILED  # trained, but a learning check failed
    if outcome.status == "stopped":
        return EXIT_STOPPED
    return EXIT_OK if outcome.ok else EXIT_ERROR


def _report(outcome, as_json: bool) -> None:
    if outcome.kind == "curate" and outcome.status != "checked":
        from studio.cli.curate import report_curation

        report_curation(outcome.result, as_json)
    elif outcome.kind == "generate" and outcome.status != "checked":
        from studio.cli.generate import report_generation

        report_generation(outcome.result, as_json)
    elif outcome.kind == "evaluate" and outcome.status != "checked":
        from studio.cli.evaluate import report_evaluation

        report_evaluation(outcome.result, as_json)
    elif outcome.status == "checked":
        plan = outcome.result
        if as_json:
            print_json(plan)
        else:
            for key, value in plan.items():
                console().print(f"{key}: {value}")
            console().print(f"[green]ok[/]: the {outcome.kind} recipe can start")
    elif outcome.status == "started":
        run = outcome.result
        if as_json:
            print_json({"run_id": run.run_id, "run_dir": str(run.path), "pid": run.status().get("pid")})
    else:
        report_training(outcome.result, as_json)


def report_training(run, as_json: bool) -> None:
    status, metrics = run.status(), run.metrics()
    if as_json:
        print_json({"run_id": run.run_id, "run_dir": str(run.path), **status, "checks": metrics.get("checks", [])})
    else:
        out = console()
        state = status.get("status")
        colour = {"completed": "green", "failed": "red"}.get(state, "yellow")
        out.print(f"[{colour}]{state}[/] {run.run_id}  ({run.path})")
        if status.get("reason") and state != "completed":
            out.print(f"  reason: {status['reason']}")
        for check in metrics.get("checks", []):
            mark = "[green]pass[/]" if check["passed"] else "[red]FAIL[/]"
            detail = "; ".join(check["details"]) or _check_text(check)
            out.print(f"  {mark} {check['metric']}: {detail}")
        if status.get("final_dir"):
            use = (f"judge with it: studio reward eval {run.run_id} --data DATA" if status.get("backend") == "reward"
                   else f"serve it: studio serve {run.run_id}")
            out.print(f"  model: {status['final_dir']}  ({use})")
    if status.get("status") in ("cancelled", "interrupted"):
        console(stderr=True).print(f"resume with: studio runs resume {run.run_id}")


def _check_text(check: dict[str, Any]) -> str:
    if "first" in check:
        return f"{fmt(check['first'])} -> {fmt(check['last'])}"
    return f"{fmt(check.get('value'))}"


# --- studio runs -----------------------------------------------------------------------------


def _find(args):
    from studio.training.runs import find_run

    return find_run(workspace(args), args.run_id)


def cmd_runs_ls(args) -> int:
    from studio.training.runs import list_runs

    rows = list_runs(workspace(args))
    if args.json:
        print_json(rows)
        return EXIT_OK
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
                      f"{key}={fmt(metrics[key])}" if key else "", checks)
    console().print(table if rows else "no runs yet: studio run RECIPE (see `studio recipes ls`)")
    return EXIT_OK


def cmd_runs_show(args) -> int:
    from studio.training.alerts import replay

    run = _find(args)
    status = run.status()
    history = run.metric_history()
    latest: dict[str, Any] = {}
    for event in history:
        latest.update(event.get("values", {}))
    events = run.events()
    alerts = [e for e in events if event_name(e) == "alert"] or replay(history)
    info = {"run_id": run.run_id, "run_dir": str(run.path), **status, "latest": latest,
            "checks": run.metrics().get("checks", []), "alerts": alerts, "checkpoints": run.checkpoints(),
            "errors": [e.get("message") for e in events if event_name(e) == "error"]}
    if args.json:
        print_json(info)
        return EXIT_OK
    out = console()
    out.print(f"[bold]{run.run_id}[/]  {status.get('status')}  back-end {status.get('backend')}  "
              f"step {status.get('step') or 0}/{status.get('max_steps')}")
    out.print(f"  model {status.get('model')}  data {status.get('dataset')}  "
              f"({status.get('train_records')} train / {status.get('eval_records')} held out)")
    if status.get("reason"):
        out.print(f"  reason: {status['reason']}")
    if status.get("evaluation"):
        out.print(f"  evaluation (base against tuned): {status['evaluation']}  "
                  f"(studio eval show {status['evaluation']})")
    elif status.get("evaluation_error"):
        out.print(f"  evaluation failed: {status['evaluation_error']}")
    for name in sorted(latest):
        out.print(f"  {name:<32} {fmt(latest[name])}")
    for check in info["checks"]:
        out.print(f"  check {check['metric']}: {'pass' if check['passed'] else 'FAIL ' + '; '.join(check['details'])}")
    for alert in alerts:
        out.print(f"  [yellow]alert[/] {alert.get('message')}")
    for cp in info["checkpoints"]:
        out.print(f"  checkpoint step {cp['step']}{'' if cp['complete'] else ' (incomplete)'}")
    return EXIT_OK


def cmd_runs_logs(args) -> int:
    print(_find(args).log_tail(args.n))
    return EXIT_OK


def cmd_runs_cancel(args) -> int:
    from studio.training import runs

    run = _find(args)
    state = runs.cancel(run)
    if args.json:
        print_json({"run_id": run.run_id, "status": state})
    else:
        console().print(f"{run.run_id}: {state}" + (f" (resume: studio runs resume {run.run_id})"
                                                      if state == "cancelled" else ""))
    return EXIT_OK


def cmd_runs_resume(args) -> int:
    from studio.training import runs

    run = _find(args)
    process = runs.resume(run)
    if args.detach:
        console().print(f"resumed {run.run_id} (pid {process.pid})")
        return EXIT_OK
    printer = Printer(args.quiet or args.json)
    with Interrupts(RUN_STOPPING) as interrupts:
        try:
            for event in runs.follow(run, process, cancelled=interrupts):
                printer(event)
        except KeyboardInterrupt:
            console(stderr=True).print("left running; `studio runs ls` shows it")
            return EXIT_ERROR
    report_training(run, args.json)
    state = run.status()
    if state.get("status") == "completed" and not state.get("checks_passed", True):
        return EXIT_CHECKS_FAILED
    return EXIT_OK if state.get("status") == "completed" else EXIT_ERROR


def cmd_runs_compare(args) -> int:
    from studio.training.compare import compare_runs
    from studio.training.runs import find_run

    ws = workspace(args)
    a, b = find_run(ws, args.run_a), find_run(ws, args.run_b)
    result = compare_runs(a, b)
    if args.json:
        print_json(result)
        return EXIT_OK
    from rich.table import Table

    out = console()
    table = Table(title="metrics", box=None, header_style="bold")
    for column in ("metric", a.run_id, b.run_id, "delta"):
        table.add_column(column)
    for row in result["metrics"]:
        table.add_row(row["name"], fmt(row["a"]), fmt(row["b"]), fmt(row.get("delta", "")))
    out.print(table)
    diff = Table(title="config diff", box=None, header_style="bold")
    for column in ("key", a.run_id, b.run_id):
        diff.add_column(column)
    for row in result["config_diff"]:
        diff.add_row(row["key"], fmt(row["a"]), fmt(row["b"]))
    out.print(diff if result["config_diff"] else "same config")
    return EXIT_OK


def configure_run(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipe", help="recipe YAML or a shipped/workspace recipe's name")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="e.g. training.max_steps=100 adapter.r=16")
    p.add_argument("--detach", action="store_true", help="start a training run and return (`studio runs show`)")
    p.add_argument("--check", action="store_true", help="check recipe and data, print the plan, run nothing")
    p.add_argument("--launcher", choices=("none", "accelerate", "torchrun"), help="multi-process launcher")
    p.add_argument("--nproc", type=int, help="processes for the launcher")
    p.add_argument("--launcher-config", help="accelerate / DeepSpeed / FSDP config file passed through")
    p.add_argument("--name", help="run name")
    p.add_argument("--quiet", "-q", action="store_true", help="print only the outcome")
    add_json_option(p)
    add_workspace_option(p)


def configure_runs(p: argparse.ArgumentParser) -> None:
    actions = subcommands(p, "runs_command", [
        ("ls", "training runs of this workspace, newest first", cmd_runs_ls),
        ("show", "status, metrics, checks, alerts and checkpoints of a run", cmd_runs_show),
        ("logs", "the run process's output", cmd_runs_logs),
        ("cancel", "ask a run to checkpoint and stop", cmd_runs_cancel),
        ("resume", "continue a stopped or killed run from its last checkpoint", cmd_runs_resume),
        ("compare", "metrics side by side and the config diff of two runs", cmd_runs_compare),
    ])
    for action in ("show", "logs", "cancel", "resume"):
        actions[action].add_argument("run_id", metavar="RUN", help="run id, or a unique part of it")
    actions["logs"].add_argument("-n", type=int, default=60, help="lines")
    actions["resume"].add_argument("--detach", action="store_true")
    actions["resume"].add_argument("--quiet", "-q", action="store_true")
    actions["compare"].add_argument("run_a", metavar="RUN")
    actions["compare"].add_argument("run_b", metavar="RUN")


COMMANDS = [
    Command("run", "run a recipe (training, curation, generation) or a pipeline of recipes", configure_run, cmd_run,
            description=__doc__),
    Command("runs", "list, inspect, cancel, resume and compare training runs", configure_runs, dispatch),
]
