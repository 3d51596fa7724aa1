"""PPO's arithmetic against hand-computed examples, and the sampling loop on the embedded model."""
from __future__ import annotations

import math

import pytest
import torch

from studio_train_ppo import core
from studio_train_ppo.rollout import left_pad, positions, sample, stop_ids


# --- GAE -----------------------------------------------------------------------------------------


def test_gae_matches_a_hand_computed_example_and_nothing_leaks_past_the_last_token():
    rewards = torch.tensor([[1.0, 0.0, 2.0, 5.0]])   # the 5 sits on a pad: it must not count
    values = torch.tensor([[0.5, 1.0, 0.2, 9.0]])    # nor the pad's value
    mask = torch.tensor([[True, True, True, False]])
    advantages, returns = core.gae(rewards, values, mask, gamma=0.9, lam=0.5)
    # t=2: 2 + 0.9*0 - 0.2 = 1.8 (the value after the last token is 0)
    # t=1: 0 + 0.9*0.2 - 1.0 = -0.82; -0.82 + 0.45*1.8 = -0.01
    # t=0: 1 + 0.9*1.0 - 0.5 = 1.4;    1.4 + 0.45*(-0.01) = 1.3955
    assert advantages.tolist()[0] == pytest.approx([1.3955, -0.01, 1.8, 0.0], abs=1e-6)
    assert returns.tolist()[0] == pytest.approx([1.8955, 0.99, 2.0, 0.0], abs=1e-6)


def test_gae_with_gamma_and_lambda_one_is_the_reward_to_go_minus_the_value():
    rewards = torch.tensor([[0.0, 0.5, 0.0, 1.0]])
    values = torch.tensor([[0.25, 0.0, 0.5, 0.0]])
    mask = torch.ones(1, 4, dtype=torch.bool)
    advantages, returns = core.gae(rewards, values, mask, gamma=1.0, lam=1.0)
    assert advantages.tolist()[0] == pytest.approx([1.25, 1.5, 0.5, 1.0])
    assert returns.tolist()[0] == pytest.approx([1.5, 1.5, 1.0, 1.0])


# --- masked statistics ---------------------------------------------------------------------------


def test_masked_whitening_uses_the_valid_tokens_only():
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0], [2.0, -50.0, -50.0, -50.0]])
    mask = torch.tensor([[True, True, True, False], [True, False, False, False]])
    # valid: 1, 2, 3, 2 -> mean 2, unbiased variance (1 + 0 + 1 + 0) / 3
    assert core.masked_mean(x, mask).item() == pytest.approx(2.0)
    assert core.masked_var(x, mask).item() == pytest.approx(2 / 3)
    std = math.sqrt(2 / 3)
    white = core.masked_whiten(x, mask)
    assert white.flatten().tolist() == pytest.approx([-1 / std, 0, 1 / std, 0, 0, 0, 0, 0], abs=1e-4)
    kept = core.masked_whiten(x, mask, shift_mean=False)  # rewards keep their level
    assert kept.flatten().tolist() == pytest.approx([2 - 1 / std, 2, 2 + 1 / std, 0, 2, 0, 0, 0], abs=1e-4)
    # Statistics summed over "processes" (here: two holding the same batch) are the global
    # batch's: mean 2, unbiased variance 4 / 7 over its 8 valid tokens.
    doubled = core.masked_whiten(x, mask, reduce=lambda t: 2 * t)
    std = math.sqrt(4 / 7)
    assert doubled.flatten().tolist() == pytest.approx([-1 / std, 0, 1 / std, 0, 0, 0, 0, 0], abs=1e-4)


def test_running_moments_combine_batches_like_one_big_batch_and_restore_from_a_state():
    a, b = torch.tensor([1.0, 2.0, 4.0]), torch.tensor([10.0, -3.0])
    moments = core.RunningMoments()
    batch_mean, batch_std = moments.update(a)
    assert batch_mean == pytest.approx(7 / 3) and batch_std == pytest.approx(a.std().item())
    copy = core.RunningMoments()
    copy.load_state_dict(moments.state_dict())
    for m in (moments, copy):
        m.update(b)
    both = torch.cat([a, b])
    assert moments.mean == pytest.approx(both.mean().item())
    assert moments.std == pytest.approx(both.std().item())
    assert copy.state_dict() == moments.state_dict()


# --- KL -------------------------------------------------------------------------------------------


def test_kl_estimators():
    logp = torch.tensor([math.log(0.5), math.log(0.2), math.log(0.3)])
    ref = torch.tensor([math.log(0.25), math.log(0.2), math.log(0.6)])
    assert core.kl_per_token(logp, ref, "k1").tolist() == pytest.approx([math.log(2), 0, math.log(0.5)])
    # k3 = (r - 1) - log r with r = ref / policy: never negative, 0 where they agree.
    assert core.kl_per_token(logp, ref, "k3").tolist() == pytest.approx(
        [(0.5 - 1) - math.log(0.5), 0, (2 - 1) - math.log(2)])
    with pytest.raises(ValueError, match="k2"):
        core.kl_per_token(logp, ref, "k2")


def test_adaptive_kl_follows_ziegler_and_restores_from_a_state():
    ctl = core.AdaptiveKL(0.1, target=6.0, horizon=100)
    ctl.update(current=12.0, n_steps=10)   # error clipped to +0.2
    assert ctl.value == pytest.approx(0.1 * 1.02)
    ctl.update(current=3.0, n_steps=10)    # error -0.5 clipped to -0.2
    assert ctl.value == pytest.approx(0.1 * 1.02 * 0.98)
    ctl.update(current=6.6, n_steps=50)    # error 0.1
    expected = 0.1 * 1.02 * 0.98 * 1.05
    assert ctl.value == pytest.approx(expected)
    fresh = core.AdaptiveKL(0.5, 6.0, 100)
    fresh.load_state_dict(ctl.state_dict())
    assert fresh.value == pytest.approx(expected)
    fixed = core.FixedKL(0.05)
    fixed.update(100.0, 10)
    assert fixed.value == 0.05


# --- losses ---------------------------------------------------------------------------------------


def test_policy_loss_is_the_plain_surrogate_at_ratio_one():
    logp = torch.tensor([[-1.0, -2.0, -0.5]])
    adv = torch.tensor([[1.0, -2.0, 4.0]])
    mask = torch.tensor([[True, True, False]])
    out = core.policy_loss(logp, logp.clone(), adv, mask, cliprange=0.2)
    assert out.ratio.item() == 1.0 and out.approxkl.item() == 0.0 and out.clipfrac.item() == 0.0
    assert out.loss.item() == pytest.approx(-(1.0 - 2.0) / 2)


def test_policy_loss_clips_and_reports_it():
    old = torch.zeros(1, 2)
    new = torch.tensor([[math.log(1.5), math.log(0.5)]])   # ratios 1.5 and 0.5
    adv = torch.tensor([[1.0, 1.0]])
    out = core.policy_loss(new, old, adv, torch.ones(1, 2, dtype=torch.bool), cliprange=0.2)
    # token 1: max(-1.5, -1.2) = -1.2 (clipped); token 2: max(-0.5, -0.8) = -0.5 (not)
    assert out.loss.item() == pytest.approx((-1.2 - 0.5) / 2)
    assert out.clipfrac.item() == pytest.approx(0.5)
    assert out.approxkl.item() == pytest.approx(0.5 * (math.log(1.5) ** 2 + math.log(0.5) ** 2) / 2)
    assert out.ratio.item() == pytest.approx(1.0)


def test_value_loss_takes_the_larger_of_the_clipped_and_unclipped_errors():
    values = torch.tensor([[1.5, 0.9, 7.0]])
    old = torch.tensor([[1.0, 1.0, 0.0]])
    returns = torch.tensor([[2.0, 0.0, 0.0]])
    mask = torch.tensor([[True, True, False]])
    loss, clipfrac = core.value_loss(values, old, returns, mask, cliprange_value=0.2)
    # token 1: clipped prediction 1.2: max(0.25, 0.64) = 0.64; token 2: within the clip: 0.81
    assert loss.item() == pytest.approx(0.5 * (0.64 + 0.81) / 2)
    assert clipfrac.item() == pytest.approx(0.5)


def test_logprobs_divide_by_the_temperature_and_entropy_of_a_uniform_distribution():
    logits = torch.tensor([[[2.0, 0.0, 0.0]]])
    tokens = torch.tensor([[0]])
    at_two = math.exp(1.0) / (math.exp(1.0) + 2)
    assert core.logprobs_from_logits(logits, tokens, temperature=2.0).item() == pytest.approx(math.log(at_two))
    assert core.entropy_from_logits(torch.zeros(1, 1, 4)).item() == pytest.approx(math.log(4))


# --- scores and truncation ------------------------------------------------------------------------


def test_truncation_after_the_first_stop_token_and_the_score_on_that_token():
    eos, pad = 4, 2
    raw = torch.tensor([[5, 4, 7, 4], [5, 6, 7, 8], [4, 9, 9, 9]])
    responses, mask, ended = core.truncate_after_stop(raw, [eos, 1], pad)
    assert responses.tolist() == [[5, 4, 2, 2], [5, 6, 7, 8], [4, 2, 2, 2]]
    assert mask.tolist() == [[True, True, False, False], [True] * 4, [True, False, False, False]]
    assert ended.tolist() == [True, False, True]
    rewards = core.place_score(torch.zeros(3, 4), torch.tensor([1.0, 3.0, -2.0]), mask)
    # On the EOS token itself (index 1, 0), not the pad after it; a cut-off response on its last token.
    assert rewards.tolist() == [[0, 1, 0, 0], [0, 0, 0, 3], [-2, 0, 0, 0]]


# --- sampling on the embedded model ---------------------------------------------------------------


@pytest.fixture(scope="module")
def embedded():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from studio.models.loading import resolve_model_ref

    torch.set_num_threads(1)
    location = resolve_model_ref("embedded")
    model = AutoModelForCausalLM.from_pretrained(location, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(location)
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                             tokenize=True, return_dict=False)
               for text in ("Hi", "What is the opposite of 'fast'? Answer in one word.", "Name a colour.")]
    return model, tokenizer, prompts


def test_left_padding_with_explicit_positions_does_not_change_a_prompts_logits(embedded):
    model, tokenizer, prompts = embedded
    ids, mask = left_pad(prompts, tokenizer.pad_token_id)
    assert mask[0, 0] == 0 and positions(mask)[0, -1] == len(prompts[0]) - 1
    with torch.no_grad():
        batch = model(input_ids=ids, attention_mask=mask, position_ids=positions(mask)).logits
        alone = model(input_ids=torch.tensor([prompts[0]])).logits
    assert torch.allclose(batch[0, -len(prompts[0]):], alone[0], atol=1e-4)


def test_sampling_at_a_tiny_temperature_is_greedy_decoding(embedded):
    """Our KV-cache loop (left padding, positions, stop tokens) picks what HF greedy picks."""
    model, tokenizer, prompts = embedded
    stop = stop_ids(model, tokenizer)
    assert set(stop) == {1, 4}  # the generation config's EOS list and the tokenizer's end-of-turn
    rollout = sample(model, prompts, pad_id=tokenizer.pad_token_id, stop=stop, response_length=10,
                     temperature=1e-4, generator=torch.Generator().manual_seed(0))
    for row, prompt in enumerate(prompts):
        greedy = model.generate(torch.tensor([prompt]), max_new_tokens=10, do_sample=False, eos_token_id=stop,
                                pad_token_id=tokenizer.pad_token_id)[0, len(prompt):].tolist()
        assert rollout.response_ids()[row] == greedy
        assert rollout.ended[row].item() == (greedy[-1] in stop)


def test_sampling_is_reproducible_per_generator_and_stops_at_the_first_end_token(embedded):
    model, tokenizer, prompts = embedded
    stop = stop_ids(model, tokenizer)
    many = prompts * 6

    def draw(seed):
        return sample(model, many, pad_id=tokenizer.pad_token_id, stop=stop, response_length=12, temperature=1.0,
                      generator=torch.Generator().manual_seed(seed))

    first, again, other = draw(1), draw(1), draw(2)
    assert torch.equal(first.query_responses, again.query_responses)
    assert not torch.equal(first.query_responses, other.query_responses) or first.responses.shape != other.responses.shape
    assert first.responses.shape[1] <= 12
    for ids, ended in zip(first.response_ids(), first.ended.tolist()):
        assert not any(t in stop for t in ids[:-1])      # nothing after a stop token
        assert ended == (ids[-1] in stop)
    # The full sequence's mask covers the prompt's real tokens and the valid response tokens only.
    assert first.attention_mask.sum().item() == sum(map(len, many)) + first.response_mask.sum().item()
    assert first.query_responses.shape[1] == first.context_length + first.responses.shape[1]
