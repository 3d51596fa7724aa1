"""One recipe layer for every kind of recipe (curate, generate, train, pipeline).

A recipe is a YAML mapping whose keys tell its kind (:mod:`studio.recipes.kinds`); each kind has
one pydantic schema in this package, which the CLI, the TUI forms and the services share.
:func:`load_recipe` reads a recipe, applies ``KEY=VALUE`` overrides and validates it with errors
naming the file, the step and the field; :mod:`studio.recipes.catalog` lists, finds and copies
the shipped and workspace recipes. Running recipes is the services' job
(:mod:`studio.recipe_runs` for any kind and pipelines of them).
"""
from studio.recipes.kinds import KINDS, kind_of
from studio.recipes.loading import RecipeError, apply_overrides, load_recipe, read_recipe_data, validate_recipe

__all__ = ["KINDS", "RecipeError", "apply_overrides", "kind_of", "load_recipe", "read_recipe_data",
           "validate_recipe"]
