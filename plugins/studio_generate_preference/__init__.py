"""Preference data and LLM-as-judge scoring:

* ``preference_pairs`` (generator): several answers per prompt, judged; best vs worst becomes a pair.
* ``judge_scores`` (generator): judge scores for an existing dataset, in ``meta["judge"]``.
* ``judge_filter`` (curation op): remove rows whose judge score is below a threshold.

The judge rubric and its parser live in :mod:`.judge`.
"""
from __future__ import annotations

from studio.hookspecs import hookimpl
from studio_generate_preference.judge_filter import JudgeFilter
from studio_generate_preference.pairs import PreferencePairs
from studio_generate_preference.scores import JudgeScores


@hookimpl
def register_generators(register):
    register(PreferencePairs())
    register(JudgeScores())


@hookimpl
def register_curation_ops(register):
    register(JudgeFilter())
