"""The whole plugin contract of the studio.

Every capability (dataset formats, curation ops, generators, tuning back-ends, evaluators, CLI
commands, TUI screens) arrives through one of these hooks, built-in or third-party alike.
Registration hooks receive a ``register`` callback instead of returning values, so the host
owns naming, de-duplication and failure isolation. Every registered item carries a pydantic
``config_model``: that one model validates recipes, becomes CLI options and renders TUI forms.

A plugin is a module (or object) with functions marked ``@hookimpl`` and exposed through the
``studio.plugins`` entry-point group::

    [project.entry-points."studio.plugins"]
    my_plugin = "my_package.plugin_module"

The hooks (each documented below; ``tests/test_hookspecs.py`` keeps this list complete):

- ``register_formats``: dataset formats (read, write, detection score).
- ``register_curation_ops``: curation operations chained by curation recipes.
- ``register_generators``: synthetic data generators using an OpenAI-compatible client.
- ``register_backends``: tuning back-ends, run in a run subprocess.
- ``register_evaluators``: evaluators producing reports.
- ``register_commands``: extra top-level CLI commands.
- ``register_screens``: extra screens of the terminal app.

A hook that raises, or a module that fails to import, marks only its own plugin ``failed`` in
``studio plugins list``; ``STUDIO_STRICT_PLUGINS=1`` turns such failures into errors. An
implementation of an unknown hook (a misspelt name) fails its plugin at registration. When two
plugins register an item under the same name, the first registered (built-ins first, then by
plugin name) keeps it and the other plugin's error says so. See ``examples/studio-chatml`` for a
complete third-party plugin.
"""
from __future__ import annotations

import pluggy

PROJECT = "studio"
ENTRY_POINT_GROUP = "studio.plugins"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_formats(register):
    """Register dataset formats.

    Call ``register(fmt)`` with an instance of :class:`studio.data.format_kit.DatasetFormat`
    for each format the plugin reads and writes. A format maps one raw row to a canonical
    :class:`studio.records.Record` and back, and scores how well it explains a sample of rows
    so that automatic detection can pick it. :mod:`studio.data.format_kit` is the one module a
    format author imports: the contract, the helpers every built-in format uses (field checks
    whose errors name the field, detection scoring, layout hints, message lists, tool calls) and
    a complete worked example in its docstring.
    """


@hookspec
def register_curation_ops(register):
    """Register curation operations (dedup, filters, decontamination, splits...).

    Call ``register(op)`` with a :class:`studio.curation.op_base.CurationOp`: ``name``,
    ``title``, ``summary``, ``category``, a pydantic ``config_model`` and
    ``run(data, config, ctx) -> OpResult`` saying which rows to keep, why each other row went
    (and which row it duplicates) and which rows changed. Curation recipes chain ops; the
    pipeline writes the new version and the side table of removals.
    """


@hookspec
def register_generators(register):
    """Register synthetic data generators (Self-Instruct, Evol-Instruct, Magpie, judges...).

    Call ``register(generator)`` with a :class:`studio.generation.generator_base.Generator`:
    ``name``, ``title``, ``summary``, a pydantic ``config_model``, what seeds it takes,
    ``estimate(config, seeds, count_tokens)`` for the cost estimate and an async
    ``generate(config, ctx)`` yielding records. It asks the model only through ``ctx.chat`` /
    ``ctx.complete``; the host supplies the OpenAI-compatible client, concurrency, rate limits,
    retries, the journal that makes re-runs and resumes free, cost metering and budgets.
    """


@hookspec
def register_backends(register):
    """Register tuning back-ends (SFT, reward modelling, DPO family, PPO...).

    Call ``register(backend)`` with a :class:`studio.training.backend_base.Backend`: ``name``,
    ``title``, ``summary``, a pydantic ``config_model`` (the recipe's ``config:`` section), the
    record kind it trains on (``data_kind``), the adapter methods it supports and
    ``train(ctx) -> metrics``. The :class:`~studio.training.backend_base.TrainContext` brings the
    checked data, model loading, trainer arguments, adapters, the events callback (metrics,
    alerts, cancellation) and checkpoint resume. Back-ends run inside the run subprocess
    (``studio run``), never inside the TUI process.
    """


@hookspec
def register_evaluators(register):
    """Register evaluators (benchmarks, held-out loss, judged comparisons...).

    Call ``register(evaluator)`` with a :class:`studio.evaluation.base.Evaluator`: ``name``
    (the task name of ``studio eval``), ``title``, ``summary``, a pydantic ``config_model`` (the
    task's options in a recipe, the CLI and the Evaluate screen), what it asks of a model
    (``uses``), ``load(config) -> items`` from local files, ``score(ctx, items) -> samples`` and
    optionally ``aggregate`` and ``pairwise``. The runner caches samples per model fingerprint,
    task, options and item, writes the report and compares models.
    """


@hookspec
def register_commands(register):
    """Register top-level CLI commands.

    Call ``register(command)`` with a :class:`studio.extensions.Command`: a name, a help
    line, ``configure(parser)`` to add argparse arguments and ``run(args) -> int``. The studio's
    own commands arrive through this hook too (``plugins/studio_cli``), so a plugin's command
    sits beside them in ``studio --help``; a name the studio already uses stays the studio's.
    """


@hookspec
def register_screens(register):
    """Register screens of the terminal app.

    Call ``register(screen)`` with a :class:`studio.extensions.ScreenEntry`: a name, a title, a
    key binding and a zero-argument ``factory`` returning a Textual ``Screen``. Import Textual
    inside the factory so the headless CLI never pays for it.
    """
