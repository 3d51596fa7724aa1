"""Snapshot of review mode on preference pairs with a flag, a swap and a deletion pending. The
data is fixed and versions are content-addressed, so the picture depends on neither the machine
nor the day. Update after checking the report: ``pytest tests/test_review_snapshots.py
--snapshot-update``."""
from __future__ import annotations

import pytest

pytest.importorskip("textual")
pytest.importorskip("pytest_textual_snapshot")

from test_review_tui import review_records  # noqa: E402
from test_tui import make_host  # noqa: E402

from studio.store import Workspace  # noqa: E402
from studio.tui.app import StudioApp  # noqa: E402

SIZE = (120, 36)


def test_snapshot_review_screen(snap_compare, tmp_path):
    ws = Workspace.init(tmp_path / "demo-workspace")
    ws.write_version("pairs", review_records(), operation={"name": "import", "format": "trl_preference"})
    app = StudioApp(ws, host=make_host())

    async def run_before(pilot) -> None:
        await pilot.pause()
        await app.workers.wait_for_complete()
        app.review_dataset("pairs")
        await pilot.pause()
        await app.workers.wait_for_complete()
        await pilot.pause()
        await pilot.press("f", "n", "d", "n", "s")
        await pilot.pause()
        app.sub_title = "demo-workspace"  # instead of the temporary path

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)
