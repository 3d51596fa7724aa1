"""PPO's roles (policy, reference, value, reward) on the full and LoRA layouts, and its reward
sources, on a tiny embedded model."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from studio.recipes.train import AdapterSettings
from studio.training import rule_rewards
from studio_train_ppo import PPOOptions
from studio_train_ppo.models import Episodes, ModelSpec, load_ppo_models

PROMPTS = [[{"role": "user", "content": "Name a colour."}],
           [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello twice."}]]
COMPLETIONS = ["blue is a colour", "hello hello"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> str:
    from studio.models.embedded import build_embedded_model

    return str(build_embedded_model(tmp_path_factory.mktemp("ppo-models") / "tiny", pretrain_steps=2))


def episodes(tokenizer, prompts=PROMPTS, completions=COMPLETIONS, columns=None) -> Episodes:
    """Left-padded prompts, then each completion closed by the end-of-turn token, padded after it."""
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    queries = [list(tokenizer.apply_chat_template(p, add_generation_prompt=True, tokenize=True,
                                                  return_dict=True)["input_ids"]) for p in prompts]
    responses = [tokenizer(c, add_special_tokens=False)["input_ids"] + [end] for c in completions]
    p_len, r_len = max(map(len, queries)), max(map(len, responses))
    pad = tokenizer.pad_token_id
    ids = torch.full((len(prompts), p_len + r_len), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, (q, r) in enumerate(zip(queries, responses)):
        ids[i, p_len - len(q):p_len] = torch.tensor(q)
        ids[i, p_len:p_len + len(r)] = torch.tensor(r)
        mask[i, p_len - len(q):p_len + len(r)] = 1
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    return Episodes(ids, mask, position_ids, p_len, responses, prompts, list(completions),
                    [True] * len(prompts), columns or {})


def forward_args(ep: Episodes):
    return ep.query_responses, ep.attention_mask, ep.position_ids


# --- full fine-tuning --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def full(tiny):
    options = PPOOptions(reward_funcs=["length_target", "contains", "exact_answer"], keywords=["hello"],
                         target_length=12, reward_weights=[1.0, 2.0, 0.5])
    return load_ppo_models(ModelSpec(policy=tiny, options=options))


def test_full_policy_equals_reference_and_zero_head_values_start_at_zero(full):
    models, _ = full
    ep = episodes(models.tokenizer)
    policy = models.policy_logits(*forward_args(ep))
    reference = models.reference_logits(*forward_args(ep))
    assert policy.shape == (*ep.query_responses.shape, models.policy.config.vocab_size)
    assert policy.requires_grad and not reference.requires_grad
    torch.testing.assert_close(policy, reference)
    values = models.values(*forward_args(ep))
    assert values.shape == ep.query_responses.shape and values.requires_grad
    assert torch.count_nonzero(values) == 0
    # Different weights behind the three: the reference is a copy, not the policy itself.
    assert models.reference.model.embed_tokens.weight.data_ptr() != models.policy.model.embed_tokens.weight.data_ptr()
    assert not any(p.requires_grad for p in models.reference.parameters())


def test_rule_source_is_the_weighted_sum_of_the_shared_rule_rewards(full):
    models, reward = full
    ep = episodes(models.tokenizer, columns={"answer": [None, "hello hello"]})
    total, means = reward.score(ep)
    length = rule_rewards.length_target(COMPLETIONS, target=12)
    contains = rule_rewards.contains(COMPLETIONS, keywords=("hello",))
    exact = [0.0, 1.0]  # no answer on the first row: None, which counts 0
    assert rule_rewards.exact_answer(COMPLETIONS, answer=[None, "hello hello"])[0] is None
    expected = [a + 2 * b + 0.5 * c for a, b, c in zip(length, contains, exact)]
    torch.testing.assert_close(total, torch.tensor(expected))
    assert means == pytest.approx({"rewards/length_target/mean": sum(length) / 2,
                                   "rewards/contains/mean": sum(contains) / 2, "rewards/exact_answer/mean": 0.5})


def test_format_chatml_rule_reads_the_response_ids(full):
    models, _ = full
    from studio_train_ppo.models import RuleRewards, end_token_ids

    rules = RuleRewards(["format_chatml"], PPOOptions(reward_funcs=["format_chatml"]), models.tokenizer,
                        end_token_ids(models.policy, models.tokenizer))
    ep = episodes(models.tokenizer)
    ep.response_ids[1] = ep.response_ids[1][:-1]  # cut off before its end-of-turn token
    assert rules.scores(ep) == {"format_chatml": [1.0, 0.0]}


def test_full_train_state_round_trips_and_both_models_get_gradients(full):
    models, _ = full
    ep = episodes(models.tokenizer)
    params = models.parameters_to_train()
    assert any(p is models.value_model.score.weight for p in params)
    state = models.train_state()
    loss = models.policy_logits(*forward_args(ep)).mean() + models.values(*forward_args(ep)).mean()
    loss.backward()
    assert models.policy.lm_head.weight.grad is not None and models.value_model.score.weight.grad is not None
    with torch.no_grad():
        for p in params:
            p.add_(0.01)
            p.grad = None
    models.load_train_state(state)
    after = models.train_state()
    assert after.keys() == state.keys() and all(torch.equal(after[k], state[k]) for k in state)


def test_full_memory_counts_three_models(full):
    models, _ = full
    memory = models.memory()
    one = sum(p.numel() * p.element_size() for p in models.policy.parameters())
    assert memory["weights"] > 2.5 * one  # policy, reference and value (whose head is tiny)
    assert memory["trainable_parameters"] == sum(p.numel() for p in models.parameters_to_train())


def test_full_save_loads_through_the_studio_resolver_and_generates(full, tmp_path):
    from studio.models.loading import load_model

    models, _ = full
    models.save(tmp_path / "final")
    model, tokenizer = load_model(str(tmp_path / "final"), device="cpu")
    ep = episodes(tokenizer)
    torch.testing.assert_close(model(input_ids=ep.query_responses, attention_mask=ep.attention_mask,
                                     position_ids=ep.position_ids).logits,
                               models.policy_logits(*forward_args(ep)).detach())
    out = model.generate(ep.query_responses[:1, :ep.context_length], max_new_tokens=3, do_sample=False)
    assert out.shape[1] > ep.context_length
    assert (tmp_path / "final" / "value" / "config.json").is_file()


def test_freeze_trains_only_the_last_layers_and_the_value_head(tiny):
    options = PPOOptions(reward_funcs=["length_target"])
    models, _ = load_ppo_models(ModelSpec(policy=tiny, options=options,
                                          adapter=AdapterSettings(method="freeze", train_last_layers=1)))
    names = set(models.named_trainable())
    assert "value.score.weight" in names
    assert any(".layers.1." in n for n in names) and not any(".layers.0." in n for n in names)
