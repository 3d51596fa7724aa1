"""One pydantic model drives recipe validation, key=value overrides, listings and form descriptions."""
from __future__ import annotations

from typing import Literal

import pytest
from pydantic import BaseModel, ConfigDict, Field

from studio.config_schema import describe, validate
from studio.recipes import RecipeError, apply_overrides


class Options(BaseModel):
    threshold: float = Field(0.8, description="similarity above which rows are duplicates")
    fields: Literal["all", "prompt", "response"] = "all"
    keep_first: bool = True
    name: str


def test_describe_lists_fields_with_types_defaults_and_choices():
    specs = {s.name: s for s in describe(Options)}
    assert specs["threshold"].default == 0.8 and specs["threshold"].help.startswith("similarity")
    assert specs["fields"].choices == ["all", "prompt", "response"]
    assert specs["name"].required and not specs["keep_first"].required
    assert specs["fields"].to_dict() == {"name": "fields", "type": "Literal",
                                         "default": "all", "required": False, "help": "",
                                         "choices": ["all", "prompt", "response"]}


def test_key_value_overrides_parse_json_and_nest():
    assert apply_overrides({}, ["a=1", "b.c=hello", "d=[1, 2]", "e=true"]) == {
        "a": 1, "b": {"c": "hello"}, "d": [1, 2], "e": True}
    with pytest.raises(RecipeError, match="KEY=VALUE"):
        apply_overrides({}, ["novalue"])
    with pytest.raises(ValueError, match="name: Field required"):
        validate(Options, {"threshold": 0.1})


def test_overrides_reach_into_list_entries_and_merge_mappings():
    data = {"steps": [{"op": "a"}, {"op": "b", "threshold": 0.7}], "config": {"x": 1, "y": 2}}
    out = apply_overrides(data, ["steps.1.threshold=0.9", 'config={"y": 3}'])
    assert out == {"steps": [{"op": "a"}, {"op": "b", "threshold": 0.9}], "config": {"x": 1, "y": 3}}
    assert data["steps"][1]["threshold"] == 0.7  # the input is not changed
    with pytest.raises(RecipeError, match="there is no step 2"):
        apply_overrides(data, ["steps.2.threshold=1"])
    with pytest.raises(RecipeError, match="steps.0"):
        apply_overrides(data, ["steps.first.threshold=1"])


def test_unknown_options_are_refused_with_the_nearest_name_even_when_the_model_allows_extras():
    class Lenient(BaseModel):
        model_config = ConfigDict(extra="allow")
        threshold: float = 0.5

    for model in (Lenient, Options):
        with pytest.raises(ValueError, match=r"treshold: Extra inputs are not permitted \(did you mean 'threshold'\?\)"):
            validate(model, {"treshold": 0.8, "name": "x"})
