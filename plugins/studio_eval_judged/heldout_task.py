"""``heldout``: loss and perplexity on a stored split, on the tokens training puts loss on.

    studio eval run --model embedded --model RUN --task heldout=datasets/eval/planted_heldout.jsonl

The data is a workspace dataset ``NAME[@VERSION]`` or a data file of conversations (any format
the studio reads). ``holdout_fraction`` (with ``seed``) takes exactly the records a train recipe
with that ``eval_fraction`` and ``seed`` held out of the same data. Per item: ``loss`` (mean
negative log-likelihood over its assistant tokens) and ``tokens``; aggregated: ``loss`` weighted
by tokens, and ``perplexity``. With a studio reward model (the run's ``reward_model``),
``pairwise`` has both models answer every prompt greedily and reports the tuned model's win
rate under the reward model, with a sign test.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from studio.data.refs import looks_like_file
from studio.evaluation.base import EvalContext, EvalDataError, Evaluator
from studio.evaluation.heldout import conversation_losses, token_weighted_loss, win_rate
from studio.training.data import load_records, split_eval, turn_dict


class HeldoutOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = Field(description="conversations: a data file, or a workspace dataset NAME[@VERSION]")
    holdout_fraction: float | None = Field(None, gt=0, lt=1, description="use only the records a train recipe with "
                                           "this eval_fraction (and the same seed) holds out of the data")
    seed: int = Field(0, description="seed of the held-out split (a train recipe's seed)")
    max_length: int | None = Field(None, ge=2, description="cut conversations to this many tokens, as training's "
                                   "max_length does (default: the model's context length)")
    answer_max_tokens: int = Field(256, ge=1, description="token limit of each answer for the reward-model win rate")


def _stored_workspace():
    from studio.store import Workspace

    if os.environ.get("STUDIO_WORKSPACE"):
        return Workspace(Path(os.environ["STUDIO_WORKSPACE"]))
    return Workspace.find()


def _item_id(index: int, messages: list[dict[str, str]]) -> str:
    digest = hashlib.sha256(json.dumps(messages, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:8]
    return f"{index}-{digest}"


class Heldout(Evaluator):
    name = "heldout"
    title = "Held-out loss"
    summary = "loss and perplexity on held-out conversations (assistant tokens, as training counts them)"
    config_model = HeldoutOptions
    uses = ("loglikelihood",)
    primary_metric = "loss"
    lower_is_better = ("loss", "perplexity")

    def data_files(self, config: HeldoutOptions) -> list[Path]:
        return [Path(config.path)] if looks_like_file(config.path) else []

    def load(self, config: HeldoutOptions) -> list[dict[str, Any]]:
        ws = None
        if not looks_like_file(config.path):
            ws = _stored_workspace()
            if ws is None:
                raise EvalDataError(config.path, None, "path", "not a file, and no workspace here holds a dataset "
                                    "of that name (set STUDIO_WORKSPACE or run inside a workspace)")
        try:
            loaded = load_records(config.path, ws=ws)
        except (ValueError, OSError) as exc:
            raise EvalDataError(config.path, None, "path", str(exc)) from None
        records = loaded.records
        if config.holdout_fraction:
            records = split_eval(records, config.holdout_fraction, config.seed)[1]
        items = []
        for index, record in enumerate(records):
            messages = [turn_dict(t) for t in record.messages]
            if not any(m["role"] == "assistant" for m in messages):
                raise EvalDataError(config.path, index + 1, "messages", "no assistant turn to measure loss on")
            items.append({"id": _item_id(index, messages), "messages": messages})
        if not items:
            raise EvalDataError(config.path, None, None, "no conversations")
        return items

    def score(self, ctx: EvalContext, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        config: HeldoutOptions = ctx.config
        if not ctx.model.supports("loglikelihood"):
            raise ValueError(f"heldout needs token log-probabilities: {ctx.model.label} is an endpoint; "
                             "give a local model (embedded, a run, a model folder)")
        losses = conversation_losses(ctx.model.model, ctx.model.tokenizer, [item["messages"] for item in items],
                                     batch_size=ctx.batch_size, max_length=config.max_length,
                                     model_ref=ctx.model.label,
                                     progress=lambda done, total: ctx.progress(done, total, "held-out loss"),
                                     cancelled=ctx.cancelled)
        samples = []
        for item, (nll, tokens) in zip(items, losses):
            samples.append({"id": item["id"], "prompt": item["messages"], "nll": nll,
                            "metrics": {"loss": nll / tokens if tokens else None, "tokens": float(tokens)}})
        return samples

    def aggregate(self, samples: list[dict[str, Any]], config: HeldoutOptions) -> dict[str, dict[str, Any]]:
        return token_weighted_loss([s["nll"] for s in samples], [int(s["metrics"]["tokens"]) for s in samples])

    def pairwise(self, ctx: EvalContext, base: list[dict[str, Any]], tuned: list[dict[str, Any]], base_model: Any,
                 tuned_model: Any) -> dict[str, Any] | None:
        reward_ref = ctx.options.get("reward_model")
        if not reward_ref:
            return None
        from studio.training.reward_workbench import load_reward_model

        config: HeldoutOptions = ctx.config
        tuned_ids = {s["id"] for s in tuned}
        prompts = []
        for sample in base:
            if sample["id"] in tuned_ids:
                turns = _prompt(sample["prompt"])
                if turns:
                    prompts.append(turns)
        answers = {}
        for key, model in (("base", base_model), ("tuned", tuned_model)):
            ctx.check_cancelled()
            answers[key] = model.chat(prompts, max_new_tokens=config.answer_max_tokens, batch_size=ctx.batch_size,
                                      temperature=0.0)
        scorer = load_reward_model(reward_ref, ws=ctx.workspace)
        rewards = {key: scorer.score_conversations([p + [{"role": "assistant", "content": a}]
                                                    for p, a in zip(prompts, answers[key])])
                   for key in ("base", "tuned")}
        result = win_rate(rewards["base"], rewards["tuned"])
        result.update(reward_model=str(reward_ref), base=base_model.label, tuned=tuned_model.label,
                      details=[{"prompt": p[-1]["content"], "base": a, "tuned": b, "reward_base": rb,
                                "reward_tuned": rt}
                               for p, a, b, rb, rt in zip(prompts, answers["base"], answers["tuned"],
                                                          rewards["base"], rewards["tuned"])])
        return {"reward_win_rate": result}


def _prompt(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """The conversation up to its last user turn: what both models answer."""
    turns = list(messages)
    while turns and turns[-1]["role"] != "user":
        turns.pop()
    return turns
