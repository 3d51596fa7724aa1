"""Inspecting a curated version (studio.curation.inspection): the version source rows point
into, removals grouped by reason, a reason's side-table rows, duplicate clusters and where a
source row ended up. Built-in ops on a small fixed dataset."""
from __future__ import annotations

import pytest

from studio.curation.inspection import (
    cluster_size, group_indices, output_position, reason_groups, source_version,
)
from studio.curation.pipeline import amend_curated, load_origin, load_side_table, run_pipeline
from studio.recipes import load_recipe
from studio.plugins import get_host
from studio.records import Record, Turn
from studio.store import Workspace

ROWS = [
    ("How do I boil an egg?", "Put it in boiling water for nine minutes, then cool it in cold water."),
    ("hi", "yo"),  # too few words
    ("What is the capital of France?", "Paris is the capital and largest city of France by far."),
    ("How do I boil an egg?", "Put it in boiling water for nine minutes, then cool it in cold water."),  # dup of 0
    ("Name a prime number.", "Seven is a prime number, and so are two, three and five."),
    ("how do i boil an egg?", "put it in boiling water for nine minutes, then cool it in cold water."),  # dup of 0
    ("ok", "ok"),  # too few words
]


@pytest.fixture
def curated(tmp_path):
    ws = Workspace.init(tmp_path / "ws")
    source = ws.write_version("notes", [Record([Turn("user", q), Turn("assistant", a)]) for q, a in ROWS],
                              operation={"name": "import"})
    recipe = load_recipe({"dataset": "notes", "output": "clean",
                          "steps": [{"op": "exact_dedup"}, {"op": "length_filter", "min_words": 4}]})
    result = run_pipeline(ws, recipe, get_host().items("curation_op"))
    return ws, f"notes@{source.id}", f"clean@{result.version.id}"


def test_source_version_is_the_pipeline_input_also_through_overrides(curated):
    ws, source, clean = curated
    assert source_version(ws, clean) == source
    restored = amend_curated(ws, clean, restore=[0])
    assert source_version(ws, f"clean@{restored.id}") == source
    # An uncurated version is its own source.
    assert source_version(ws, source) == source


def test_reasons_are_grouped_in_step_order_and_point_at_their_rows(curated):
    ws, _, clean = curated
    side = load_side_table(ws, clean)
    groups = reason_groups(side)
    assert [(g.step, g.op, g.action, g.count) for g in groups] == [
        (0, "exact_dedup", "removed", 2), (1, "length_filter", "removed", 2)]
    dedup_rows = side.select(group_indices(side, groups[0]).tolist()).to_list()
    assert sorted(row["source_index"] for row in dedup_rows) == [3, 5]
    assert {row["duplicate_of"] for row in dedup_rows} == {0}
    assert cluster_size(side, 0) == 2 and cluster_size(side, 2) == 0
    short_rows = side.select(group_indices(side, groups[1]).tolist()).to_list()
    assert sorted(row["source_index"] for row in short_rows) == [1, 6]


def test_output_position_follows_a_source_row_into_the_curated_version(curated):
    ws, _, clean = curated
    origin = load_origin(ws, clean)
    assert [output_position(origin, i) for i in range(len(ROWS))] == [0, None, 1, None, 2, None, None]
