"""Generative evaluators: GSM8K (worked maths answers, lm-eval's exact-match filters) and HumanEval
(model-written code run in the studio's sandbox, pass@k)."""
from __future__ import annotations

from studio.hookspecs import hookimpl
from studio_eval_generative.gsm8k import Gsm8k
from studio_eval_generative.humaneval import HumanEval


@hookimpl
def register_evaluators(register):
    register(Gsm8k())
    register(HumanEval())
