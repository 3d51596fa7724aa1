"""Snapshot of the Generate screen configured and estimated, before a run: the provider, the
generator with its summary, the seed dataset, the generated forms and the estimate. The embedded
provider (no port in its description) and fixed data keep the picture independent of the
machine. Update after checking the report:
``pytest tests/test_generate_tui_snapshots.py --snapshot-update``."""
from __future__ import annotations

import pytest

pytest.importorskip("textual")
pytest.importorskip("pytest_textual_snapshot")

from test_generate_tui import PROMPTS, SIZE, generate_host  # noqa: E402

from studio.records import Record, Turn  # noqa: E402
from studio.store import Workspace  # noqa: E402
from studio.tui.app import StudioApp  # noqa: E402


def test_snapshot_generate_configured_with_estimate(snap_compare, tmp_path):
    ws = Workspace.init(tmp_path / "demo-workspace")
    ws.write_version("prompts", [Record([Turn("user", p)]) for p in PROMPTS], operation={"op": "test"})
    app = StudioApp(ws, host=generate_host())

    async def run_before(pilot) -> None:
        await pilot.pause()
        await app.workers.wait_for_complete()
        await pilot.press("4")
        await pilot.pause()
        screen = app.screen
        screen.query_one("#gen-seeds").value = "prompts"
        screen.query_one("#gen-settings #field-output").value = "answers"
        screen.query_one("#gen-settings #field-temperature").value = "0.7"
        await pilot.pause()
        screen.query_one("#gen-rows").focus()
        await pilot.press("e")
        await pilot.pause()
        await app.workers.wait_for_complete()
        await pilot.pause()
        app.sub_title = "demo-workspace"  # instead of the temporary path

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)
