"""Evol-Instruct (WizardLM, Xu et al., 2023): evolve instructions in depth and in breadth, answer
them and eliminate failed evolutions by the paper's four rules. See :mod:`.generator`."""
from __future__ import annotations

from studio.hookspecs import hookimpl
from studio_generate_evol.generator import EvolInstruct


@hookimpl
def register_generators(register):
    register(EvolInstruct())
