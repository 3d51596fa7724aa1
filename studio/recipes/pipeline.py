"""The pipeline recipe: other recipes run in order (``studio run RECIPE``), each step able to
start from what the step before it made (``model: previous``, ``dataset: previous``)."""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

# The value a step's field takes to mean "what the step before made".
PREVIOUS = "previous"


class PipelineStep(BaseModel):
    model_config = ConfigDict(extra="forbid")

    recipe: str = Field(description="a recipe file (relative to this one) or a shipped recipe's name")
    set: dict[str, Any] = Field(default_factory=dict,
                                description="overrides for that recipe (dotted keys reach into sections); "
                                            "`previous` takes the step before's model or dataset")


class PipelineRecipe(BaseModel):
    model_config = ConfigDict(extra="forbid")

    steps: list[PipelineStep] = Field(min_length=1, description="recipes run in order")
