"""The recipes a user can start from: the shipped ``recipes/`` folder and the workspace's own
``recipes/`` folder. Each recipe's leading comment says what it does and the command that runs it."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from studio import resources
from studio.data.refs import resolve_data_path
from studio.recipes.kinds import kind_of
from studio.recipes.loading import RecipeError, read_recipe_data


def shipped_dir() -> Path | None:
    return resources.recipes_dir()


def recipe_dirs(ws=None) -> list[Path]:
    dirs = [d for d in (shipped_dir(),) if d is not None]
    if ws is not None and (Path(ws.root) / "recipes").is_dir():
        dirs.append(Path(ws.root) / "recipes")
    return dirs


def header(path: Path) -> tuple[str, str]:
    """(command, description) from the leading comment block."""
    command, lines = "", []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        text = line.lstrip("#").strip()
        if not command and text.startswith("studio "):
            command = text
        elif text:
            lines.append(text)
    return command, " ".join(lines)


def recipe_kind(path: Path) -> str:
    """The kind of the recipe in a file, ``invalid`` when it cannot be read or told."""
    try:
        return kind_of(read_recipe_data(path)) or "invalid"
    except RecipeError:
        return "invalid"


def list_recipes(ws=None) -> list[dict[str, Any]]:
    out = []
    for folder in recipe_dirs(ws):
        for path in sorted(folder.glob("*.yaml")):
            command, description = header(path)
            try:
                data = read_recipe_data(path)
            except RecipeError:
                data = {}
            out.append({"name": path.stem, "path": str(path), "kind": kind_of(data) or "invalid",
                        "command": command, "description": description, "backend": data.get("backend"),
                        "shipped": folder == shipped_dir()})
    return out


def find_recipe(name_or_path: str, ws=None) -> Path:
    """A recipe file: the path itself when it exists, else a recipe of that name in the
    workspace's or the shipped recipes."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    stem = re.sub(r"\.ya?ml$", "", path.name)
    for folder in reversed(recipe_dirs(ws)):  # the workspace's own recipe wins over a shipped one
        if (folder / f"{stem}.yaml").is_file():
            return folder / f"{stem}.yaml"
    raise RecipeError(f"no recipe {name_or_path!r}: not a file, and no shipped or workspace recipe has that "
                      f"name (see `studio recipes ls`)")


def copy_recipe(name_or_path: str, dest: Path, ws=None) -> Path:
    """Copy a recipe to edit; relative data paths become the absolute paths loading the original
    would use, so the copy runs from anywhere."""
    source = find_recipe(name_or_path, ws)
    dest = Path(dest)
    if dest.is_dir():
        dest = dest / source.name
    if dest.exists():
        raise RecipeError(f"{dest} exists; choose another name")
    text = source.read_text(encoding="utf-8")

    def absolute(match: re.Match) -> str:
        key, value = match.group(1), match.group(2)
        found = value if Path(value).is_absolute() else resolve_data_path(value, source.parent)
        return f"{key}{found}" if found != value else match.group(0)

    text = re.sub(r"^(\s*(?:dataset|eval_dataset|seed_dataset|recipe):\s*)(\S+)\s*$", absolute, text, flags=re.M)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(text, encoding="utf-8")
    return dest
