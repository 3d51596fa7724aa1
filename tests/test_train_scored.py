"""recipes/train-dpo-scored.yaml: DPO straight from a scored multi-response file (Magpie shape),
the best response of each row against the worst, with the recipe's learning checks."""
from __future__ import annotations

import pytest

from conftest import ROOT
from studio.plugins import PluginHost
from studio.store import Workspace

import studio_format_scored


def scored_host() -> PluginHost:
    """The installed plugins plus the scored format (its entry point counts once the studio is re-installed)."""
    host = PluginHost()
    if "scored" not in host.plugins:
        host.add_plugin(studio_format_scored, "scored")
    return host


def test_a_recipe_passes_format_options_to_its_data_file(tmp_path):
    from studio.recipes import load_recipe
    from studio.training.preflight import preflight

    ws = Workspace.init(tmp_path / "ws")
    path = ROOT / "recipes" / "train-dpo-scored.yaml"
    each = preflight(ws, load_recipe(path, ["format_options={\"pairs\": \"best_each\"}"]), scored_host())
    # 52 rows of five responses: one pair each by default, up to four with best_each.
    assert len(each.train) + len(each.eval) > 52 * 3
    with pytest.raises(ValueError, match="no format takes the option 'pair'"):
        preflight(ws, load_recipe(path, ["format_options={\"pair\": \"best_each\"}"]), scored_host())


@pytest.mark.slow
def test_dpo_recipe_trains_on_a_scored_file_and_its_checks_pass(tmp_path, monkeypatch):
    from studio.recipes import load_recipe
    from studio.training.backend_base import TrainContext
    from studio.training.expectations import check_all
    from studio.training.preflight import preflight

    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(tmp_path / "tensorboard"))
    path = ROOT / "recipes" / "train-dpo-scored.yaml"
    assert path.read_text().startswith("# studio run recipes/train-dpo-scored.yaml\n")
    recipe = load_recipe(path)
    ws = Workspace.init(tmp_path / "ws")
    # In this process, so the run sees the scored format whether or not the studio was re-installed.
    checked = preflight(ws, recipe, scored_host())
    assert checked.source["format"] == "scored"
    assert len(checked.train) + len(checked.eval) == 52
    events = []
    ctx = TrainContext(recipe=recipe, config=checked.config, run_dir=tmp_path / "run", train_records=checked.train,
                       eval_records=checked.eval, emit=lambda name, **f: events.append({"event": name, **f}))
    final = checked.backend.train(ctx)
    history = [e for e in events if e["event"] in ("metrics", "eval")]
    checks = check_all(recipe.expect, history, final)
    assert len(checks) == len(recipe.expect) == 3
    assert all(c["passed"] for c in checks), checks
