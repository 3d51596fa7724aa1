"""Self-Instruct (Wang et al., 2022): grow a task pool from seed tasks with ROUGE-L filtering, then
make one instance (input and output) per new task. See :mod:`.generator` for the steps."""
from __future__ import annotations

from studio.hookspecs import hookimpl
from studio_generate_self_instruct.generator import SelfInstruct


@hookimpl
def register_generators(register):
    register(SelfInstruct())
