"""The PPO benchmark's pieces that need no trl venv: the planted reward gives the same score as trl's
reward module (read where trl 1.12's ``get_reward`` reads it) and as the studio's reward source; the
memory count takes a shared tensor once; the reward gain; the prompts; the arguments."""
from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import bench_ppo  # noqa: E402
import ppo_common  # noqa: E402

PAD, END, VOCAB = 2, 4, 64


def trl_reads(model, query_responses: torch.Tensor, context_length: int) -> torch.Tensor:
    """What trl 1.12.0's ``trl.experimental.utils.get_reward`` returns as the score: the reward head on
    the backbone's last hidden state, at the token before each response's first pad."""
    attention_mask = query_responses != PAD
    position_ids = attention_mask.cumsum(1) - attention_mask.long()
    input_ids = torch.masked_fill(query_responses, ~attention_mask, 0)
    output = getattr(model, model.base_model_prefix)(input_ids=input_ids, attention_mask=attention_mask,
                                                     position_ids=position_ids, return_dict=True,
                                                     output_hidden_states=True, use_cache=False)
    logits = model.score(output.hidden_states[-1])
    is_pad = query_responses[:, context_length:] == PAD
    first_pad = torch.where(is_pad.any(1), is_pad.long().argmax(1), torch.full_like(is_pad[:, 0], is_pad.shape[1],
                                                                                    dtype=torch.long))
    lengths = first_pad - 1 + context_length
    return logits[torch.arange(logits.shape[0]), lengths].squeeze(-1)


def truncated(response: list[int]) -> list[int]:
    """trl's truncate_response: everything after the first end token becomes pad."""
    if END in response:
        cut = response.index(END) + 1
        return response[:cut] + [PAD] * (len(response) - cut)
    return response


def test_planted_reward_scores_alike_as_trls_reward_module_and_as_the_studios_source():
    from studio_train_ppo.models import Episodes, WeightedReward

    rng = random.Random(3)
    good = ppo_common.good_token_ids(VOCAB, seed=1, skip=(0, 1, PAD, 3, END))
    context, width = 5, 8
    responses = [[rng.randrange(5, VOCAB) for _ in range(width)] for _ in range(24)]
    for i, response in enumerate(responses):  # ended early, ended at the last token, or cut off
        if i % 3 == 0:
            response[rng.randrange(width)] = END
        elif i % 3 == 1:
            response[-1] = END
    responses.append([END] + [9] * (width - 1))  # an empty answer scores 0
    rows = [[PAD, PAD, 7, 8, 9] + truncated(r) for r in responses]
    model = ppo_common.PlantedRewardModel(good, VOCAB, context, END)
    via_trl = trl_reads(model, torch.tensor(rows), context).tolist()
    expected = [ppo_common.planted_share(r, set(good), END, PAD) for r in responses]
    assert via_trl == pytest.approx(expected, abs=1e-6)
    assert len(set(round(e, 3) for e in expected)) > 5  # the rule tells responses apart
    assert expected[-1] == 0.0

    ended = [END in r for r in responses]
    as_episodes = [r[:r.index(END) + 1] if END in r else r for r in responses]  # the loop's response_ids
    episodes = Episodes(query_responses=None, attention_mask=None, position_ids=None, context_length=context,
                        response_ids=as_episodes, prompts=[[]] * len(rows), completions=[""] * len(rows),
                        ended=ended)
    scores, means = WeightedReward([bench_ppo.PlantedScores(good, END, PAD)]).score(episodes)
    assert scores.tolist() == pytest.approx(expected, abs=1e-6)
    assert means["rewards/planted/mean"] == pytest.approx(sum(expected) / len(expected), abs=1e-6)


def test_planted_share_stops_at_the_end_token():
    good = {10, 11}
    assert ppo_common.planted_share([10, 20, END, 11, 11], good, END, PAD) == 0.5
    assert ppo_common.planted_share([10, 11, 20, 21], good, END, PAD) == 0.5
    assert ppo_common.planted_share([10, PAD, 20], good, END, PAD) == 1.0


def test_held_tensor_bytes_counts_a_shared_base_once_and_the_optimisers_state():
    import gc

    gc.collect()
    before = ppo_common.held_tensor_bytes()
    base = torch.nn.Linear(100, 100, bias=False)           # 40,000 bytes
    head = torch.nn.Linear(100, 1, bias=False)             # 400 bytes, the only trained part
    view = torch.nn.Module()
    view.register_buffer("tied", base.weight.detach())    # another tensor on the same storage
    optimiser = torch.optim.AdamW(head.parameters())
    head(base(torch.ones(2, 100))).sum().backward()
    optimiser.step()
    after = ppo_common.held_tensor_bytes()
    assert after["weights"] - before["weights"] == 40_000 + 400
    assert after["gradients"] - before["gradients"] == 400
    assert after["optimizer"] - before["optimizer"] >= 2 * 400  # AdamW's two moments
    del base, head, view, optimiser


def test_gain_per_episode_compares_the_first_and_last_updates():
    # 6 updates of 8: mean of the last 2 (0.8) minus the first 2 (0.2), over 4 updates of 8 episodes
    assert ppo_common.gain_per_episode([0.1, 0.3, 0.5, 0.5, 0.7, 0.9], 8, 2) == pytest.approx(0.6 / 32)
    assert ppo_common.gain_per_episode([0.5, 0.5, 0.5], 8, 1) == 0.0
    assert ppo_common.gain_per_episode([0.9, 0.1], 4, 3) == pytest.approx(-0.8 / 4)


@pytest.fixture(scope="module")
def tokenizer():
    from studio.models.embedded import build_tokenizer, collect_corpus

    conversations, texts, _ = collect_corpus()
    return build_tokenizer(conversations, texts, 2048)


def test_prompts_are_the_user_turns_with_the_generation_prompt(tokenizer):
    ids, messages = bench_ppo.load_prompts(tokenizer)
    assert len(ids) == len(messages) > 10
    assert all(m[-1]["role"] == "user" for m in messages)
    text = tokenizer.decode(ids[0])
    assert text.endswith("<|im_start|>assistant\n")
    assert "slow" not in text and messages[0][0]["content"] in text  # the reference answer is left out


def test_arguments():
    quick = bench_ppo.parse_args(["--quick"])
    assert quick.updates == 8 and "speed" in quick.skip and quick.modes == ["full", "lora"]
    full = bench_ppo.parse_args([])
    assert full.updates == 20 and full.skip == [] and full.threads == 1 and full.seeds == 3 and quick.seeds == 1
    with pytest.raises(SystemExit):
        bench_ppo.parse_args(["--batch-size", "10", "--mini-batches", "4"])
    with pytest.raises(SystemExit):
        bench_ppo.parse_args(["--updates", "1"])


def test_goals_read_the_ratios():
    met = bench_ppo.goals("learning", "lora", {"gain_per_episode": 1.2, "episodes_per_cpu_s": 1.4, "peak_memory": 0.5})
    assert met == {"gain >= trl": True, "episodes/s >= 1.5x trl": False, "LoRA peak memory <= 0.5x trl": True}
    assert "gain >= trl" not in bench_ppo.goals("speed", "full", {"gain_per_episode": 2.0, "episodes_per_cpu_s": 2.0})


def test_sides_combine_over_seeds_and_a_failed_run_shows():
    def run(scores, seconds, rss):
        out = {"scores": scores, "seconds": seconds, "cpu_seconds": seconds / 2, "episodes": 8 * len(scores),
               "rss_peak": 100 + rss, "rss_baseline": 100, "memory": {"weights": 10, "gradients": 5, "optimizer": 10},
               "trainable_parameters": 3}
        return bench_ppo.summarise(out, 8, 1)

    both = bench_ppo.combine([run([0.0, 0.4], 4.0, 50), run([0.2, 0.4], 12.0, 70)])
    assert both["gain_per_episode"] == pytest.approx((0.4 / 8 + 0.2 / 8) / 2)
    assert both["seconds_per_episode"] == pytest.approx(16.0 / 32)
    assert both["episodes_per_cpu_s"] == pytest.approx(32 / 8.0)
    assert both["peak_memory"] == 25 + 70
    failed = bench_ppo.combine([run([0.0, 0.4], 4.0, 50), {"error": "boom"}])
    assert failed == {"error": "boom"}


def test_both_sides_get_a_model_that_stops_on_one_token(tokenizer, tmp_path):
    import json

    source = tmp_path / "model"
    tokenizer.save_pretrained(source)
    (source / "generation_config.json").write_text(json.dumps({"eos_token_id": [tokenizer.eos_token_id, 1]}))
    copy = bench_ppo.one_stop_copy(str(source), tmp_path / "copy")
    assert json.loads((copy / "generation_config.json").read_text())["eos_token_id"] == tokenizer.eos_token_id
    assert json.loads((source / "generation_config.json").read_text())["eos_token_id"] == [tokenizer.eos_token_id, 1]
