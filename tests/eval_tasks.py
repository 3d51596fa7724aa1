"""A small real evaluator for the runner's tests: multiple choice over a JSONL file, scored by the
model's summed log-probability of each choice after the question (no stubs: the model runs).

Items: ``{"id", "question", "choices": [...], "answer": index}``. Registered in-process with
:func:`install_in_process`, or for a ``studio`` subprocess as a third-party plugin distribution
on a sys.path folder (:func:`write_plugin_distribution`).
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from studio.evaluation.base import EvalDataError, Evaluator
from studio.hookspecs import hookimpl

ENTRY_POINT = "studio_test_evals = eval_tasks"


class ChoiceOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = Field(description="JSONL file of {id, question, choices, answer}")
    num_fewshot: int | None = Field(None, ge=0, description="solved examples put before each question")


def _continuation_logprob(model, tokenizer, context: str, continuation: str) -> float:
    import torch

    whole = tokenizer(context + continuation, return_tensors="pt").input_ids
    head = len(tokenizer(context).input_ids)
    with torch.no_grad():
        logits = model(whole).logits.float().log_softmax(-1)
    targets = whole[0, head:]
    return float(logits[0, head - 1:-1].gather(-1, targets[:, None]).sum())


class TinyChoice(Evaluator):
    name = "tiny_choice"
    title = "Tiny multiple choice"
    summary = "multiple choice by summed log-probability (runner tests)"
    config_model = ChoiceOptions
    uses = ("loglikelihood",)
    default_fewshot = 0
    primary_metric = "acc"

    def __init__(self):
        self.scored_items = 0
        self.score_calls = 0
        self.options_seen: list[dict] = []  # the run-wide options dict of each call

    def load(self, config: ChoiceOptions) -> list[dict[str, Any]]:
        items = []
        path = Path(config.path)
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            row = json.loads(line)
            if "question" not in row:
                raise EvalDataError(path, number, "question", "missing")
            items.append(row)
        return items

    def score(self, ctx, items):
        self.score_calls += 1
        self.scored_items += len(items)
        self.options_seen.append(ctx.options)
        delay = float(os.environ.get("STUDIO_TEST_SCORE_DELAY", "0"))
        model, tokenizer = ctx.model.model, ctx.model.tokenizer
        samples = []
        for done, item in enumerate(items):
            ctx.check_cancelled()
            prompt = f"Question: {item['question']}\nAnswer:"
            scores = [_continuation_logprob(model, tokenizer, prompt, " " + c) for c in item["choices"]]
            best = max(range(len(scores)), key=scores.__getitem__)
            samples.append({"id": item["id"], "prompt": prompt, "choices": item["choices"], "scores": scores,
                            "target": item["answer"], "prediction": best,
                            "metrics": {"acc": float(best == item["answer"]),
                                        "logprob_gold": scores[item["answer"]]}})
            ctx.progress(done + 1, len(items))
            if delay:
                time.sleep(delay)
        return samples


class TinyGenerate(Evaluator):
    """Generation-only: what an endpoint can run (used to check `supports`)."""

    name = "tiny_generate"
    summary = "greedy answers compared with a reference (runner tests)"
    config_model = ChoiceOptions
    uses = ("generate",)

    def load(self, config):
        return TinyChoice.load(self, config)

    def score(self, ctx, items):
        outs = ctx.model.generate([f"Q: {i['question']}\nA:" for i in items], until=["\n"], max_new_tokens=8)
        return [{"id": i["id"], "prompt": i["question"], "prediction": o[0],
                 "metrics": {"exact": float(o[0].strip() == i["choices"][i["answer"]])}} for i, o in zip(items, outs)]


EVALUATORS = [TinyChoice(), TinyGenerate()]


@hookimpl
def register_evaluators(register):
    for evaluator in EVALUATORS:
        register(evaluator)


def write_items(path: Path, count: int, seed: int = 0) -> Path:
    """``count`` questions whose right answer follows a rule (the colour named in the question)."""
    import random

    rng = random.Random(seed)
    colours = ["red", "blue", "green", "yellow", "black", "white"]
    lines = []
    for i in range(count):
        right = rng.choice(colours)
        wrong = rng.sample([c for c in colours if c != right], 2)
        choices = [right, *wrong]
        rng.shuffle(choices)
        lines.append(json.dumps({"id": f"q{i}", "question": f"The {right} ball number {i} is what colour?",
                                 "choices": choices, "answer": choices.index(right)}))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def install_in_process():
    """Register the evaluators on the studio's plugin host; returns the host."""
    import sys

    from studio.plugins import get_host, reset_host

    reset_host()
    host = get_host()
    host.add_plugin(sys.modules[__name__], "studio-test-evals")
    return host


def write_plugin_distribution(site: Path) -> Path:
    """A sys.path folder holding this module as an installed plugin distribution (for subprocesses)."""
    site.mkdir(parents=True, exist_ok=True)
    (site / "eval_tasks.py").write_text(Path(__file__).read_text(encoding="utf-8"), encoding="utf-8")
    info = site / "studio_test_evals-0.1.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: studio-test-evals\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[studio.plugins]\n{ENTRY_POINT}\n")
    return site


def perturbed_copy(dest: Path, scale: float = 0.3, seed: int = 0) -> Path:
    """The embedded tiny model with noise on every weight, saved as a model folder: a second model
    that ranks some answers differently (building the embedded small model costs minutes)."""
    if (dest / "config.json").is_file():
        return dest
    import torch

    from studio.models.loading import load_model, resolve_model_ref

    model, tokenizer = load_model(resolve_model_ref("embedded"))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn(param.shape, generator=generator) * scale * float(param.std() or 1.0))
    model.save_pretrained(dest)
    tokenizer.save_pretrained(dest)
    return dest
