"""The run process: ``python -m studio.training.worker RUN_DIR [--resume]`` (also under torchrun
or accelerate, one per rank). It trains with the back-end the recipe names and records everything
in the run folder; only rank 0 writes there."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from studio.training.runs import TrainRun


class Emitter:
    def __init__(self, run: TrainRun, writes: bool):
        self.run = run
        self.writes = writes

    def __call__(self, name: str, **fields: Any) -> None:
        if not self.writes:
            return
        self.run.append("events.jsonl", {"t": round(time.time(), 3), "event": name, **fields})
        if name == "progress":
            self.run.update_status(step=fields.get("step"), max_steps=fields.get("max_steps"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="studio.training.worker")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args(argv)
    run = TrainRun(args.run_dir)
    rank0 = int(os.environ.get("RANK", "0")) == 0
    emit = Emitter(run, rank0)
    status = run.status()
    if rank0:
        run.update_status(status="running", pid=os.getpid(), step=status.get("step", 0), reason=None)
    try:
        return _train(run, args.resume, emit, status, rank0)
    except Exception as exc:  # noqa: BLE001 - every failure ends the run with a reason on record
        message = f"{type(exc).__name__}: {exc}" if not isinstance(exc, ValueError) else str(exc)
        emit("error", message=message, traceback=traceback.format_exc())
        if rank0:
            run.update_status(status="failed", reason=message, ended=time.time())
        print(traceback.format_exc(), file=sys.stderr)
        return 1


def _train(run: TrainRun, resume: bool, emit: Emitter, status: dict[str, Any], rank0: bool) -> int:
    from studio.store import Workspace
    from studio.training.backend_base import TrainContext
    from studio.training.expectations import check_all
    from studio.training.preflight import preflight

    recipe = run.recipe()
    ws = Workspace(Path(status["workspace"]))
    checked = preflight(ws, recipe)
    source = status.get("source") or {}
    if resume and source.get("sha256") and checked.source.get("sha256") != source["sha256"]:
        emit("warning", message=f"{source.get('file')} changed since the run started: the resumed part trains "
                                "on different data")
    emit("start", backend=recipe.backend, model=recipe.model, resume=resume, train_records=len(checked.train),
         eval_records=len(checked.eval), pid=os.getpid(),
         world_size=int(os.environ.get("WORLD_SIZE", "1")))
    if recipe.eval and rank0 and not resume:
        _evaluate_base(ws, run, recipe, emit)
    ctx = TrainContext(recipe=recipe, config=checked.config, run_dir=run.path, train_records=checked.train,
                       eval_records=checked.eval, emit=emit, cancelled=run.cancel_requested, resume=resume)
    started = time.time()
    final = checked.backend.train(ctx) or {}
    final = {k: v for k, v in final.items() if isinstance(v, (int, float, str, bool))}
    if not rank0:
        return 0
    if run.cancel_requested():
        emit("end", status="cancelled", metrics=final)
        run.update_status(status="cancelled", ended=time.time(), reason="cancelled by request")
        return 0
    checks = check_all(recipe.expect, run.metric_history(), final)
    failed = [c for c in checks if not c["passed"]]
    summary = {"final": final, "checks": checks, "seconds": round(time.time() - started, 2),
               "final_dir": str(ctx.final_dir) if ctx.final_dir.exists() else None}
    (run.path / "metrics.json").write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
    for check in failed:
        emit("warning", message="learning check failed: " + "; ".join(check["details"]))
    if recipe.eval and ctx.final_dir.exists():
        _evaluate_result(ws, run, recipe, emit)
    emit("end", status="completed", metrics=final, checks_passed=not failed)
    run.update_status(status="completed", ended=time.time(), checks_passed=not failed,
                      final_dir=summary["final_dir"], metrics=final)
    return 0


# --- the recipe's `eval:` tasks ------------------------------------------------------------------
# Evaluation events go into the run's events.jsonl as "evaluation" events (their own name under
# "stage"), so they never read as the training's own progress.
EVALUATION_STAGES = ("started", "task_started", "task_done", "finished", "error", "warning")


def _evaluation_recipe(recipe, models: list[str], labels: list[str], name: str):
    from studio.recipes.evaluate import EvalRecipe

    return EvalRecipe(models=models, labels=labels, tasks=recipe.eval, name=name, seed=recipe.seed,
                      trust_remote_code=recipe.trust_remote_code)


def _forward(emit: Emitter):
    from studio.events import event_name

    def forward(event: dict[str, Any]) -> None:
        stage = event_name(event)
        if stage in EVALUATION_STAGES:
            emit("evaluation", stage=stage, **{k: v for k, v in event.items() if k != "event"})

    return forward


def _evaluate_base(ws, run: TrainRun, recipe, emit: Emitter) -> None:
    """Score the base model on the `eval:` tasks before training (into the evaluation cache)."""
    from studio.evaluation.runner import score_into_cache

    try:
        metrics = score_into_cache(ws, _evaluation_recipe(recipe, [recipe.model], ["base"], run.run_id),
                                   emit=_forward(emit), cancelled=run.cancel_requested)
        emit("evaluation", stage="base_scored", metrics=metrics)
    except Exception as exc:  # noqa: BLE001 - an evaluation problem must not cost the training
        emit("warning", message=f"evaluation of the base model failed: {exc}")


def _evaluate_result(ws, run: TrainRun, recipe, emit: Emitter) -> None:
    """The base against the trained model on the `eval:` tasks: one report, linked from status.json."""
    from studio.evaluation.runner import run_evaluation

    try:
        summary = run_evaluation(ws, _evaluation_recipe(recipe, [recipe.model, str(run.path)], ["base", "tuned"],
                                                        run.run_id),
                                 emit=_forward(emit), cancelled=run.cancel_requested)
    except Exception as exc:  # noqa: BLE001 - the model is trained and saved whatever the evaluation does
        emit("warning", message=f"evaluation after training failed: {exc}")
        run.update_status(evaluation_error=str(exc))
        return
    run.update_status(evaluation=summary["id"])


if __name__ == "__main__":
    sys.exit(main())
