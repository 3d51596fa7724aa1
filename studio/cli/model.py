"""`studio model` (build the embedded model, inspect model folders) and `studio serve`.

    studio model init [--size tiny|small] [--seed N] [--pretrain-steps N] [--force] OUT
    studio model info MODEL [--json]
    studio model export MODEL OUT [--no-merge]
    studio serve [MODEL] [--host 127.0.0.1] [--port 8000] [--name NAME] [--trust-remote-code]
                 [--api-key-env VAR] [--threads N] [--max-batch 16] [--max-queued 64] [--engine studio|vllm]

MODEL is ``embedded`` (the default), ``embedded:small``, a model or adapter folder, a run folder
(its final/ or model/ is served), a run id of the workspace (or a unique part of it) or a hub id.

The studio's server batches: requests that arrive while others generate join them at the next step
(up to --max-batch at once); beyond --max-queued waiting ones it answers 429 with Retry-After.
GET /metrics gives queue depth, batch size and tokens/s in Prometheus' text format.
--engine vllm hands a model folder to vLLM's OpenAI server instead (python -m
vllm.entrypoints.openai.api_server --model DIR --host H --port P --served-model-name NAME); it needs
vllm installed and a CUDA GPU, and an adapter merged first (studio model export RUN merged/).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from studio.cli.shared import EXIT_OK, CliError, dispatch, print_json, workspace
from studio.extensions import Command

LOOPBACK_HOSTS = ("localhost", "::1")
DEFAULT_MAX_BATCH = 16  # studio.serving.model_server's defaults, without importing the server here
DEFAULT_MAX_QUEUED = 64


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number


def _runs_workspace(args):
    """Opened only when a run id has to be looked up (see studio.models.loading)."""
    return lambda: workspace(args)


def configure_model(model: argparse.ArgumentParser) -> None:
    msub = model.add_subparsers(dest="model_command", metavar="ACTION", required=True)
    p = msub.add_parser("init", help="build the embedded model (tokenizer, chat template, Llama) into a folder")
    p.add_argument("out", help="folder to write the model into")
    p.add_argument("--size", choices=("tiny", "small"), default="tiny")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pretrain-steps", type=int, help="pretraining steps on the bundled samples (0: none; "
                                                        "default: the size's own)")
    p.add_argument("--force", action="store_true", help="write into OUT even when it is not empty")
    p.set_defaults(func=cmd_model_init)
    p = msub.add_parser("info", help="what a model folder, run or embedded model holds")
    p.add_argument("path", metavar="MODEL")
    p.add_argument("--workspace", "-w", default=argparse.SUPPRESS, help="workspace whose runs MODEL may name")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_model_info)
    p = msub.add_parser("export", help="save a run's model in Hugging Face format, LoRA merged into the base")
    p.add_argument("source", metavar="MODEL", help="a run id or folder, an adapter or model folder")
    p.add_argument("out", help="new folder to write")
    p.add_argument("--no-merge", dest="merge", action="store_false", help="keep an adapter as an adapter")
    p.add_argument("--trust-remote-code", action="store_true")
    p.add_argument("--json", action="store_true")
    p.add_argument("--workspace", "-w", default=argparse.SUPPRESS, help="workspace whose runs MODEL may name")
    p.set_defaults(func=cmd_model_export)


def configure_serve(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", nargs="?", default="embedded",
                   help="embedded (default), embedded:small, a model/adapter/run folder, a run id or a hub id")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    p.add_argument("--port", type=int, default=8000, help="0 picks a free port (printed)")
    p.add_argument("--name", help="model name clients send (default: the folder name or MODEL)")
    p.add_argument("--trust-remote-code", action="store_true", help="run custom model code shipped with MODEL")
    p.add_argument("--api-key-env", metavar="VAR", help="require the key held in this environment variable")
    p.add_argument("--engine", choices=("studio", "vllm"), default="studio",
                   help="studio (default): the built-in batching server; vllm: vLLM's OpenAI server on a "
                        "model folder (needs vllm and a CUDA GPU)")
    p.add_argument("--threads", type=_positive, metavar="N",
                   help="torch CPU threads (default: half the cores, at most 4; more thrash on a busy machine)")
    p.add_argument("--max-batch", type=_positive, default=DEFAULT_MAX_BATCH, metavar="N",
                   help=f"generations decoded together (default {DEFAULT_MAX_BATCH})")
    p.add_argument("--max-queued", type=_positive, default=DEFAULT_MAX_QUEUED, metavar="N",
                   help=f"generations that may wait for a slot; beyond them: 429 (default {DEFAULT_MAX_QUEUED})")
    # Used by studio.serving.launch: the server exits when its parent closes our stdin (or dies).
    p.add_argument("--exit-with-stdin", action="store_true", help=argparse.SUPPRESS)
    # Used by studio.serving.launch too: build progress as JSON event lines on stdout.
    p.add_argument("--events", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--workspace", "-w", default=argparse.SUPPRESS, help="workspace whose runs MODEL may name")


# --- model init -----------------------------------------------------------------------------


def cmd_model_init(args) -> int:
    from studio.models.embedded import build_embedded_model

    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not args.force:
        raise CliError(f"{out} exists and is not empty (pass --force to write into it)")
    if args.pretrain_steps is not None and args.pretrain_steps < 0:
        raise CliError("--pretrain-steps must be 0 or more")

    def progress(event: dict[str, Any]) -> None:
        if event["event"] == "pretrain":
            print(f"  pretraining step {event['step']}/{event['steps']}: loss {event['loss']:.3f}",
                  file=sys.stderr, flush=True)
        elif event["event"] == "corpus":
            print(f"  corpus: {event['conversations']} conversation(s), {event['texts']} text(s), "
                  f"{event['characters']:,} characters from {event['files']} sample file(s)",
                  file=sys.stderr, flush=True)

    build_embedded_model(out, size=args.size, seed=args.seed, pretrain_steps=args.pretrain_steps, emit=progress)
    info = json.loads((out / "studio_model.json").read_text())
    loss = f" (final loss {info['final_loss']:.3f})" if info["final_loss"] is not None else ""
    print(f"built {info['size']} embedded model in {out}: {info['parameters']:,} parameters, "
          f"vocab {info['vocab_size']:,}, {info['pretrain_steps']} pretraining step(s){loss}, "
          f"{info['seconds']:.1f} s")
    return 0


# --- model info -----------------------------------------------------------------------------


def cmd_model_info(args) -> int:
    from studio.models.inspect import model_summary

    summary = model_summary(args.path, _runs_workspace(args))
    if args.json:
        print_json(summary)
        return EXIT_OK
    lines = [f"{summary['path']} ({summary['kind']})"]
    if summary.get("model_type"):
        lines.append(f"  architecture: {summary['model_type']}, hidden {summary.get('hidden_size')}, "
                     f"{summary.get('num_hidden_layers')} layer(s), {summary.get('num_attention_heads')} head(s), "
                     f"context {summary.get('max_position_embeddings')}")
    if summary.get("vocab_size"):
        lines.append(f"  vocab: {summary['vocab_size']:,}")
    if summary["parameters"] is not None:
        lines.append(f"  parameters: {summary['parameters']:,}")
    if summary.get("adapter"):
        a = summary["adapter"]
        lines.append(f"  adapter: {a['peft_type']} r={a['r']} on {a['base_model_name_or_path']}")
    t = summary["tokenizer"]
    lines.append(f"  tokens: bos {t['bos']}, eos {t['eos']}, pad {t['pad']}; "
                 f"chat template: {'yes' if t['chat_template'] else 'no'}")
    if summary.get("studio"):
        s = summary["studio"]
        loss = f", final loss {s['final_loss']}" if s.get("final_loss") is not None else ""
        lines.append(f"  built by {s.get('created_by')}: size {s.get('size')}, seed {s.get('seed')}, "
                     f"{s.get('pretrain_steps')} pretraining step(s){loss}")
    print("\n".join(lines))
    return 0


def cmd_model_export(args) -> int:
    from studio.models.export import export_model

    info = export_model(args.source, Path(args.out), merge=args.merge, trust_remote_code=args.trust_remote_code,
                        workspace=_runs_workspace(args))
    if args.json:
        print_json(info)
    else:
        what = "merged LoRA into its base" if info["merged_adapter"] else "copied"
        print(f"exported {info['exported_from']} -> {info['path']} ({what}; {info['parameters']:,} parameters)\n"
              f"serve it: studio serve {info['path']}")
    return 0


# --- serve ----------------------------------------------------------------------------------


def cmd_serve(args) -> int:
    from studio.models.loading import resolve_model_ref
    from studio.serving.launch import build_event_text
    from studio.serving.model_server import serve

    api_key = None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env)
        if not api_key:
            raise CliError(f"environment variable {args.api_key_env} is not set or empty")
    if not (args.host.startswith("127.") or args.host in LOOPBACK_HOSTS):
        print(f"warning: binding {args.host} exposes the model beyond this machine"
              + ("" if api_key else " without an API key (see --api-key-env)"), file=sys.stderr, flush=True)

    def ready(base_url: str, name: str) -> None:
        print(f"Serving {name} at {base_url}", flush=True)

    def progress(event: dict[str, Any]) -> None:  # the embedded model's build on first use
        if args.events:
            print(json.dumps(event), flush=True)
        elif build_event_text(event):
            print(build_event_text(event), file=sys.stderr, flush=True)

    # A run id is served from its folder, under the id the user gave.
    location = resolve_model_ref(args.model, build=False, workspace=_runs_workspace(args))
    model = location if Path(location).is_dir() and not Path(args.model).expanduser().is_dir() else args.model
    name = args.name or (args.model if model != args.model else None)
    if args.engine == "vllm":
        return _serve_with_vllm(args, model, name, api_key)
    serve(model, host=args.host, port=args.port, name=name, trust_remote_code=args.trust_remote_code,
          api_key=api_key, ready=ready, stop_on_stdin_eof=args.exit_with_stdin, emit=progress,
          threads=args.threads, max_batch=args.max_batch, max_queued=args.max_queued)
    return 0


def _serve_with_vllm(args, model: str, name: str | None, api_key: str | None) -> int:
    from studio.models.loading import embedded_size, resolve_model_ref
    from studio.serving.model_server import served_name
    from studio.serving.vllm_engine import VllmUnavailable, serve_with_vllm, vllm_command, vllm_refusal

    # vLLM reads a folder; the embedded model is one once built.
    folder = resolve_model_ref(model) if embedded_size(model) is not None else model
    why = vllm_refusal(folder)
    if why is not None:
        raise CliError(why)
    name = name or served_name(model)
    print(f"Serving {name} with vLLM: {' '.join(vllm_command(folder, args.host, args.port, name))}", file=sys.stderr,
          flush=True)
    try:
        return serve_with_vllm(folder, args.host, args.port, name, api_key=api_key,
                               trust_remote_code=args.trust_remote_code)
    except VllmUnavailable as exc:
        raise CliError(str(exc)) from None


COMMANDS = [
    Command("model", "build the embedded model; inspect and export models", configure_model, dispatch,
            description=__doc__),
    Command("serve", "serve a model behind an OpenAI-compatible API on loopback", configure_serve, cmd_serve,
            description=__doc__),
]
