"""The trainer callback that turns a run into events: metrics as they are logged, progress,
checkpoints, alerts, and cancellation (asked for through the run folder)."""
from __future__ import annotations

import math
import time
from typing import Any, Callable

from transformers import TrainerCallback

from studio.training.alerts import AlertWatch

PROGRESS_EVERY_S = 1.0


class EventsCallback(TrainerCallback):
    def __init__(self, emit: Callable[..., None], cancelled: Callable[[], bool]):
        self.emit = emit
        self.cancelled = cancelled
        self.alerts = AlertWatch()
        self.last_progress = 0.0
        self.started = time.time()

    def on_train_begin(self, args, state, control, **kwargs):
        self.started = time.time()
        self.emit("train_begin", step=state.global_step, max_steps=state.max_steps, epochs=args.num_train_epochs)

    def on_step_end(self, args, state, control, **kwargs):
        now = time.time()
        cancelling = self.cancelled()
        # The step a cancel lands on is always recorded: resume and `runs show` read it.
        if cancelling or now - self.last_progress >= PROGRESS_EVERY_S or state.global_step == state.max_steps:
            self.last_progress = now
            self.emit("progress", step=state.global_step, max_steps=state.max_steps, epoch=state.epoch,
                      elapsed=round(now - self.started, 2))
        if cancelling:
            # Save where we are so `studio runs resume` continues from this exact step.
            control.should_save = True
            control.should_training_stop = True
            self.emit("cancelling", step=state.global_step)
        return control

    def on_log(self, args, state, control, logs=None, **kwargs):
        raw = {k: v for k, v in (logs or {}).items() if isinstance(v, (int, float))}
        if not raw:
            return
        kind = "eval" if any(k.startswith("eval_") for k in raw) else "metrics"
        self.emit(kind, step=state.global_step, epoch=state.epoch, values={k: _number(v) for k, v in raw.items()})
        for alert in self.alerts.feed(state.global_step, raw):
            self.emit("alert", **alert)

    def on_save(self, args, state, control, **kwargs):
        self.emit("checkpoint", step=state.global_step, path=f"{args.output_dir}/checkpoint-{state.global_step}")


def _number(value: Any) -> Any:
    # JSON has no NaN/inf; keep them visible as strings rather than breaking the line.
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value
