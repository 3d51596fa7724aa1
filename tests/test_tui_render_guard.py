"""One widget that cannot be laid out or drawn does not end the app (studio.tui.render_guard):
it is replaced by an error line, the user is told, and every other screen keeps working. Errors
anywhere else still end the app, as Textual does."""
from __future__ import annotations

import pytest

pytest.importorskip("textual")

from textual.binding import Binding  # noqa: E402
from textual.widgets import DataTable, Static  # noqa: E402

from studio.tui.app import StudioApp  # noqa: E402
from studio.tui.render_guard import RenderFailed, render_culprit  # noqa: E402
from studio.tui.screens.datasets import DatasetsScreen  # noqa: E402
from studio.tui.screens.plugins import PluginsScreen  # noqa: E402
from test_tui import make_host, plain, settle, workspace  # noqa: E402,F401

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


class BrokenPaint(Static):
    def render(self):
        raise ZeroDivisionError("cannot paint this")


class BrokenLayout(Static):
    # What Rich does when asked to wrap text into zero columns, raised while the screen lays out.
    def get_content_height(self, container, viewport, width):
        raise ValueError("range() arg 3 must not be zero")


async def mount_and_check(app: StudioApp, pilot, widget: Static) -> None:
    screen = app.screen
    assert isinstance(screen, DatasetsScreen)
    await screen.mount(widget, before=screen.query_one("#datasets-body"))
    await settle(pilot)

    assert app.is_running and app.return_code in (None, 0)
    assert widget.display is False
    failed = screen.query_one(RenderFailed)
    assert failed.failed_widget is widget and "could not be drawn" in plain(failed.content)
    assert len(app.render_failures) == 1
    assert [n for n in app._notifications if n.severity == "error" and "could not be drawn" in n.title]

    # The rest of the app is usable: the table moves, the modes switch and come back.
    table = screen.query_one("#dataset-table", DataTable)
    table.focus()
    await pilot.press("down")
    assert table.cursor_row == 1
    await pilot.press("2")
    await settle(pilot)
    assert isinstance(app.screen, PluginsScreen) and app.screen.query_one("#plugin-table", DataTable).row_count
    await pilot.press("1")
    await settle(pilot)
    assert app.screen is screen and app.is_running


async def test_a_widget_that_cannot_paint_is_replaced_and_the_app_goes_on(workspace):
    app = StudioApp(workspace, host=make_host())
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await mount_and_check(app, pilot, BrokenPaint("x", id="broken"))
    assert app.return_code in (None, 0)


async def test_a_widget_that_cannot_be_laid_out_is_replaced_and_the_app_goes_on(workspace):
    app = StudioApp(workspace, host=make_host())
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await mount_and_check(app, pilot, BrokenLayout("x", id="broken"))
    assert app.return_code in (None, 0)


class FailingActionApp(StudioApp):
    BINDINGS = [*StudioApp.BINDINGS, Binding("z", "explode", "Explode")]

    def action_explode(self) -> None:
        raise RuntimeError("a bug in a key handler")


async def test_errors_outside_layout_and_paint_still_end_the_app(workspace):
    app = FailingActionApp(workspace, host=make_host())
    with pytest.raises(RuntimeError, match="a bug in a key handler"):
        async with app.run_test(size=(100, 30)) as pilot:
            await settle(pilot)
            await pilot.press("z")
            await settle(pilot)
    assert app.render_failures == []


def test_render_culprit_names_the_innermost_widget_only_for_layout_and_paint_errors():
    widget = BrokenPaint("x")
    try:
        widget._render()  # Textual's paint entry point: render() is called below it
    except ZeroDivisionError as exc:
        assert render_culprit(exc) is widget
    try:
        widget.render()  # called directly, not by Textual's layout or paint
    except ZeroDivisionError as exc:
        assert render_culprit(exc) is None
