"""`studio generate` and `studio providers`: synthetic data through any OpenAI-compatible API.

    studio generate RECIPE [KEY=VALUE ...] [--estimate] [--budget X] [--json]
    studio generate ls [--json]                      registered generators and their options
    studio generate runs [--json]                    runs in this workspace
    studio generate show RUN [--json]                one run: status, counts, cost, failed rows
    studio generate resume RUN                       continue a stopped or killed run
    studio generate retry RUN                        send only the failed requests again

    studio providers ls [--json]
    studio providers add NAME --base-url URL --model M [--api-key-env VAR] [--price-input P] ...
    studio providers test NAME                       one tiny request, to check URL, key and model
    studio providers rm NAME

RECIPE is a YAML path or the name of a shipped or workspace recipe (`studio recipes ls`).
Re-running or resuming never pays twice: answers are journaled per request in the workspace.
API keys are read from the environment variable a provider names, never stored.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from studio.cli.shared import (
    EXIT_ERROR, EXIT_OK, EXIT_STOPPED, CliError, action_parser, console, dispatch, list_items, print_json, print_table,
    recipe_path, run_action, workspace,
)
from studio.events import event_name
from studio.extensions import Command
from studio.serving.launch import build_event_text


def configure_providers(providers: argparse.ArgumentParser) -> None:
    psub = providers.add_subparsers(dest="providers_command", metavar="ACTION", required=True)
    q = psub.add_parser("ls", help="saved providers")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=_providers_ls)
    q = psub.add_parser("add", help="save (or replace) a provider in the workspace")
    q.add_argument("name")
    q.add_argument("--base-url", required=True, help="e.g. https://api.openai.com/v1 or http://127.0.0.1:8000/v1")
    q.add_argument("--model", required=True)
    q.add_argument("--api-key-env", help="environment variable that holds the key")
    q.add_argument("--header", action="append", default=[], metavar="NAME=VALUE")
    q.add_argument("--price-input", type=float, help="price per 1M prompt tokens of --model")
    q.add_argument("--price-output", type=float, help="price per 1M completion tokens of --model")
    q.add_argument("--concurrency", type=int)
    q.add_argument("--rpm", type=int)
    q.add_argument("--tpm", type=int)
    q.add_argument("--timeout", type=float)
    q.set_defaults(func=_providers_add)
    q = psub.add_parser("test", help="send one tiny request through a provider")
    q.add_argument("name")
    q.set_defaults(func=_providers_test)
    q = psub.add_parser("rm", help="forget a saved provider")
    q.add_argument("name")
    q.set_defaults(func=_providers_rm)
    for q in psub.choices.values():
        q.add_argument("--workspace", "-w")


def _parser(action: str) -> argparse.ArgumentParser:
    p = action_parser("generate", action, "generation recipe", "config.target_instructions=50 budget=0.5")
    if action == "run":
        p.add_argument("--estimate", action="store_true", help="print the cost estimate and stop")
        p.add_argument("--budget", type=float, help="hard cost cap (overrides the recipe's)")
        p.add_argument("--run-id", help="name the run (resumes it when it exists)")
    elif action in ("show", "resume", "retry"):
        p.add_argument("run_id")
    return p


def run(args) -> int:
    return run_action(args, __doc__, _parser, {"run": _run_recipe, "ls": _ls, "runs": _runs, "show": _show, "resume": _resume,
            "retry": _retry})


def _ls(args) -> int:
    return list_items(args, "generator", "Generators", ("name", "seeds", "produces", "summary"))


def _estimate_line(est: dict[str, Any]) -> str:
    cost = f"${est['cost']:.4f}" if est.get("priced") else "unpriced (no price set for this model)"
    notes = f" — {'; '.join(est['notes'])}" if est.get("notes") else ""
    return (f"estimate: {est['requests']:,} requests, {est['prompt_tokens']:,} prompt + "
            f"{est['completion_tokens']:,} completion tokens, cost {cost}{notes}")


class _ProgressView:
    """Rich progress bar fed by run events (stderr, so --json output stays clean)."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.progress = None
        self.task = None
        self.console = console(stderr=True)

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event_name(event)
        if kind == "estimate":
            self.console.print(_estimate_line(event))
            return
        if kind == "serving":
            self.console.print(f"no API configured: serving the embedded model ({event['model']}) on 127.0.0.1")
            return
        if kind == "model_build":  # the embedded model is built on first use
            if build_event_text(event):
                self.console.print(build_event_text(event))
            return
        if kind == "stopping":
            self.console.print(f"[yellow]stopping:[/] {event['reason']}")
            return
        if self.quiet:
            return
        if kind == "start":
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            total = event["estimate"].get("requests") or None
            self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                                     TextColumn("{task.completed}/{task.total} requests"),
                                     TextColumn("{task.fields[stats]}"), TimeElapsedColumn(),
                                     console=self.console, transient=False)
            self.task = self.progress.add_task(event["generator"], total=total, stats="")
            self.progress.start()
        elif kind == "progress" and self.progress is not None:
            done = event["answered"] + event["cached"] + event["failed"]
            stats = (f"rows {event['rows']}  {event['requests_per_s']:.1f} req/s  ${event['cost']:.4f}  "
                     f"cached {event['cached']}  retries {event['retries']}  429s {event['throttled']}  "
                     f"failed {event['failed']}")
            total = self.progress.tasks[0].total
            self.progress.update(self.task, completed=done, total=max(total or 0, done) or None, stats=stats)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()


def _execute(args, ws, recipe, run_id=None, retry_failed=False) -> int:
    from studio.generation.runner import run_generation

    view = _ProgressView(quiet=args.json)
    try:
        summary = run_generation(ws, recipe, emit=view, run_id=run_id, retry_failed=retry_failed,
                                 estimate_only=getattr(args, "estimate", False))
    finally:
        view.close()
    report_generation(summary, args.json)
    return {"completed": EXIT_OK, "estimated": EXIT_OK, "stopped": EXIT_STOPPED}.get(summary.status, EXIT_ERROR)


def report_generation(summary, as_json: bool) -> None:
    """How a generation run ended: rows, failures, requests, cost, and what to do next."""
    if as_json:
        print_json(summary.to_dict())
    elif summary.status != "estimated":
        m = summary.meter
        out = console()
        colour = {"completed": "green", "stopped": "yellow"}.get(summary.status, "red")
        out.print(f"[{colour}]{summary.status}[/]{': ' + summary.reason if summary.reason else ''}")
        out.print(f"rows made {summary.rows}, failed rows {summary.failed_rows}; requests sent "
                  f"{m.get('answered', 0)}, from journal {m.get('cached', 0)}, failed {m.get('failed', 0)}, "
                  f"retries {m.get('retries', 0)}; cost ${m.get('cost', 0):.4f}")
        if summary.version:
            out.print(f"stored as {summary.output}@{summary.version[:8]} (`studio data show {summary.output}`)")
        if summary.failed_rows:
            out.print(f"failed rows kept: `studio generate show {summary.run_id}`; "
                      f"send them again with `studio generate retry {summary.run_id}`")
        elif summary.status == "stopped":
            out.print(f"continue with `studio generate resume {summary.run_id}`")


def _run_recipe(args) -> int:
    from studio.recipes import load_recipe

    ws = workspace(args)
    recipe = load_recipe(recipe_path(args.recipe, ws), args.overrides, kind="generate")
    if args.budget is not None:
        recipe = recipe.model_copy(update={"budget": args.budget})
    return _execute(args, ws, recipe, run_id=args.run_id)


def _folder(ws, run_id: str):
    from studio.generation.runner import RunFolder, runs_dir

    folder = RunFolder(runs_dir(ws) / run_id)
    if not (folder.path / "recipe.yaml").is_file():
        raise CliError(f"no generation run {run_id!r}; `studio generate runs` lists them")
    return folder


def _resume(args) -> int:
    ws = workspace(args)
    folder = _folder(ws, args.run_id)
    return _execute(args, ws, folder.recipe(), run_id=args.run_id)


def _retry(args) -> int:
    ws = workspace(args)
    folder = _folder(ws, args.run_id)
    return _execute(args, ws, folder.recipe(), run_id=args.run_id, retry_failed=True)


def _runs(args) -> int:
    from studio.generation.runner import list_runs

    runs = list_runs(workspace(args))
    if args.json:
        print_json(runs)
        return 0
    print_table("Generation runs", ("run", "status", "output", "rows", "failed", "cost"), [
        [r["run_id"], r.get("status", "?"), str(r.get("output") or "-"), str(r.get("rows", "-")),
         str(r.get("failed_rows", "-")), f"${r.get('cost') or 0:.4f}"] for r in runs])
    return 0


def _show(args) -> int:
    folder = _folder(workspace(args), args.run_id)
    data = {"run_id": args.run_id, **folder.status(), "failed": folder.read("failed.jsonl")}
    if args.json:
        print_json(data)
        return 0
    out = console()
    for key in ("status", "reason", "generator", "output", "version", "rows", "failed_rows", "cost"):
        if data.get(key) not in (None, ""):
            out.print(f"[bold]{key}[/]: {data[key]}")
    for row in data["failed"][:50]:
        where = f"seed {row['source_index']}" if row.get("source_index") is not None else "row"
        out.print(f"[red]failed[/] {where} {row.get('stage') or ''}: {row['error']}")
    return 0


# --- providers ----------------------------------------------------------------------------


def _providers_ls(args) -> int:
    from studio.generation.provider import load_providers

    ws = workspace(args)
    providers = load_providers(Path(ws.root))
    rows = [p.model_dump() for p in providers.values()]
    if args.json:
        print_json(rows)
        return 0
    table = []
    for p in providers.values():
        limits = f"{p.concurrency} at once" + (f", {p.rpm} rpm" if p.rpm else "") + (f", {p.tpm} tpm" if p.tpm else "")
        prices = ", ".join(f"{m}: in {pr.input:g} out {pr.output:g}" for m, pr in p.prices.items()) or "-"
        table.append([p.name, p.base_url or "(embedded model on 127.0.0.1)", p.model, p.api_key_env or "-", limits,
                      prices])
    print_table("Providers", ("name", "base_url", "model", "key from", "limits", "prices /1M"), table)
    return 0


def _providers_add(args) -> int:
    from studio.generation.provider import Price, ProviderConfig, save_provider

    ws = workspace(args)
    body: dict[str, Any] = {"name": args.name, "base_url": args.base_url, "model": args.model,
                            "api_key_env": args.api_key_env}
    headers = {}
    for pair in args.header:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"--header {pair!r} must look like NAME=VALUE")
        headers[key] = value
    if headers:
        body["headers"] = headers
    if args.price_input is not None or args.price_output is not None:
        body["prices"] = {args.model: Price(input=args.price_input or 0, output=args.price_output or 0)}
    for key in ("concurrency", "rpm", "tpm", "timeout"):
        if getattr(args, key) is not None:
            body[key] = getattr(args, key)
    provider = ProviderConfig(**{k: v for k, v in body.items() if v is not None})
    save_provider(Path(ws.root), provider)
    console().print(f"saved provider {provider.name} ({provider.base_url}, model {provider.model})")
    return 0


def _providers_rm(args) -> int:
    import yaml

    from studio.generation.provider import PROVIDERS_FILE

    ws = workspace(args)
    path = Path(ws.root) / PROVIDERS_FILE
    data = (yaml.safe_load(path.read_text()) if path.is_file() else None) or {}
    if args.name not in (data.get("providers") or {}):
        raise ValueError(f"no saved provider {args.name!r}")
    del data["providers"][args.name]
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    console().print(f"removed provider {args.name}")
    return 0


def _providers_test(args) -> int:
    import time

    from openai import OpenAI

    from studio.generation.provider import load_providers

    ws = workspace(args)
    providers = load_providers(Path(ws.root))
    if args.name not in providers:
        raise ValueError(f"no saved provider {args.name!r}")
    p = providers[args.name]
    if p.embedded:
        console().print("the embedded provider serves the studio's own model; nothing to test")
        return 0
    client = OpenAI(base_url=p.base_url, api_key=p.api_key(), default_headers=p.headers or None, max_retries=0,
                    timeout=p.timeout)
    started = time.monotonic()
    reply = client.chat.completions.create(model=p.model, max_tokens=8,
                                           messages=[{"role": "user", "content": "Say OK."}])
    seconds = time.monotonic() - started
    text = (reply.choices[0].message.content or "").strip()
    console().print(f"[green]ok[/] {p.name}: {p.model} answered {text[:60]!r} in {seconds:.2f} s")
    return 0


COMMANDS = [
    Command("generate", "run a generation recipe; list generators and runs; resume or retry", lambda p: None, run,
            raw_args=True, description=__doc__),
    Command("providers", "saved OpenAI-compatible endpoints (keys stay in the environment)", configure_providers,
            dispatch),
]
