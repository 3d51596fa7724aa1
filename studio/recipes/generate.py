"""The generation recipe: a generator, a provider, seeds and parameters (``studio generate RECIPE``)."""
from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field


class GenerationRecipe(BaseModel):
    model_config = ConfigDict(extra="forbid")
    DATA_FIELDS: ClassVar[tuple[str, ...]] = ("seed_dataset",)

    generator: str = Field(description="registered generator name (`studio generate ls`)")
    output: str = Field(description="dataset the results are stored as (a new version)")
    seed_dataset: str | None = Field(None, description="what the generator starts from: a stored dataset "
                                                       "NAME[@VERSION] or a data file (imported first)")
    seed_limit: int | None = Field(None, ge=1, description="use only the first N seed records")
    provider: str | dict[str, Any] | None = Field(
        None, description="saved provider name or inline settings; empty = embedded model")
    params: dict[str, Any] = Field(default_factory=dict,
                                   description="default request parameters (temperature, max_tokens, ...)")
    config: dict[str, Any] = Field(default_factory=dict, description="the generator's own options")
    seed: int = Field(0, description="random seed (same seed + journal = same run)")
    budget: float | None = Field(None, gt=0, description="hard cost cap for this run; it stops cleanly when reached")
