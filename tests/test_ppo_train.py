"""The PPO update loop on the embedded model: the first mini-batch of every update sits at ratio 1;
KL is 0 while the policy equals the reference; learning rate 0 changes nothing; a planted rule
reward is learned; and, as real runs, kill -9 then resume repeats an uninterrupted run's metrics
and two CPU processes over gloo train one model."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from conftest import DATASETS, ROOT, kill_at_checkpoint, resume_to_end, run_to_end
from studio.store import Workspace
from studio.training import runs
from studio.training.expectations import series

pytestmark = pytest.mark.slow

PROMPTS = DATASETS / "train" / "rl_prompts.jsonl"
# format_chatml: close the turn within the length cap; length_target: about 12 characters (the
# prompts ask for one word). The untrained model rambles, so both are learnable and planted.
REWARD = {"reward_funcs": ["format_chatml", "length_target"], "target_length": 12}
METRICS = ("objective/scores", "objective/kl", "objective/rlhf_reward", "loss/policy", "loss/value",
           "policy/approxkl", "val/ratio", "val/eos_rate", "val/response_length")


def _loop(options: dict, updates: int, learning_rate: float, batch_size: int = 16, cancel_after: int | None = None,
          adapter: dict | None = None, **settings):
    from studio.models.loading import resolve_model_ref
    from studio.recipes.train import AdapterSettings
    from studio.training.data import load_records
    from studio_train_ppo import PPOOptions
    from studio_train_ppo.models import ModelSpec, load_ppo_models
    from studio_train_ppo.trainer import LoopSettings, PPOLoop, prompt_rows

    torch.set_num_threads(1)
    config = PPOOptions(**{**REWARD, "response_length": 10, **options})
    models, reward = load_ppo_models(ModelSpec(policy=resolve_model_ref("embedded"), options=config, seed=0,
                                               adapter=AdapterSettings(**adapter) if adapter else None, device="cpu"))
    records = load_records(str(PROMPTS)).records
    events: list[tuple[str, dict]] = []
    asked: list[int] = []  # the loop asks once per update
    loop = PPOLoop(models, reward, prompt_rows(records, models.tokenizer), config,
                   LoopSettings(updates=updates, batch_size=batch_size, learning_rate=learning_rate, seed=0,
                                **settings),
                   emit=lambda name, **fields: events.append((name, fields)),
                   cancelled=lambda: asked.append(1) or len(asked) == cancel_after)
    return loop, events


def _metrics(events) -> list[dict[str, float]]:
    return [fields["values"] for name, fields in events if name == "metrics"]


@pytest.mark.parametrize("adapter", [None, {"method": "lora", "r": 4}], ids=["full", "lora"])
def test_learning_rate_zero_leaves_the_policy_the_kl_and_the_score_flat(adapter):
    loop, events = _loop({"num_mini_batches": 2, "kl_estimator": "k3"}, updates=3, learning_rate=0.0,
                         adapter=adapter)
    before = {k: v.clone() for k, v in loop.models.train_state().items()}
    loop.run()
    after = loop.models.train_state()
    assert all(torch.equal(before[k], after[k]) for k in before)
    metrics = _metrics(events)
    assert [m["objective/kl"] for m in metrics] == [0.0] * 3            # the policy is the reference
    assert all(m["policy/approxkl"] == 0.0 and m["val/ratio"] == 1.0 for m in metrics)  # every mini-batch
    # The policy never moved, so each update's episodes are what the untouched model samples
    # from that update's seed: the scores are the starting model's, batch for batch.
    for update, m in enumerate(metrics):
        rollout, episodes = loop.rollout(loop.batch_rows(update), loop.seeded(update, "sample"))
        scores, _, _ = loop.score(episodes, rollout.ended, learn=False)
        assert m["objective/scores"] == pytest.approx(scores.mean().item(), abs=1e-6)


def test_a_planted_rule_reward_is_learned_with_bounded_kl_and_the_first_mini_batch_at_ratio_one():
    loop, events = _loop({"num_mini_batches": 2, "kl_coef": 0.05}, updates=12, learning_rate=1e-3)
    loop.run()
    metrics = _metrics(events)
    assert [e[1]["step"] for e in events if e[0] == "metrics"] == list(range(1, 13))
    for m in metrics:  # nothing has moved before an update's first step
        assert m["val/ratio_first"] == pytest.approx(1.0, abs=1e-6)
        assert m["policy/approxkl_first"] == pytest.approx(0.0, abs=1e-10)
    scores = [m["objective/scores"] for m in metrics]
    first, last = sum(scores[:2]) / 2, sum(scores[-3:]) / 3
    assert last > first + 0.5, scores                                    # out of 0..2 (two rewards)
    assert metrics[0]["objective/kl"] == 0.0 and 0 < max(m["objective/kl"] for m in metrics) < 15
    assert min(m["val/eos_rate"] for m in metrics[-3:]) >= 0.8
    assert min(m["val/distinct_responses"] for m in metrics[-3:]) >= 0.25
    assert {"rewards/format_chatml/mean", "rewards/length_target/mean", "lr", "objective/kl_coef",
            "episode"} <= set(metrics[-1])
    assert metrics[-1]["episode"] == 12 * 16
    assert ("train_begin", {"step": 0, "max_steps": 12, "epochs": 0.0}) in events


def test_bf16_autocast_runs_the_forward_passes_in_bf16_and_keeps_float32_weights():
    # training.precision bf16 (auto on a GPU with bf16): the forwards autocast, the optimiser's
    # weights stay float32, and an update still starts from ratio 1 with the policy at the reference.
    loop, events = _loop({"num_mini_batches": 2}, updates=2, learning_rate=1e-3, batch_size=8, precision="bf16")
    seen = []
    lm_head = loop.models.policy.get_output_embeddings()
    hook = lm_head.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    loop.run()
    hook.remove()
    assert seen and set(seen) == {torch.bfloat16}
    assert all(p.dtype == torch.float32 for p in loop.params)
    metrics = _metrics(events)
    assert metrics[0]["objective/kl"] == 0.0 and metrics[0]["val/ratio_first"] == pytest.approx(1.0, abs=1e-3)
    assert all(math.isfinite(v) for m in metrics for v in m.values())


def test_a_cancel_saves_the_update_it_lands_on_and_stops(tmp_path):
    # A cancel asked for during update 2 is seen at its end.
    loop, events = _loop({"num_ppo_epochs": 1}, updates=5, learning_rate=1e-3, batch_size=4, cancel_after=2,
                         checkpoints_dir=tmp_path, save_steps=100)
    loop.run()
    names = [name for name, _ in events]
    assert names[-2:] == ["checkpoint", "cancelling"] and loop.update == 2
    assert [f["step"] for name, f in events if name in ("metrics", "progress")] == [1, 1, 2, 2]
    from studio.training.adapters import last_checkpoint

    assert last_checkpoint(tmp_path) == tmp_path / "checkpoint-2"
    state = json.loads((tmp_path / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["global_step"] == 2 and state["max_steps"] == 5


def test_ranks_take_disjoint_slices_of_one_seeded_prompt_order():
    from types import SimpleNamespace

    loop, _ = _loop({}, updates=1, learning_rate=0.0, batch_size=4)
    n = len(loop.prompts)
    seen = []
    for update in range(n // 8):           # one epoch of global batches of 2 x 4 episodes
        for rank in (0, 1):
            loop.procs = SimpleNamespace(world=2, rank=rank)
            seen += [id(row) for row in loop.batch_rows(update)]
    assert len(seen) == len(set(seen)) == (n // 8) * 8  # no prompt twice within the epoch
    loop.procs = SimpleNamespace(world=1, rank=0)
    alone = [id(row) for update in range(n // 4) for row in loop.batch_rows(update)]
    assert alone[:len(seen)] == seen       # the same order, whatever the number of processes


# --- real runs ------------------------------------------------------------------------------------


def _recipe(tmp_path: Path, name: str = "ppo.yaml", **training) -> Path:
    data = {"backend": "ppo", "model": "embedded", "dataset": str(PROMPTS), "eval_fraction": 0.1, "seed": 1,
            "training": {"max_steps": 6, "batch_size": 8, "learning_rate": 0.001, "scheduler": "linear",
                         "save_steps": 2, "logging_steps": 1, "report_to": [], **training},
            "config": {**REWARD, "response_length": 8, "num_ppo_epochs": 2, "num_mini_batches": 2,
                       "normalize_reward": True, "adaptive_kl": True, "kl_target": 1.0, "kl_horizon": 50}}
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


@pytest.fixture()
def ws(tmp_path) -> Workspace:
    return Workspace.init(tmp_path / "ws")


def test_kill_9_between_checkpoints_then_resume_repeats_the_uninterrupted_metrics(ws, tmp_path):
    path = _recipe(tmp_path)
    reference = run_to_end(ws, path)
    assert (reference.final_dir / "config.json").is_file() and (reference.final_dir / "value").is_dir()
    assert "eval_objective/scores" in reference.metrics()["final"]

    run, killed_after = kill_at_checkpoint(ws, path, 2)
    assert killed_after == 2 and run.status()["status"] == "interrupted"
    done = [c["step"] for c in run.checkpoints() if c["complete"]]
    assert 2 in done and max(done) < 6, done

    resume_to_end(run)
    assert any(e["event"] == "start" and e["resume"] for e in run.events())
    # Float32 on one thread: the same weights, optimiser state, KL coefficient, running score
    # statistics and seeds give the same numbers; 1e-6 only allows for JSON's float printing.
    for metric in (*METRICS, "objective/kl_coef", "lr"):
        got, want = series(run.metric_history(), metric), series(reference.metric_history(), metric)
        assert len(got) == 6 and got == pytest.approx(want, abs=1e-6), metric
    assert [c["step"] for c in run.checkpoints()] == [4, 6]  # save_total_limit 2 keeps the newest


def _studio(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "studio", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "PYTHONPATH": os.pathsep.join(
                              [str(ROOT), *os.environ.get("PYTHONPATH", "").split(os.pathsep)])})
    assert proc.returncode == 0, f"studio {' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.mark.parametrize("launcher", ["torchrun", "accelerate"])
def test_a_launcher_trains_with_two_cpu_processes(ws, tmp_path, launcher):
    from studio.models.loading import resolve_model_ref

    # Built once here: two ranks building the embedded model at the same moment race each other.
    resolve_model_ref("embedded")
    path = _recipe(tmp_path, max_steps=3, save_steps=3, batch_size=4)
    out = _studio("run", str(path), "--launcher", launcher, "--nproc", "2", "--json", "-w", str(ws.root),
                  cwd=tmp_path)
    result = json.loads(out.stdout)
    assert result["status"] == "completed"
    run = runs.TrainRun(Path(result["run_dir"]))
    start = next(e for e in run.events() if e["event"] == "start")
    assert start["world_size"] == 2
    metrics = [e for e in run.events() if e["event"] == "metrics"]
    assert [e["step"] for e in metrics] == [1, 2, 3]                      # rank 0 alone writes
    assert metrics[-1]["values"]["episode"] == 3 * 4 * 2                 # both ranks' episodes count
    assert [c["step"] for c in run.checkpoints() if c["complete"]] == [3]
    assert (run.final_dir / "config.json").is_file()
