"""Which engine runs a curation recipe: this machine's cores (``local``) or Ray Data (``ray``).

The recipe's ``engine`` and ``address`` choose, and the CLI's ``--engine`` / ``--address`` override
them; both engines take the same arguments and give the same :class:`PipelineResult`."""
from __future__ import annotations

from typing import Any

from studio.curation.pipeline import PipelineResult, run_pipeline
from studio.curation.ray_engine import import_ray, run_on_ray
from studio.recipes.curate import CurationRecipe

ENGINES = ("local", "ray")


def run_curation(ws, recipe: CurationRecipe, ops: dict[str, Any], engine: str | None = None,
                 address: str | None = None, **kwargs: Any) -> PipelineResult:
    engine = engine or recipe.engine
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; choose one of: {', '.join(ENGINES)}")
    address = address or recipe.address
    if address and engine != "ray":
        raise ValueError("an address is for --engine ray (a running Ray cluster)")
    if engine == "ray":
        import_ray()  # says how to install Ray before anything starts
        return run_on_ray(ws, recipe, ops, address=address, **kwargs)
    return run_pipeline(ws, recipe, ops, **kwargs)
