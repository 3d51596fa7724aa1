"""The pipeline recipe: other recipes run in order (``studio run RECIPE``), each step able to
start from what an earlier step made: ``previous`` (the step just before) or ``step:<id>`` (the
step with that ``id``) as the value of a model key (``model``, ``config.reward_model``, an
evaluation's ``models`` list) or a dataset key (``dataset``, ``eval_dataset``)."""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

# The value a step's field takes to mean "what the step before made".
PREVIOUS = "previous"
# ``step:<id>``: what the step with that id made.
STEP_PREFIX = "step:"


class PipelineStep(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]+$",
                           description="a name later steps use to take what this one made (`step:<id>`)")
    recipe: str = Field(description="a recipe file (relative to this one) or a shipped recipe's name")
    set: dict[str, Any] = Field(default_factory=dict,
                                description="overrides for that recipe (dotted keys reach into sections); on a "
                                            "model or dataset key, `previous` takes the step before's and "
                                            "`step:<id>` an earlier step's")


def made_kind(key: str) -> str | None:
    """What a ``set:`` key takes from an earlier step: ``model`` (``model``, ``config.reward_model``,
    any key ending in ``model``), ``models`` (a list of them), ``dataset``, or None (a plain value)."""
    last = key.rsplit(".", 1)[-1]
    if last == "models":
        return "models"
    if last.endswith("model"):
        return "model"
    if last.endswith("dataset"):
        return "dataset"
    return None


def reference(value: Any) -> str | None:
    """``previous``, or the id of ``step:<id>``; None for any other value."""
    if value == PREVIOUS:
        return PREVIOUS
    if isinstance(value, str) and value.startswith(STEP_PREFIX):
        return value[len(STEP_PREFIX):]
    return None


def step_references(step: PipelineStep) -> list[tuple[str, str]]:
    """The (key, reference) pairs of a step's ``set:`` that take what an earlier step made."""
    pairs = []
    for key, value in step.set.items():
        kind = made_kind(key)
        values = value if kind == "models" and isinstance(value, list) else [value] if kind else []
        pairs += [(key, ref) for ref in map(reference, values) if ref is not None]
    return pairs


class PipelineRecipe(BaseModel):
    model_config = ConfigDict(extra="forbid")

    steps: list[PipelineStep] = Field(min_length=1, description="recipes run in order")

    @model_validator(mode="after")
    def _references_point_back(self) -> "PipelineRecipe":
        problems = []
        where: dict[str, int] = {}
        for number, step in enumerate(self.steps):
            if step.id is not None:
                if step.id in where:
                    problems.append(f"step {number}: id {step.id!r} is also step {where[step.id]}'s")
                where.setdefault(step.id, number)
        for number, step in enumerate(self.steps):
            for key, ref in step_references(step):
                if ref == PREVIOUS:
                    if number == 0:
                        problems.append(f"step 0: `{key}: previous` needs a step before it")
                elif ref not in where:
                    known = ", ".join(repr(i) for i in where) or "none"
                    problems.append(f"step {number}: `{key}: step:{ref}` names no step (ids: {known})")
                elif where[ref] >= number:
                    problems.append(f"step {number}: `{key}: step:{ref}` names step {where[ref]}, which runs "
                                    f"{'as this step' if where[ref] == number else 'after it'}: a step takes "
                                    "only what an earlier step made")
        if problems:
            raise ValueError("; ".join(problems))
        return self
