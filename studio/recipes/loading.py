"""Reading, overriding and validating recipes of every kind, with errors that name the file,
the step and the field."""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from studio.config_schema import dotted, error_text
from studio.data.refs import resolve_data_path
from studio.recipes.evaluate import EvalRecipe
from studio.recipes.kinds import KINDS, kind_of


class RecipeError(ValueError):
    """A recipe that cannot be read or is not valid; the message names where and what."""


def read_recipe_data(path: Path) -> dict[str, Any]:
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise RecipeError(f"{path}: not valid YAML: {exc}") from None
    except OSError as exc:
        raise RecipeError(f"{path}: {exc.strerror or exc}") from None
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a recipe is a mapping of keys (see `studio recipes ls` for examples)")
    return data


def parse_override(pair: str) -> tuple[list[str], Any]:
    """``"steps.1.threshold=0.9"`` -> ``(["steps", "1", "threshold"], 0.9)``. Values are read as
    JSON when they can be (numbers, booleans, lists) and stay text otherwise (``model=previous``)."""
    key, sep, raw = pair.partition("=")
    if not sep or not key or "" in key.split("."):
        raise RecipeError(f"override {pair!r} must look like KEY=VALUE (dotted keys reach into sections)")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.split("."), value


def _merge(base: Any, value: Any) -> Any:
    if isinstance(base, dict) and isinstance(value, dict):
        out = dict(base)
        for key, item in value.items():
            out[key] = _merge(out.get(key), item)
        return out
    return value


def _step(items: list, part: str, pair: str, list_key: str) -> int:
    noun = "step" if list_key == "steps" else f"item of {list_key}"
    if not part.isdigit():
        raise RecipeError(f"override {pair!r}: {list_key} is a list; name an entry by its number, "
                          f"e.g. {list_key}.0")
    index = int(part)
    if index >= len(items):
        raise RecipeError(f"override {pair!r}: there is no {noun} {index} "
                          f"(numbered from 0; the recipe has {len(items)})")
    return index


def apply_overrides(data: dict[str, Any], pairs: list[str]) -> dict[str, Any]:
    """A copy of ``data`` with each ``KEY=VALUE`` set. Dotted keys reach into sections and list
    entries (``training.max_steps=100``, ``steps.1.threshold=0.9``); a mapping value merges into a
    mapping already there."""
    out = copy.deepcopy(data)
    for pair in pairs:
        parts, value = parse_override(pair)
        node: Any = out
        for depth, part in enumerate(parts):
            last = depth == len(parts) - 1
            list_key = parts[depth - 1] if depth else "recipe"
            if isinstance(node, list):
                index = _step(node, part, pair, list_key)
                if last:
                    node[index] = _merge(node[index], value)
                else:
                    node = node[index]
            elif isinstance(node, dict):
                if last:
                    node[part] = _merge(node.get(part), value)
                else:
                    if not isinstance(node.get(part), (dict, list)):
                        if part in node and node[part] is not None:
                            raise RecipeError(f"override {pair!r}: {'.'.join(parts[:depth + 1])} is a value, "
                                              f"not a section")
                        node[part] = {}
                    node = node[part]
            else:
                raise RecipeError(f"override {pair!r}: {'.'.join(parts[:depth])} is a value, not a section")
    return out


def step_label(index: int, step: Any) -> str:
    """How every message names a step: its number (from 0, as ``steps.N`` overrides count) and
    what it runs."""
    what = (step.get("op") or step.get("recipe")) if isinstance(step, dict) else getattr(step, "op", None)
    return f"step {index} ({what})" if what else f"step {index}"


def _loc_namer(data: dict[str, Any]):
    steps = data.get("steps") if isinstance(data.get("steps"), list) else []

    def name(loc: tuple) -> str:
        if len(loc) >= 2 and loc[0] == "steps" and isinstance(loc[1], int) and loc[1] < len(steps):
            rest = dotted(loc[2:])
            return step_label(loc[1], steps[loc[1]]) + ("" if rest == "(root)" else f": {rest}")
        return dotted(loc)

    return name


def validate_recipe(data: dict[str, Any], kind: str | None = None, where: str = "recipe") -> BaseModel:
    """The recipe's schema instance; ``kind`` is read from the keys when not given."""
    kind = kind or kind_of(data)
    if kind is None:
        raise RecipeError(f"{where}: not a recipe of a known kind: a training recipe names a `backend`, a "
                          f"generation recipe a `generator`, a curation recipe has `dataset` and `steps` of ops "
                          f"and a pipeline has `steps` of recipes")
    model = KINDS[kind].model
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise RecipeError(f"{where}: {error_text(exc, model, _loc_namer(data))}") from None


def load_recipe(source: Path | str | dict[str, Any], overrides: list[str] | None = None,
                kind: str | None = None) -> BaseModel:
    """Read (a YAML path or a mapping), override and validate a recipe of any kind.

    With ``kind`` given, a recipe of another kind is refused with the command that runs it.
    Relative data paths are resolved against the current folder, the recipe's folder and its
    parent, so a recipe runs from wherever it is started."""
    if isinstance(source, dict):
        data, where, base = copy.deepcopy(source), "recipe", None
    else:
        path = Path(source)
        data, where, base = read_recipe_data(path), str(path), path.parent
    data = apply_overrides(data, overrides or [])
    found = kind_of(data)
    if kind is not None and found is not None and found != kind:
        command = KINDS[found].command
        raise RecipeError(f"{where} is a {found} recipe, not a {kind} recipe: run it with `{command} {where}`")
    recipe = validate_recipe(data, kind or found, where)
    if base is not None:
        updates = {name: resolve_data_path(getattr(recipe, name), base)
                   for name in getattr(recipe, "DATA_FIELDS", ()) if getattr(recipe, name)}
        recipe = recipe.model_copy(update=updates)
        recipe = _resolve_task_paths(recipe, base)
    return recipe


def resolve_task_path(value: str, recipe_folder: Path) -> str:
    """An evaluation task's data file or folder (MMLU's ``dev/val/test``), found like a recipe's
    data files: the current folder, the recipe's folder, its parent, then the shipped files."""
    from studio import resources

    path = Path(value).expanduser()
    if path.is_absolute():
        return str(path)
    root = resources.shipped_root()
    for candidate in (path, recipe_folder / path, recipe_folder.parent / path, root / path if root else None):
        if candidate is not None and candidate.exists():
            return str(candidate.resolve())
    return value


def _resolve_task_paths(recipe: BaseModel, base: Path) -> BaseModel:
    """Data paths inside an evaluation recipe's task entries (and a training recipe's ``eval:``)."""
    fields = getattr(recipe, "TASK_DATA_FIELDS", None)
    holder = "tasks" if fields is not None else "eval"
    tasks = getattr(recipe, holder, None)
    if not tasks:
        return recipe
    fields = fields or EvalRecipe.TASK_DATA_FIELDS
    resolved = []
    for task in tasks:
        data = task.model_dump()
        for name in fields:
            if isinstance(data.get(name), str) and data[name]:
                data[name] = resolve_task_path(data[name], base)
        resolved.append(type(task).model_validate(data))
    return recipe.model_copy(update={holder: resolved})
