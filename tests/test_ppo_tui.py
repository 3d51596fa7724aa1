"""The PPO back-end in the terminal app: its Train form comes from PPOOptions (Literal fields,
``float | None``, lists) and validates at 80x24; the Runs screen plots a PPO run's reward, KL and
value loss, shows its key metric in the table and names its alerts (hand-written run folders)."""
from __future__ import annotations

import pytest

pytest.importorskip("textual")

import studio_train_ppo  # noqa: E402
from textual.widgets import DataTable, Input, Select  # noqa: E402

from studio.tui.app import StudioApp  # noqa: E402
from studio.tui.screens.runs import RunsScreen  # noqa: E402
from studio.tui.screens.train import TrainScreen  # noqa: E402
from studio.tui.widgets.plot import LinePlot  # noqa: E402
from test_train_tui import (  # noqa: E402, F401 - fixtures
    BackendsPlugin, anyio_backend, choose, make_run, open_mode, set_field, table_rows, text_of, train_host,
    workspace,
)
from test_tui import make_host  # noqa: E402
import studio_format_openai  # noqa: E402
import studio_train_sft  # noqa: E402

pytestmark = pytest.mark.anyio
SMALL = (80, 24)
LARGE = (150, 48)


def ppo_host():
    return make_host((studio_format_openai, "openai_chat"), (studio_train_sft, "train_sft"),
                     (studio_train_ppo, "train_ppo"))


def ppo_events(updates: int = 10, kl_jump_at: int | None = None) -> list[dict]:
    events: list[dict] = [{"event": "start", "backend": "ppo", "model": "embedded", "resume": False},
                          {"event": "train_begin", "step": 0, "max_steps": updates}]
    for step in range(1, updates + 1):
        kl = 0.02 * step + (12.0 if kl_jump_at is not None and step >= kl_jump_at else 0.0)
        events.append({"event": "progress", "step": step, "max_steps": updates, "elapsed": step * 2.0})
        events.append({"event": "metrics", "step": step, "values": {
            "objective/scores": round(0.2 + 0.15 * step, 4), "objective/rlhf_reward": round(0.1 + 0.14 * step, 4),
            "objective/kl": round(kl, 4), "policy/approxkl": 0.001, "val/ratio": 1.0,
            "loss/policy": -0.01, "loss/value": round(1.0 / step, 4), "val/eos_rate": 0.9,
            "val/response_length": 9.0, "episode": 16 * step}})
    events.append({"event": "end", "status": "completed"})
    return events


def ppo_run(ws, run_id="20260101-000300-ppo-dddd", **kw):
    return make_run(ws, run_id, backend="ppo", events=ppo_events(**kw),
                    recipe={"training": {"max_steps": 10},
                            "config": {"reward_funcs": ["format_chatml"], "kl_alert": 5.0}},
                    metrics={"final": {}, "checks": []})


@pytest.mark.parametrize("size", [SMALL, LARGE], ids=["80x24", "150x48"])
async def test_runs_screen_plots_reward_kl_and_value_loss_of_a_ppo_run(workspace, size):
    ppo_run(workspace)
    app = StudioApp(workspace, host=ppo_host())
    async with app.run_test(size=size) as pilot:
        screen = await open_mode(pilot, "6", RunsScreen)
        [row] = table_rows(screen.query_one("#run-table", DataTable))
        assert row[1] == "ppo" and row[4] == "objective/scores 1.7"
        plots = {sel: screen.query_one(sel, LinePlot) for sel in ("#plot-reward", "#plot-kl", "#plot-value")}
        for selector, plot in plots.items():
            assert plot.display and plot.point_count() == 10, selector
        assert plots["#plot-reward"].series[0].label == "objective/scores"
        assert plots["#plot-kl"].series[0].label == "objective/kl"
        assert plots["#plot-value"].series[0].label == "loss/value"
        # No plain loss: the empty loss plot gives its room to the three that have data.
        assert not screen.query_one("#plot-loss").display
        assert plots["#plot-reward"].region.height > 0  # laid out, even at 80x24
        assert "no alerts" in text_of(screen, "#run-alerts")


async def test_runs_screen_replays_a_ppo_runs_kl_bound_from_its_recipe(workspace):
    ppo_run(workspace, kl_jump_at=6)
    app = StudioApp(workspace, host=ppo_host())
    async with app.run_test(size=SMALL) as pilot:
        screen = await open_mode(pilot, "6", RunsScreen)
        alerts = text_of(screen, "#run-alerts")
        assert "kl_bound" in alerts and "past the bound 5" in alerts


async def test_train_form_of_ppo_renders_and_validates_at_80x24(workspace):
    app = StudioApp(workspace, host=ppo_host())
    async with app.run_test(size=SMALL) as pilot:
        screen = await open_mode(pilot, "5", TrainScreen)
        await choose(pilot, screen, "#train-backend", "ppo")
        form = "#train-config"
        for name in ("reward_funcs", "reward_model", "reward_weights", "reward_clip", "missing_eos_penalty",
                     "kl_estimator", "value_init", "adaptive_kl", "response_length", "kl_alert"):
            assert screen.query(f"{form} #field-{name}"), name
        # Literal fields are choices.
        estimator = screen.query_one(f"{form} #field-kl_estimator", Select)
        assert {str(v) for _, v in estimator._options if v is not Select.NULL} == {"k1", "k3"}
        estimator.value = "k3"
        await pilot.pause()
        # `float | None`: a number, blank for none, and the bound checked.
        await set_field(pilot, screen, "train-config", "reward_clip", "-1")
        assert "greater than 0" in text_of(screen, f"{form} #error-reward_clip")
        await set_field(pilot, screen, "train-config", "reward_clip", "2.5")
        await set_field(pilot, screen, "train-config", "missing_eos_penalty", "")
        await set_field(pilot, screen, "train-config", "reward_funcs", "format_chatml, length_target")
        await choose(pilot, screen, "#train-dataset", "prompts")
        recipe, problems = screen.draft()
        assert problems.messages() == []
        config = recipe.config
        assert config["kl_estimator"] == "k3" and config["reward_clip"] == 2.5
        assert config.get("missing_eos_penalty", 1.0) is None
        assert config["reward_funcs"] == ["format_chatml", "length_target"]
        assert screen.query_one(f"{form} #field-reward_clip", Input).region.width > 0


def test_a_cleared_optional_number_with_a_default_means_none():
    from studio.tui.widgets.op_form import form_values

    values, errors = form_values(studio_train_ppo.PPOOptions, {"missing_eos_penalty": "", "reward_clip": "",
                                                               "temperature": ""})
    assert errors == {}
    # Cleared: none for `float | None = 1.0`; a field whose default is none, or that cannot be
    # none, keeps its default.
    assert values == {"missing_eos_penalty": None}
