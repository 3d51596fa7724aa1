"""The curation recipe: ops in order over one input dataset (``studio curate RECIPE``)."""
from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field


class StepSpec(BaseModel):
    """One step: ``op`` names a registered op; every other key is that op's config, validated
    by the op's own ``config_model`` when the pipeline resolves its steps."""

    model_config = ConfigDict(extra="allow")
    op: str

    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class CurationRecipe(BaseModel):
    model_config = ConfigDict(extra="forbid")
    DATA_FIELDS: ClassVar[tuple[str, ...]] = ("dataset",)

    dataset: str = Field(description="input: a stored dataset NAME[@VERSION], or a data file "
                                     "(imported first, with lineage to the file)")
    output: str | None = Field(None, description="output dataset name (default: a new version of the input)")
    seed: int = Field(0, description="seed for every op that samples or permutes")
    num_proc: int | None = Field(None, description="worker processes (default: all cores)")
    engine: Literal["local", "ray"] = Field("local", description="where the steps run: this machine's cores "
                                                                 "(local) or Ray Data (ray); same result")
    address: str | None = Field(None, description="with engine ray: a running Ray cluster (HOST:PORT or auto); "
                                                  "default: a local Ray instance sized to this machine")
    steps: list[StepSpec] = Field(min_length=1)
