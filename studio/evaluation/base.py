"""The contract of an evaluator plugin, and the context the runner hands it.

An evaluator is one task (``arc_easy``, ``gsm8k``, ...). It reads its items from local files, scores
them with a model and turns per-item samples into metrics::

    class ArcEasy(Evaluator):
        name = "arc_easy"
        config_model = ArcOptions          # path, num_fewshot, ... (drives recipe, CLI and TUI form)
        uses = ("loglikelihood",)

        def load(self, config):            # -> list of items (JSON-able dicts, each with a unique "id")
        def score(self, ctx, items):       # -> one sample per item, same order
        def aggregate(self, samples, config)  # optional: the default is mean +- stderr per metric

A sample is a JSON-able dict: ``id``, ``prompt``, optionally ``choices``, ``scores``, ``target``,
``prediction``, and ``metrics`` (metric name -> float for this item, e.g. ``{"acc": 1.0}``). The
runner caches samples per (model fingerprint, task, config digest, item id), so scoring is called
only for items it has not seen, in chunks, and a killed evaluation resumes where it stopped.
Comparisons pair samples by ``id``; flips are items whose per-item metric changed.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

from pydantic import BaseModel

Emit = Callable[[dict], None]


class EvalDataError(ValueError):
    """A benchmark file the task cannot read: the message names file, line and field."""

    def __init__(self, path: str | Path, line: int | None, field_name: str | None, message: str):
        where = str(path) + (f", line {line}" if line is not None else "")
        where += f", field '{field_name}'" if field_name else ""
        super().__init__(f"{where}: {message}")
        self.path, self.line, self.field = str(path), line, field_name


class EvalStopped(RuntimeError):
    """The evaluation was cancelled; what was scored so far is cached."""


@dataclass
class EvalContext:
    """What a task's ``score`` gets: the model, its options, progress and cancellation."""

    model: Any  # studio.evaluation.models.EvalModel
    config: BaseModel
    emit: Emit = lambda event: None
    cancelled: Callable[[], bool] = lambda: False
    batch_size: int = 16
    workspace: Any = None
    # Run-wide settings a task may need: "allow_code_execution", "judge" (provider spec), "reward_model"...
    options: dict[str, Any] = field(default_factory=dict)
    task: str = ""

    def check_cancelled(self) -> None:
        if self.cancelled():
            raise EvalStopped("cancelled")

    def progress(self, done: int, total: int, message: str = "") -> None:
        self.emit({"event": "progress", "task": self.task, "model": getattr(self.model, "label", ""),
                   "done": done, "total": total, "message": message})


class Evaluator:
    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    config_model: ClassVar[type[BaseModel]]
    # What the task asks of a model: "loglikelihood" (local models only), "generate", "chat",
    # "judge" (an OpenAI-compatible judge), "reward" (a studio reward model).
    uses: ClassVar[tuple[str, ...]] = ("loglikelihood",)
    # lm-eval's default shot count for the task.
    default_fewshot: ClassVar[int] = 0
    # The metric a comparison leads with (and the TUI shows first).
    primary_metric: ClassVar[str] = "acc"
    # Metrics where lower is better (loss, perplexity).
    lower_is_better: ClassVar[tuple[str, ...]] = ()

    def load(self, config: BaseModel) -> list[dict[str, Any]]:
        """The task's items. Rows it cannot read go to ``self.skipped`` (``EvalDataError`` each,
        naming file, line and field) while the good ones load; the runner reports them."""
        raise NotImplementedError

    def data_files(self, config: BaseModel) -> list[Path]:
        """The files the items come from, pinned by sha256 in the report."""
        path = getattr(config, "path", None)
        if not path:
            return []
        path = Path(path)
        return sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]

    def score(self, ctx: EvalContext, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        raise NotImplementedError

    def aggregate(self, samples: list[dict[str, Any]], config: BaseModel) -> dict[str, dict[str, Any]]:
        """Metric name -> {"value", "stderr", "n"}; the default is the mean of each per-item metric."""
        from studio.evaluation.stats import mean_with_stderr

        names: list[str] = []
        for sample in samples:
            for name in sample.get("metrics", {}):
                if name not in names:
                    names.append(name)
        out = {}
        for name in names:
            values = [float(s["metrics"][name]) for s in samples if s.get("metrics", {}).get(name) is not None]
            out[name] = mean_with_stderr(values)
        return out

    def pairwise(self, ctx: EvalContext, base: list[dict[str, Any]], tuned: list[dict[str, Any]],
                 base_model: Any, tuned_model: Any) -> dict[str, Any] | None:
        """Metrics that need both models' samples (judged A/B verdicts, reward win rate), or None."""
        return None


def config_digest(config: BaseModel) -> str:
    """A short hash of a task config: cache entries are only reused under the same options."""
    text = json.dumps(config.model_dump(mode="json"), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
