"""`studio reward`: the reward-model workbench.

    studio reward eval RUN_OR_MODEL --data DATASET_OR_FILE [--limit N] [--bins N] [--json]
    studio reward score RUN_OR_MODEL DATASET --output NAME [--json]

RUN_OR_MODEL is a `reward` run (its id, a unique part of it, or its folder) or a model folder.
``eval`` scores preference pairs: accuracy (chosen above rejected), reward distributions as text
histograms, margins and length bias. ``score`` writes a new stored dataset version with each
record's reward in ``meta.reward`` (pairs also get ``reward_rejected`` and ``reward_margin``).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from studio.cli.shared import EXIT_OK, CliError, dispatch, host, print_json, workspace
from studio.extensions import Command


def configure(reward: argparse.ArgumentParser) -> None:
    rsub = reward.add_subparsers(dest="reward_command", metavar="ACTION", required=True)
    p = rsub.add_parser("eval", help="accuracy, reward distributions and length bias on preference pairs")
    p.add_argument("model", metavar="RUN_OR_MODEL")
    p.add_argument("--data", "-d", required=True, help="stored dataset NAME[@VERSION] or a data file of pairs")
    p.add_argument("--limit", type=int, help="only the first N records")
    p.add_argument("--bins", type=int, default=10, help="histogram bins (default 10)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_reward_eval)
    p = rsub.add_parser("score", help="store a new dataset version with each record's reward in meta")
    p.add_argument("model", metavar="RUN_OR_MODEL")
    p.add_argument("dataset", help="stored dataset NAME[@VERSION]")
    p.add_argument("--output", "-o", required=True, help="name of the dataset to write (a new version)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_reward_score)
    for q in rsub.choices.values():
        q.add_argument("--workspace", "-w", default=argparse.SUPPRESS, help="workspace folder")


def _load(args, ws):
    from studio.training.reward_workbench import load_reward_model

    try:
        return load_reward_model(args.model, ws)
    except ValueError as exc:
        raise CliError(str(exc)) from None


def cmd_reward_eval(args) -> int:
    from studio.data.refs import looks_like_file
    from studio.training.data import load_records
    from studio.training.reward_workbench import evaluate, report_text

    if args.bins < 2:
        raise CliError("--bins must be 2 or more")
    # A workspace is needed only to find a stored dataset or a run by its id.
    ws = workspace(args, required=not (looks_like_file(args.data) and Path(args.model).expanduser().is_dir()))
    loaded = load_records(args.data, ws, host().formats(), args.limit)
    model = _load(args, ws)
    try:
        report = evaluate(model, loaded.records, bins=args.bins)
    except ValueError as exc:
        raise CliError(f"{args.data}: {exc}") from None
    header = {"model": model.location, "data": loaded.source.get("ref"), "records": len(loaded.records)}
    if args.json:
        print_json({**header, **report})
        return EXIT_OK
    print(f"reward model {header['model']}\non {header['data']}: {report['pairs']} pair(s) of "
          f"{header['records']} record(s)\n")
    print(report_text(report))
    return EXIT_OK


def cmd_reward_score(args) -> int:
    from studio.training.reward_workbench import score_dataset

    ws = workspace(args)
    ws.open(args.dataset)  # a missing dataset fails here, before the model loads
    model = _load(args, ws)
    info = score_dataset(ws, model, args.dataset, args.output)
    if args.json:
        print_json(info.to_dict())
        return EXIT_OK
    mean = info.operation.get("mean_reward")
    print(f"scored {info.operation['scored']} of {info.num_records} record(s) of {info.operation['input']} with "
          f"{model.location}\n-> {info.dataset}@{info.id}"
          + (f" (mean reward {mean:.3f})" if isinstance(mean, float) else ""), file=sys.stdout)
    return EXIT_OK


COMMANDS = [Command("reward", "judge a reward model on preference pairs; score a dataset with it", configure,
                    dispatch, description=__doc__)]
