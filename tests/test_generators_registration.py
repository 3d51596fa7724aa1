"""The built-in generator plugins register through the plugin host like any plugin, and each
generator's config model documents every field (CLI help and TUI labels come from it)."""
from __future__ import annotations

import importlib.metadata as md

import pytest

from studio.plugins import PluginHost
from studio.records import Record, Turn

PACKAGES = {
    "generate_self_instruct": "studio_generate_self_instruct",
    "generate_evol": "studio_generate_evol",
    "generate_magpie": "studio_generate_magpie",
    "generate_responses": "studio_generate_responses",
    "generate_preference": "studio_generate_preference",
}
GENERATORS = {"self_instruct", "evol_instruct", "magpie", "responses", "preference_pairs", "judge_scores"}


@pytest.fixture(scope="module")
def host() -> PluginHost:
    eps = [md.EntryPoint(name=name, value=module, group="studio.plugins") for name, module in PACKAGES.items()]
    return PluginHost(eps)


def test_generator_plugins_load_and_register(host):
    listing = {p.name: p for p in host.listing()}
    assert {name: p.status for name, p in listing.items()} == {name: "ok" for name in PACKAGES}
    assert set(host.items("generator")) == GENERATORS
    assert set(host.items("curation_op")) == {"judge_filter"}


def test_every_generator_documents_its_config_and_estimates(host):
    seeds = [Record([Turn("user", "Explain tides to a child"), Turn("assistant", "The moon pulls the sea.")])] * 3
    for name, generator in host.items("generator").items():
        assert generator.name == name and generator.title and generator.summary
        assert generator.seeds in ("none", "optional", "required")
        assert generator.produces in ("conversation", "preference", "annotated")
        fields = generator.config_model.model_fields
        assert fields and all(f.description for f in fields.values()), name
        estimate = generator.estimate(generator.config_model(), seeds, lambda t: len(t) // 4 + 1)
        assert estimate.requests > 0 and estimate.prompt_tokens > 0 and estimate.completion_tokens > 0, name
        assert estimate.notes, name


def gibberish(request) -> str:
    # What a tiny randomly initialised model writes: fragments of list markers, labels, JSON and
    # template tokens mixed with noise. Seeded by the request so answers replay identically.
    import random

    rng = random.Random(repr(request.signature()))
    pieces = ["1.", "12)", "Input:", "Output:", "{", "}", '"score":', "sorry", "<|im_end|>", "\n", "Yes", "No",
              "the", "of", "##", "**", "7/10", "-", "é", "blorp", "zq", "Rating:", "0", "99", ":", ",", "?"]
    return " ".join(rng.choice(pieces) for _ in range(rng.randint(0, 40)))


def test_gibberish_answers_never_crash_a_generator(host):
    from generation_fakes import FakeContext, run_generator

    seeds = [Record([Turn("user", f"Explain topic {i} to a child"), Turn("assistant", f"Answer {i}.")])
             for i in range(12)]
    seeds.append(Record([Turn("user", "Which is better?")], [Turn("assistant", "this")], [Turn("assistant", "that")]))
    small = {"self_instruct": dict(target_instructions=5, max_rounds=3), "magpie": dict(num_instructions=12)}
    for name, generator in host.items("generator").items():
        ctx = FakeContext(gibberish, seeds=seeds if generator.seeds != "none" else [])
        records = run_generator(generator, ctx, **small.get(name, {}))
        # Every row is either made or recorded as failed, never silently lost (Self-Instruct's
        # brainstorm candidates are counted in progress messages instead).
        if name in ("responses", "judge_scores", "evol_instruct", "preference_pairs"):
            per_seed = 2 if name == "evol_instruct" else 1
            assert len(records) + len(ctx.failures) == len(seeds) * per_seed, name
        if name == "magpie":
            assert len(records) + len(ctx.failures) == 12
        assert all(r.meta["generation"]["generator"] == name for r in records)
