"""The generation recipe: a generator, a provider, seeds and parameters (``studio generate RECIPE``)."""
from __future__ import annotations

from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from studio.store import NAME_RE


def _dataset_name(value: str) -> str:
    if not NAME_RE.match(value):
        raise ValueError("a dataset name is letters, digits, '.', '_' or '-' (max 100), starting with a letter or digit")
    return value


DatasetName = Annotated[str, AfterValidator(_dataset_name)]


class RequestParams(BaseModel):
    """Default parameters of every request of a run (a generator's own options win); any other
    OpenAI parameter (top_p, stop, ...) passes through as given."""

    model_config = ConfigDict(extra="allow")

    temperature: float | None = Field(None, ge=0, le=2, description="default temperature of every request "
                                      "(a generator's own option wins)")
    max_tokens: int | None = Field(None, ge=1, description="default completion tokens per request (a generator's "
                                   "own option wins)")


class GenerationRecipe(BaseModel):
    model_config = ConfigDict(extra="forbid")
    DATA_FIELDS: ClassVar[tuple[str, ...]] = ("seed_dataset",)

    generator: str = Field(description="registered generator name (`studio generate ls`)")
    output: DatasetName = Field(description="dataset the results are stored as (a new version)")
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

    @field_validator("params")
    @classmethod
    def _request_params(cls, value: dict[str, Any]) -> dict[str, Any]:
        # Checked against RequestParams, kept a plain mapping for the engine.
        return RequestParams.model_validate(value).model_dump(exclude_none=True)
