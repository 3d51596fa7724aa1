"""Snapshot of the curation results view: removals by reason, a duplicate next to its kept
original, with an override marked. The data is fixed and versions are content-addressed, so
the picture depends on neither the machine nor the day. Update after checking the report:
``pytest tests/test_tui_curate_snapshots.py --snapshot-update``."""
from __future__ import annotations

import pytest

pytest.importorskip("textual")
pytest.importorskip("pytest_textual_snapshot")

from test_tui_curate import curate_host, notes_records  # noqa: E402

from studio.curation.pipeline import run_pipeline  # noqa: E402
from studio.recipes import load_recipe  # noqa: E402
from studio.store import Workspace  # noqa: E402
from studio.tui.app import StudioApp  # noqa: E402

SIZE = (140, 40)


@pytest.fixture
def curated(tmp_path) -> Workspace:
    ws = Workspace.init(tmp_path / "demo-workspace")
    ws.write_version("notes", notes_records(), operation={"name": "import", "format": "sharegpt"})
    recipe = load_recipe({"dataset": "notes", "output": "notes-clean",
                          "steps": [{"op": "exact_dup"}, {"op": "too_short"}, {"op": "redact"}]})
    run_pipeline(ws, recipe, curate_host().items("curation_op"))
    return ws


def test_snapshot_curation_results(snap_compare, curated):
    app = StudioApp(curated, host=curate_host())

    async def run_before(pilot) -> None:
        await pilot.pause()
        await app.workers.wait_for_complete()
        app.switch_mode("curate")
        await pilot.pause()
        app.curation_results("notes-clean")
        await pilot.pause()
        await app.workers.wait_for_complete()
        await pilot.pause()
        app.screen.query_one("#entry-table").focus()
        await pilot.press("down", "k")  # the lower-case copy of row 2, marked to restore
        await pilot.pause()
        app.sub_title = "demo-workspace"  # instead of the temporary path

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)
