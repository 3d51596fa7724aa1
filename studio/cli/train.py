"""``studio train``: the installed tuning back-ends and the template / loss-mask preview."""
from __future__ import annotations

import argparse

from studio.cli.shared import EXIT_OK, console, dispatch, host, print_json, recipe_path, subcommands, workspace
from studio.extensions import Command


def cmd_backends(args) -> int:
    rows = host().describe("backend")
    if args.json:
        print_json(rows)
        return EXIT_OK
    out = console()
    for row in rows:
        out.print(f"[bold]{row['name']}[/]  {row['summary']}  (data: {row['data']}; adapters: "
                  f"{', '.join(row['adapters'])})")
        for field in row["fields"]:
            out.print(f"    {field['name']:<24} {field['type']:<10} {field['help']} "
                      f"[dim](default {field['default']!r})[/]")
    return EXIT_OK


def cmd_preview(args) -> int:
    from studio.recipes import load_recipe
    from studio.training.preview import preview

    ws = workspace(args)
    recipe = load_recipe(recipe_path(args.recipe, ws), args.overrides, kind="train")
    shown = preview(ws, recipe, args.index)
    if args.json:
        print_json(shown)
        return EXIT_OK
    from rich.text import Text

    text = Text()
    for segment in shown["segments"]:
        text.append(segment["text"], style="bold green underline" if segment["loss"] else "dim")
    out = console()
    out.print(f"record {shown['index']} of {shown['records']}: {shown['tokens']} tokens, "
              f"{shown['loss_tokens']} carry loss (bold green)")
    out.print(text)
    return EXIT_OK


def configure(p: argparse.ArgumentParser) -> None:
    actions = subcommands(p, "train_command", [
        ("backends", "installed tuning back-ends and their options", cmd_backends),
        ("preview", "render one training record through the chat template, loss tokens marked", cmd_preview),
    ])
    preview = actions["preview"]
    preview.add_argument("recipe", metavar="RECIPE")
    preview.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    preview.add_argument("--index", type=int, default=0, help="which training record")


COMMANDS = [Command("train", "tuning back-ends and the template / loss-mask preview", configure, dispatch)]
