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
    return load_ppo_models(ModelSpec(policy=tiny, device="cpu", options=options))


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
    models, _ = load_ppo_models(ModelSpec(policy=tiny, device="cpu", options=options,
                                          adapter=AdapterSettings(method="freeze", train_last_layers=1)))
    names = set(models.named_trainable())
    assert "value.score.weight" in names
    assert any(".layers.1." in n for n in names) and not any(".layers.0." in n for n in names)


# --- LoRA: one base ------------------------------------------------------------------------------


LORA = AdapterSettings(method="lora", r=4, alpha=8, dropout=0.1)


@pytest.fixture(scope="module")
def lora(tiny):
    return load_ppo_models(ModelSpec(policy=tiny, device="cpu", options=PPOOptions(reward_funcs=["length_target"]),
                                     adapter=LORA))


def test_lora_reference_is_the_base_and_policy_starts_equal_to_it(lora, tiny):
    from transformers import AutoModelForCausalLM

    models, _ = lora
    base = AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.float32).eval()
    ep = episodes(models.tokenizer)
    with torch.no_grad():
        expected = base(*forward_args(ep)[:2], position_ids=ep.position_ids).logits
    torch.testing.assert_close(models.reference_logits(*forward_args(ep)), expected)
    torch.testing.assert_close(models.policy_logits(*forward_args(ep)).detach(), expected)
    values = models.values(*forward_args(ep))
    assert values.shape == ep.query_responses.shape and torch.count_nonzero(values) == 0
    # LoRA dropout is off whatever the recipe says (the ratio must start at 1).
    assert all(m.p == 0 for n, m in models.model.named_modules() if isinstance(m, torch.nn.Dropout))


def test_lora_holds_one_base_models_bytes(lora, tiny):
    from transformers import AutoModelForCausalLM

    models, _ = lora

    plain = AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.float32)
    from studio_train_ppo.models import storage_bytes

    one = storage_bytes([*plain.parameters(), *plain.buffers()])
    memory = models.memory()
    # The base once, plus two small adapters and the head (the tiny model's adapters weigh ~1/4).
    assert one < memory["weights"] < 1.4 * one, (memory, one)
    adapters = [p for n, p in models.model.named_parameters() if ".lora_" in n]
    assert memory["trainable_parameters"] == sum(p.numel() for p in adapters) + models.value_head.weight.numel()


def test_lora_both_adapters_and_the_head_get_gradients_after_role_switches(lora):
    models, _ = lora
    ep = episodes(models.tokenizer)
    for p in models.parameters_to_train():
        p.grad = None
    # A zero head passes no gradient to the value adapter: give it the weights one step would.
    head = models.value_head.weight.detach().clone()
    with torch.no_grad():
        models.value_head.weight.normal_(0, 0.1)
    # Switch roles in the order a loop does, ending on the reference (adapters disabled).
    values = models.values(*forward_args(ep))
    logits = models.policy_logits(*forward_args(ep))
    models.reference_logits(*forward_args(ep))
    with models.generator():
        pass
    (logits.logsumexp(-1).mean() + values.pow(2).mean() + (values - 1).abs().mean()).backward()
    grads = {name: p.grad for name, p in models._trainable.items()}
    for role in ("policy", "value"):
        b = [g for n, g in grads.items() if n.startswith(role + ".") and "lora_B" in n]
        assert b and all(g is not None for g in b) and any(g.abs().sum() > 0 for g in b), role
    assert grads["value_head.weight"] is not None and grads["value_head.weight"].abs().sum() > 0
    assert all(p.requires_grad for p in models.parameters_to_train())
    for p in models.parameters_to_train():
        p.grad = None
    with torch.no_grad():
        models.value_head.weight.copy_(head)


def test_lora_save_is_a_plain_adapter_the_studio_loads_and_generates_with(lora, tiny, tmp_path):
    import json

    from studio.models.loading import load_model

    models, _ = lora
    with torch.no_grad():  # move the policy off the base so the check below can tell them apart
        for name, p in models._trainable.items():
            if name.startswith("policy.") and "lora_B" in name:
                p.normal_(0, 0.05)
    try:
        models.save(tmp_path / "final")
        config = json.loads((tmp_path / "final" / "adapter_config.json").read_text())
        assert config["base_model_name_or_path"] == tiny and config["peft_type"] == "LORA"
        model, tokenizer = load_model(str(tmp_path / "final"), device="cpu")
        ep = episodes(tokenizer)
        with torch.no_grad():
            got = model(input_ids=ep.query_responses, attention_mask=ep.attention_mask,
                        position_ids=ep.position_ids).logits
        torch.testing.assert_close(got, models.policy_logits(*forward_args(ep)).detach())
        assert not torch.allclose(got, models.reference_logits(*forward_args(ep)))
        out = model.generate(ep.query_responses[:1, :ep.context_length], max_new_tokens=3, do_sample=False)
        assert out.shape[1] > ep.context_length
        assert {"adapter_config.json", "adapter_model.safetensors", "value_head.safetensors"} <= {
            p.name for p in (tmp_path / "final" / "value").iterdir()}
    finally:
        with torch.no_grad():
            for name, p in models._trainable.items():
                if name.startswith("policy.") and "lora_B" in name:
                    p.zero_()


# --- reward models: a short LoRA reward run on the policy's base ----------------------------------


@pytest.fixture(scope="module")
def reward_run(tiny, tmp_path_factory):
    from conftest import ROOT
    from studio.recipes import load_recipe
    from studio.store import Workspace
    from training_helpers import run_to_end

    ws = Workspace.init(tmp_path_factory.mktemp("ppo-reward") / "ws")
    recipe = load_recipe(ROOT / "recipes" / "train-reward.yaml", [
        f"model={tiny}", "limit=16", "eval_fraction=0.25", "training.max_steps=3", "training.batch_size=4",
        "training.logging_steps=1", "adapter.method=lora", "adapter.r=4",
        "adapter.alpha=8", "expect=[]", "name=lora-rm"])
    return run_to_end(ws, recipe)


def conversations() -> list[list[dict[str, str]]]:
    return [[*p, {"role": "assistant", "content": c}] for p, c in zip(PROMPTS, COMPLETIONS)]


def test_a_lora_reward_run_keeps_its_unmerged_adapter_beside_the_merged_model(reward_run, tiny):
    import json

    from studio.training import reward_workbench as wb
    from studio.training.reward_refs import reward_adapter_folder

    adapter = reward_adapter_folder(reward_run.final_dir)
    assert adapter == reward_run.path / "reward_adapter"
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == tiny and config["task_type"] == "SEQ_CLS"
    assert not (reward_run.final_dir / "adapter_config.json").exists()  # final/ stays a merged classifier
    merged = wb.load_reward_model(reward_run.path, device="cpu").score_conversations(conversations())
    unmerged = wb.load_reward_model(adapter, device="cpu").score_conversations(conversations())
    assert unmerged == pytest.approx(merged, abs=1e-5)
    assert merged[0] != pytest.approx(merged[1], abs=1e-6)  # a trained head tells the two apart


def test_the_reward_adapter_on_the_policy_base_scores_as_the_merged_classifier(reward_run, tiny):
    from studio.training import reward_workbench as wb
    from studio_train_ppo.models import LoRAModels

    options = PPOOptions(reward_model=str(reward_run.path))
    models, reward = load_ppo_models(ModelSpec(policy=tiny, device="cpu", options=options, adapter=LORA,
                                               reward_model=str(reward_run.path)))
    assert isinstance(models, LoRAModels) and models.reward_module is None
    assert set(models.model.peft_config) == {"policy", "value", "reward"}
    scores, means = reward.score(episodes(models.tokenizer))
    expected = wb.load_reward_model(reward_run.path, device="cpu").score_conversations(conversations())
    torch.testing.assert_close(scores, torch.tensor(expected), atol=1e-5, rtol=1e-5)
    assert means == pytest.approx({"rewards/reward_model/mean": sum(expected) / 2}, abs=1e-5)
    # The value adapter and head start as the reward's: the value at the last token is the score.
    encoder = wb.RewardModel(None, models.tokenizer, "", 1024)
    ids = torch.tensor([encoder.encode(conversations()[0])])
    mask = torch.ones_like(ids)
    values = models.values(ids, mask, torch.arange(ids.shape[1])[None])
    assert values[0, -1].item() == pytest.approx(expected[0], abs=1e-5)
    # Still one base: the third adapter and the head cost little.
    base = sum(p.numel() * p.element_size() for n, p in models.base.named_parameters() if ".lora_" not in n)
    assert base < models.memory()["weights"] < 1.6 * base
    lora_b = {role: [p for n, p in models.model.named_parameters() if f".{role}." in n and "lora_B" in n]
              for role in ("reward", "value", "policy")}
    assert all(p.abs().sum() > 0 for p in lora_b["reward"] + lora_b["value"])  # the run's trained weights
    assert all(p.abs().sum() == 0 for p in lora_b["policy"])  # the policy starts as the base
    assert not any(p.requires_grad for p in lora_b["reward"]) and all(p.requires_grad for p in lora_b["value"])


def test_full_layout_scores_with_the_workbench_and_starts_its_value_from_the_reward_model(reward_run, tiny):
    from studio.training import reward_workbench as wb

    options = PPOOptions(reward_funcs=["length_target"], reward_model=str(reward_run.path),
                         reward_weights=[0.0, 1.0])
    models, reward = load_ppo_models(ModelSpec(policy=tiny, device="cpu", options=options,
                                               reward_model=str(reward_run.path)))
    scorer = wb.load_reward_model(reward_run.path, device="cpu")
    expected = scorer.score_conversations(conversations())
    scores, means = reward.score(episodes(models.tokenizer))
    torch.testing.assert_close(scores, torch.tensor(expected))
    assert set(means) == {"rewards/length_target/mean", "rewards/reward_model/mean"}
    ids = torch.tensor([scorer.encode(conversations()[1])])
    values = models.values(ids, torch.ones_like(ids), torch.arange(ids.shape[1])[None])
    assert values[0, -1].item() == pytest.approx(expected[1], abs=1e-5)
    assert values.requires_grad and models.value_model is not models.reward_module


def test_dora_on_one_base_starts_at_the_reference_and_trains_its_magnitudes(tiny):
    models, _ = load_ppo_models(ModelSpec(policy=tiny, device="cpu", options=PPOOptions(reward_funcs=["length_target"]),
                                          adapter=AdapterSettings(method="dora", r=4, alpha=8)))
    ep = episodes(models.tokenizer)
    torch.testing.assert_close(models.policy_logits(*forward_args(ep)).detach(),
                               models.reference_logits(*forward_args(ep)))
    names = list(models._trainable)
    assert any("lora_magnitude_vector" in n and n.startswith("policy.") for n in names)
    assert any("lora_magnitude_vector" in n and n.startswith("value.") for n in names)


def test_the_shared_resolver_finds_a_reward_run_by_id_path_and_workspace_relative_path(reward_run, tmp_path):
    from studio.models.loading import ModelNotFound
    from studio.training.reward_refs import resolve_reward_model

    runs_dir = reward_run.path.parent
    root = runs_dir.parent
    this_run = runs_dir / "20990101-ppo-0000"  # the PPO run asking (its folder need not exist yet)
    final = reward_run.final_dir
    assert resolve_reward_model(reward_run.path.name, this_run) == final
    assert resolve_reward_model(str(reward_run.path), this_run) == final
    assert resolve_reward_model(str(reward_run.path.relative_to(root)), this_run) == final
    with pytest.raises(ModelNotFound, match="no reward model at no-such-run"):
        resolve_reward_model("no-such-run", this_run)
