"""Training runs on disk and as processes.

    <workspace>/runs/<run-id>/
        recipe.yaml      the resolved recipe (dataset pinned to a version, or a file + sha256)
        status.json      queued | running | completed | cancelled | failed (interrupted: pid gone)
        events.jsonl     progress, metrics, eval, checkpoints, alerts, warnings, errors, the end
        metrics.json     final metrics and the recipe's learning checks
        train.log        the run process's stdout and stderr
        checkpoints/     trainer checkpoints (the resume points)
        final/           the trained model or adapter, with its tokenizer
        tensorboard/     report_to=tensorboard logs

A run is always a subprocess (``python -m studio.training.worker RUN_DIR``, or the same module
under torchrun / accelerate), so the TUI and the CLI only start, watch and cancel it. Cancelling
writes a ``cancel`` file the run polls each step; the run saves a checkpoint and stops.
"""
from __future__ import annotations

import os
import re
import secrets
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from studio.events import event_name
from studio.run_files import RunFiles, find_run_folder, pid_alive, training_runs_dir
from studio.recipes.loading import validate_recipe
from studio.recipes.train import TrainRecipe

FINISHED = {"completed", "cancelled", "failed"}


def runs_dir(ws) -> Path:
    return training_runs_dir(ws)


def new_run_id(recipe: TrainRecipe) -> str:
    label = re.sub(r"[^A-Za-z0-9._-]+", "-", recipe.name or recipe.backend).strip("-") or "run"
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{label[:40]}-{secrets.token_hex(2)}"


class TrainRun(RunFiles):
    def recipe(self) -> TrainRecipe:
        import yaml

        path = self.path / "recipe.yaml"
        return validate_recipe(yaml.safe_load(path.read_text(encoding="utf-8")), "train", str(path))

    def write_recipe(self, recipe: TrainRecipe, source: dict[str, Any], eval_source: dict[str, Any] | None) -> None:
        import yaml

        data = recipe.model_dump()
        text = yaml.safe_dump(data, sort_keys=False)
        header = f"# resolved recipe of run {self.run_id}\n# data: {source.get('ref')}"
        if source.get("sha256"):
            header += f" (sha256 {source['sha256'][:16]})"
        tmp = self.path / "recipe.yaml.tmp"
        tmp.write_text(header + "\n" + text, encoding="utf-8")
        tmp.replace(self.path / "recipe.yaml")

    def events(self) -> list[dict[str, Any]]:
        return self.read("events.jsonl")

    def metrics(self) -> dict[str, Any]:
        import json

        path = self.path / "metrics.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}

    def metric_history(self) -> list[dict[str, Any]]:
        return [e for e in self.events() if event_name(e) in ("metrics", "eval")]

    def checkpoints(self) -> list[dict[str, Any]]:
        from studio.training.adapters import checkpoints

        return checkpoints(self.path / "checkpoints")

    @property
    def final_dir(self) -> Path:
        return self.path / "final"

    def request_cancel(self) -> None:
        (self.path / "cancel").write_text(str(time.time()), encoding="utf-8")

    def cancel_requested(self) -> bool:
        return (self.path / "cancel").exists()

    def log_tail(self, lines: int = 40) -> str:
        path = self.path / "train.log"
        if not path.is_file():
            return ""
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])


def list_runs(ws) -> list[dict[str, Any]]:
    folder = runs_dir(ws)
    if not folder.is_dir():
        return []
    out = []
    for path in sorted(folder.iterdir(), reverse=True):
        if (path / "recipe.yaml").is_file():
            out.append({"run_id": path.name, **TrainRun(path).status()})
    return out


def find_run(ws, run_id: str) -> TrainRun:
    return TrainRun(find_run_folder(runs_dir(ws), run_id))


def prepare_run(ws, recipe: TrainRecipe, host=None) -> TrainRun:
    """Check everything that can be checked without training (back-end, config, adapter, data
    shape), then create the run folder. Raises ValueError with every problem found."""
    from studio.training.preflight import preflight

    checked = preflight(ws, recipe, host)
    run = TrainRun(runs_dir(ws) / new_run_id(recipe))
    run.path.mkdir(parents=True)
    pinned = recipe.model_copy(update={"dataset": checked.source["ref"], "model": checked.model or recipe.model,
                                       "eval_dataset": checked.eval_source["ref"] if checked.eval_source else None})
    run.write_recipe(pinned, checked.source, checked.eval_source)
    run.write_status(status="queued", backend=recipe.backend, model=recipe.model, dataset=checked.source["ref"],
                     train_records=len(checked.train), eval_records=len(checked.eval), created=time.time(),
                     max_steps=recipe.training.max_steps, workspace=str(ws.root), source=checked.source)
    for warning in checked.warnings:
        run.append("events.jsonl", {"t": time.time(), "event": "warning", "message": warning})
    return run


def worker_command(run: TrainRun, resume: bool = False) -> list[str]:
    recipe = run.recipe()
    launcher = recipe.launcher
    args = ["-m", "studio.training.worker", str(run.path)] + (["--resume"] if resume else [])
    if launcher.kind == "torchrun":
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={launcher.nproc}",
                "-m", "studio.training.worker", *args[2:]]
    if launcher.kind == "accelerate":
        extra = ["--config_file", launcher.config_file] if launcher.config_file else []
        if not launcher.config_file and launcher.nproc > 1:
            # accelerate's torchrun-style launcher; on a CPU the processes then join over gloo
            # (its --cpu launcher needs MPI for more than one process).
            extra.append("--multi_gpu")
        return [sys.executable, "-m", "accelerate.commands.launch", *extra, f"--num_processes={launcher.nproc}",
                "--num_machines=1", "--mixed_precision=no", "--dynamo_backend=no",
                "-m", "studio.training.worker", *args[2:]]
    return [sys.executable, *args]


def start(run: TrainRun, resume: bool = False) -> subprocess.Popen:
    """Start the run process (detached from this one's terminal signals); output goes to train.log."""
    (run.path / "cancel").unlink(missing_ok=True)
    command = worker_command(run, resume)
    env = dict(os.environ)
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.setdefault("TRANSFORMERS_VERBOSITY", "error")
    env.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    log = open(run.path / "train.log", "a", encoding="utf-8")
    log.write(f"$ {shlex.join(command)}\n")
    log.flush()
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                               env=env, start_new_session=True)
    log.close()
    run.update_status(status="running", pid=process.pid, launcher_pid=process.pid,
                      resumed=resume, started=time.time())
    return process


def cancel(run: TrainRun, grace_s: float = 30.0, wait: bool = True) -> str:
    """Ask the run to stop at the next step (it checkpoints first); kill it after ``grace_s``."""
    status = run.status()
    if status.get("status") not in ("running", "queued"):
        return status.get("status", "unknown")
    run.request_cancel()
    if not wait:
        return "cancelling"
    deadline = time.time() + grace_s
    while time.time() < deadline:
        if run.status().get("status") != "running":
            return run.status()["status"]
        time.sleep(0.2)
    pid = status.get("launcher_pid") or status.get("pid")
    try:
        os.killpg(int(pid), signal.SIGTERM)
    except (ProcessLookupError, PermissionError, TypeError, ValueError):
        pass
    run.update_status(status="cancelled", reason=f"did not stop within {grace_s:.0f}s; terminated")
    return "cancelled"


def resume(run: TrainRun) -> subprocess.Popen:
    state = run.status().get("status")
    if state == "running":
        raise ValueError(f"run {run.run_id} is still running")
    if state == "completed":
        raise ValueError(f"run {run.run_id} already completed")
    return start(run, resume=True)


def follow(run: TrainRun, process: subprocess.Popen | None = None, poll_s: float = 0.25,
           cancelled: Callable[[], bool] = lambda: False) -> Iterator[dict[str, Any]]:
    """Yield events as the run writes them, until it ends (or its process dies)."""
    offset = 0
    while True:
        events, offset = run.read_from("events.jsonl", offset)
        yield from events
        if cancelled() and not run.cancel_requested():
            run.request_cancel()
        alive = process.poll() is None if process is not None else pid_alive(run.status().get("pid"))
        if not alive:
            events, offset = run.read_from("events.jsonl", offset)
            yield from events
            return
        time.sleep(poll_s)
