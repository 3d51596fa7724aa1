"""Judged and held-out evaluators: ``mt_bench`` (two-turn answers graded by an OpenAI-compatible
judge, pairwise base-vs-tuned verdicts) and ``heldout`` (loss and perplexity on held-out
conversations, reward-model win rate)."""
from __future__ import annotations

from studio.hookspecs import hookimpl
from studio_eval_judged.heldout_task import Heldout
from studio_eval_judged.mt_bench import MTBench


@hookimpl
def register_evaluators(register):
    register(MTBench())
    register(Heldout())
