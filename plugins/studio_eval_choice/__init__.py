"""Multiple-choice benchmarks scored by log-likelihood, exactly as lm-evaluation-harness 0.4.13 scores
its built-in tasks: ``arc_easy``, ``arc_challenge``, ``hellaswag``, ``mmlu``, ``truthfulqa_mc1`` and
``truthfulqa_mc2``, from local files.

* :mod:`~studio_eval_choice.files` reads the benchmark files (bad rows name file, line and field);
* :mod:`~studio_eval_choice.prompts` builds lm-eval's prompts and draws its few-shot examples;
* :mod:`~studio_eval_choice.scoring` turns the choices' log-probabilities into acc, acc_norm and MC2;
* :mod:`~studio_eval_choice.tasks` holds the evaluators and their options;
* :mod:`~studio_eval_choice.mmlu_subjects` maps MMLU's subjects to its four groups.
"""
from __future__ import annotations

from studio.hookspecs import hookimpl

from studio_eval_choice.tasks import EVALUATORS


@hookimpl
def register_evaluators(register):
    for evaluator in EVALUATORS:
        register(evaluator())
