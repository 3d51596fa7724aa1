"""Pipeline steps take what an earlier step made: ``previous`` or ``step:<id>``, on any model or
dataset key of a step's ``set:`` (``config.reward_model`` included); unknown ids and references
to a later step are clear errors that ``studio recipes validate`` reports."""
from __future__ import annotations

import pytest
import yaml

from conftest import ROOT
from studio.recipe_runs import StepOutcome, _with_references, recipe_problems
from studio.recipes import RecipeError, load_recipe
from studio.recipes.pipeline import PipelineRecipe, made_kind

RECIPES = ROOT / "recipes"


def pipeline(steps: list[dict]) -> PipelineRecipe:
    return PipelineRecipe.model_validate({"steps": steps})


def test_model_and_dataset_keys_are_recognised_at_any_depth():
    assert [made_kind(k) for k in ("model", "config.reward_model", "models", "dataset", "eval_dataset",
                                   "training.max_steps", "config.keywords")] == [
        "model", "model", "models", "dataset", "dataset", None, None]


def test_a_step_names_an_earlier_step_by_id():
    recipe = pipeline([{"id": "sft", "recipe": "a.yaml"}, {"id": "rm", "recipe": "b.yaml"},
                       {"recipe": "c.yaml", "set": {"model": "step:sft", "config.reward_model": "previous"}}])
    assert [s.id for s in recipe.steps] == ["sft", "rm", None]


@pytest.mark.parametrize("steps, words", [
    ([{"recipe": "a.yaml", "set": {"model": "previous"}}], "needs a step before it"),
    ([{"id": "sft", "recipe": "a.yaml"}, {"recipe": "b.yaml", "set": {"model": "step:stf"}}],
     "`model: step:stf` names no step (ids: 'sft')"),
    ([{"recipe": "a.yaml", "set": {"config.reward_model": "step:rm"}}, {"id": "rm", "recipe": "b.yaml"}],
     "names step 1, which runs after it"),
    ([{"id": "rm", "recipe": "a.yaml", "set": {"config.reward_model": "step:rm"}}], "which runs as this step"),
    ([{"id": "x", "recipe": "a.yaml"}, {"id": "x", "recipe": "b.yaml"}], "id 'x' is also step 0's"),
    ([{"id": "a", "recipe": "a.yaml"}, {"recipe": "e.yaml", "set": {"models": ["embedded", "step:b"]}}],
     "`models: step:b` names no step"),
])
def test_bad_references_are_clear_errors(steps, words):
    with pytest.raises(ValueError) as caught:
        pipeline(steps)
    assert words in str(caught.value)


def test_references_resolve_to_what_the_named_step_made():
    outcomes = [StepOutcome("train", "completed", model="/runs/sft", dataset=None),
                StepOutcome("curate", "completed", dataset="clean@v1"),
                StepOutcome("train", "completed", model="/runs/rm")]
    ids = {"sft": 0, "data": 1, "rm": 2}
    pairs = _with_references({"model": "step:sft", "config.reward_model": "previous", "dataset": "step:data",
                              "models": ["embedded", "step:sft", "previous"], "training.max_steps": 3,
                              "name": "previous"}, outcomes, ids, check=False)
    assert pairs == ["model=/runs/sft", "config.reward_model=/runs/rm", "dataset=clean@v1",
                     'models=["embedded", "/runs/sft", "/runs/rm"]', "training.max_steps=3", "name=previous"]
    with pytest.raises(RecipeError, match="`dataset: step:sft` needs step 'sft'.*made a dataset"):
        _with_references({"dataset": "step:sft"}, outcomes, ids, check=False)


def test_a_check_keeps_top_level_values_and_names_nested_references():
    pairs = _with_references({"model": "step:sft", "config.reward_model": "step:rm", "models": ["step:sft"]},
                             [], {}, check=True)
    assert pairs == ["config.reward_model=step:rm", 'models=["previous"]']


def test_validate_reports_a_pipeline_with_a_reference_to_a_later_step(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("# studio run bad.yaml\n" + yaml.safe_dump({"steps": [
        {"recipe": str(RECIPES / "train-sft-lora.yaml"), "set": {"model": "step:rm"}},
        {"id": "rm", "recipe": str(RECIPES / "train-reward.yaml")}]}))
    problems = recipe_problems(path)
    assert len(problems) == 1 and "step:rm` names step 1, which runs after it" in problems[0]


def test_validate_checks_each_step_with_its_set_applied(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("# studio run typo.yaml\n" + yaml.safe_dump({"steps": [
        {"id": "sft", "recipe": str(RECIPES / "train-sft-lora.yaml")},
        {"recipe": str(RECIPES / "train-dpo.yaml"), "set": {"model": "step:sft", "config.beta": -1}}]}))
    problems = recipe_problems(path)
    assert problems and all("step 1" in p for p in problems) and "beta" in " ".join(problems)


def test_the_shipped_ppo_pipelines_validate():
    for name in ("rlhf.yaml", "train-ppo-rm.yaml"):
        assert recipe_problems(RECIPES / name) == [], name
        assert isinstance(load_recipe(RECIPES / name), PipelineRecipe)
