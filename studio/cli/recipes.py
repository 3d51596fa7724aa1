"""``studio recipes``: the shipped and workspace recipes — list them, validate them, copy one to edit."""
from __future__ import annotations

import argparse
from pathlib import Path

from studio.cli.shared import EXIT_ERROR, EXIT_OK, console, dispatch, print_json, recipe_path, subcommands, workspace
from studio.extensions import Command


def cmd_ls(args) -> int:
    from studio.recipes.catalog import list_recipes

    rows = list_recipes(workspace(args, required=False))
    if args.json:
        print_json(rows)
        return EXIT_OK
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    for column in ("recipe", "kind", "what it does"):
        table.add_column(column, overflow="ellipsis", no_wrap=column != "what it does")
    for row in rows:
        table.add_row(row["name"], row["kind"] + (f" ({row['backend']})" if row.get("backend") else ""),
                      row["description"][:160])
    console().print(table)
    return EXIT_OK


def cmd_validate(args) -> int:
    from studio.recipe_runs import recipe_problems
    from studio.recipes.catalog import list_recipes

    ws = workspace(args, required=False)
    paths = [recipe_path(r, ws) for r in args.recipes] or [Path(r["path"]) for r in list_recipes(None)]
    results = {str(p): recipe_problems(p) for p in paths}
    if args.json:
        print_json(results)
    else:
        for path, problems in results.items():
            console().print(f"{'[green]ok[/]  ' if not problems else '[red]bad[/] '} {path}")
            for problem in problems:
                console().print(f"     {problem}", markup=False)
    return EXIT_OK if all(not p for p in results.values()) else EXIT_ERROR


def cmd_cp(args) -> int:
    from studio.recipes.catalog import copy_recipe

    dest = copy_recipe(args.recipe, Path(args.dest), workspace(args, required=False))
    console().print(f"copied to {dest}; run it with: studio run {dest}")
    return EXIT_OK


def configure(p: argparse.ArgumentParser) -> None:
    actions = subcommands(p, "recipes_command", [
        ("ls", "recipes with what they do and the command that runs them", cmd_ls),
        ("validate", "validate recipes against the plugins' schemas (default: all shipped)", cmd_validate),
        ("cp", "copy a recipe to edit (repository data paths made absolute)", cmd_cp),
    ])
    actions["validate"].add_argument("recipes", nargs="*", metavar="RECIPE")
    actions["cp"].add_argument("recipe", metavar="RECIPE")
    actions["cp"].add_argument("dest", nargs="?", default=".", metavar="DEST")


COMMANDS = [Command("recipes", "shipped and workspace recipes: list, validate, copy to edit", configure, dispatch)]
