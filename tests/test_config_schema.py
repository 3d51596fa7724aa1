"""One pydantic model drives CLI options, key=value overrides and form descriptions."""
from __future__ import annotations

import argparse
from typing import Literal

import pytest
from pydantic import BaseModel, Field

from studio.config_schema import add_options, describe, from_namespace, parse_pairs, validate


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


def test_cli_options_are_validated_by_the_model():
    parser = argparse.ArgumentParser()
    add_options(parser, Options)
    args = parser.parse_args(["--threshold", "0.5", "--no-keep-first", "--name", "x"])
    assert from_namespace(Options, args) == Options(threshold=0.5, keep_first=False, name="x")
    with pytest.raises(SystemExit):
        parser.parse_args(["--fields", "everything"])
    bad = parser.parse_args(["--threshold", "high", "--name", "x"])
    with pytest.raises(ValueError, match="threshold"):
        from_namespace(Options, bad)


def test_key_value_overrides_parse_json_and_nest():
    assert parse_pairs(["a=1", "b.c=hello", "d=[1, 2]", "e=true"]) == {
        "a": 1, "b": {"c": "hello"}, "d": [1, 2], "e": True}
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_pairs(["novalue"])
    with pytest.raises(ValueError, match="name: Field required"):
        validate(Options, {"threshold": 0.1})


def test_list_and_mapping_options_parse_from_json_text():
    class ListOptions(BaseModel):
        languages: list[str] = ["en"]
        sizes: dict[str, float] = {"train": 1.0}

    parser = argparse.ArgumentParser()
    add_options(parser, ListOptions)
    args = parser.parse_args(["--languages", '["en", "fr"]', "--sizes", '{"train": 0.8, "test": 0.2}'])
    assert from_namespace(ListOptions, args) == ListOptions(languages=["en", "fr"], sizes={"train": 0.8, "test": 0.2})
