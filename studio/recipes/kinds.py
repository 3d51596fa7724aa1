"""The kinds of recipe, the schema of each and how a recipe's keys tell its kind."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from studio.recipes.curate import CurationRecipe
from studio.recipes.evaluate import EvalRecipe
from studio.recipes.generate import GenerationRecipe
from studio.recipes.pipeline import PipelineRecipe
from studio.recipes.train import TrainRecipe


@dataclass(frozen=True)
class RecipeKind:
    name: str
    model: type[BaseModel]
    command: str  # the command that runs a recipe of this kind
    summary: str


KINDS: dict[str, RecipeKind] = {kind.name: kind for kind in (
    RecipeKind("curate", CurationRecipe, "studio curate", "curation ops in order over one dataset"),
    RecipeKind("generate", GenerationRecipe, "studio generate", "synthetic data through an OpenAI-compatible API"),
    RecipeKind("train", TrainRecipe, "studio run", "one training run of a tuning back-end"),
    RecipeKind("evaluate", EvalRecipe, "studio eval", "benchmarks and judged comparisons of one or more models"),
    RecipeKind("pipeline", PipelineRecipe, "studio run", "other recipes run in order"),
)}


def kind_of(data: Any) -> str | None:
    """The kind a recipe mapping is, from the key only that kind has; None when no key tells."""
    if not isinstance(data, dict):
        return None
    if "backend" in data:
        return "train"
    if "generator" in data:
        return "generate"
    if "tasks" in data:
        return "evaluate"
    steps = data.get("steps")
    if isinstance(steps, list) and steps and all(isinstance(s, dict) for s in steps):
        if all("recipe" in s for s in steps):
            return "pipeline"
        return "curate"
    if "dataset" in data and "steps" in data:
        return "curate"
    return None


def kind_of_recipe(recipe: BaseModel) -> str:
    """The kind of an already validated recipe."""
    return next(kind.name for kind in KINDS.values() if isinstance(recipe, kind.model))
