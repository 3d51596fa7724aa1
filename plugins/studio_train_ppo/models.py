"""The four roles PPO needs (policy, reference, value, reward) behind one small interface, so
the update loop never knows how they are laid out.

Layouts:
- **full**: the policy trains in full; the reference is a frozen copy; the value model is a
  backbone with a one-output head, started from the reward model or from the policy with a
  zero-initialised head. **freeze** is full with only the recipe's last layers / named modules
  training (``studio.training.adapters.apply_freeze``).
- **LoRA** (and DoRA): one base model carries everything. Policy and value are two adapters on it,
  the value head a small separate linear layer; the reference is the base with adapters off; a
  LoRA reward run on the same base is a third adapter. About one model's memory, where trl 1.12
  held three or four models.

Dropout is off in every role (PPO's ratio must be 1 on the first mini-batch of an update): every
module stays in eval mode while gradients flow, and LoRA dropout is 0. The loop must not call
``.train()`` on the models.

Reward sources (``RewardSource``): the rule rewards shared with GRPO/RLOO, a reward model scored
exactly as the reward workbench (and ``studio reward``) scores a conversation, or, under LoRA, a
LoRA reward run on the same base as the third adapter, scored on the same ids. Several are summed
with ``options.reward_weights``.
"""
from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

from studio.training import rule_rewards
from studio.training.reward_refs import SCORE_HEAD_FILE, adapter_base, reward_adapter_folder
from studio.training.reward_workbench import RewardModel, load_reward_model, reward_model_folder

Emit = Callable[..., None]

VALUE_HEAD_FILE = "value_head.safetensors"
LORA_METHODS = ("lora", "dora")


@dataclass
class ModelSpec:
    """Everything needed to build the roles; the back-end fills it from the recipe, the benchmark
    by hand."""
    policy: str                                  # resolved model folder (an adapter run is merged first)
    options: Any                                 # PPOOptions (reward sources, value_init, ...)
    adapter: Any = None                          # recipe AdapterSettings; None or method "none" = full
    reward_model: str | None = None              # resolved reward model / reward run folder
    seed: int = 0
    trust_remote_code: bool = False
    model_kwargs: dict[str, Any] = field(default_factory=dict)   # dtype, ... for from_pretrained
    emit: Emit = lambda name, **fields: None
    device: str | None = None                    # where every role lives; None = CUDA when there is one

    def __post_init__(self):
        if self.device is None:
            import torch

            self.device = "cuda" if torch.cuda.is_available() else "cpu"


@dataclass
class Episodes:
    """One batch of finished rollouts as the reward sees them.

    ``query_responses``: [B, P + R] left-padded prompt ids then the response ids, padded after
    the response's end token; ``attention_mask`` and ``position_ids`` the same shape;
    ``response_ids``: each response as sampled and truncated (ending with its end token when it
    closed its turn); ``prompts``: each prompt's chat messages; ``completions``: the decoded
    responses (end token stripped); ``columns``: the prompt rows' other fields (``answer``)."""
    query_responses: Any
    attention_mask: Any
    position_ids: Any
    context_length: int
    response_ids: list[list[int]]
    prompts: list[list[dict[str, str]]]
    completions: list[str]
    ended: list[bool]
    columns: dict[str, list[Any]] = field(default_factory=dict)


class RewardSource(Protocol):
    """Scores finished episodes: one float per episode (before normalisation and the EOS penalty),
    plus each source's mean for the ``rewards/<name>/mean`` metrics."""

    def score(self, episodes: Episodes) -> tuple[Any, dict[str, float]]: ...


class PPOModels(Protocol):
    tokenizer: Any

    def policy_logits(self, input_ids, attention_mask, position_ids):
        """[B, T, V] logits of the policy (with gradient)."""

    def reference_logits(self, input_ids, attention_mask, position_ids):
        """[B, T, V] logits of the reference (no gradient)."""

    def values(self, input_ids, attention_mask, position_ids):
        """[B, T] value estimates (with gradient)."""

    def generator(self):
        """A context manager giving the policy as a causal LM to sample from (adapters set)."""

    def parameters_to_train(self) -> list:
        """Policy and value parameters the optimiser steps (value head included)."""

    def train_state(self) -> dict[str, Any]:
        """The trainable weights, for a checkpoint."""

    def load_train_state(self, state: dict[str, Any]) -> None: ...

    def save(self, final_dir: Path) -> None:
        """The policy in ``final_dir`` (a full model, or its adapter on its base) with its
        tokenizer, loadable wherever the studio takes a run; the value model in
        ``final_dir / "value"``."""

    def memory(self) -> dict[str, int]:
        """Bytes of weights, gradients held and parameters that train (for the benchmark)."""


# --- shared pieces ----------------------------------------------------------------------------


def end_token_ids(model, tokenizer) -> tuple[int, ...]:
    """The ids generation stops on: the generation config's EOS ids and the tokenizer's EOS."""
    ids = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = list(ids) if isinstance(ids, (list, tuple)) else [ids] if ids is not None else []
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    return tuple(sorted(set(ids)))


def _no_dropout(model) -> None:
    """Dropout off for good (eval mode, and p = 0 should anything switch training mode back on):
    PPO needs ratio 1 on the first mini-batch of an update."""
    import torch

    model.eval()
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0


def storage_bytes(tensors) -> int:
    """Bytes of the distinct storages behind ``tensors`` (shared weights count once)."""
    seen: dict[int, int] = {}
    for t in tensors:
        if t is None:
            continue
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())


def _memory(modules, trainable) -> dict[str, int]:
    tensors = [t for m in modules for t in [*m.parameters(), *m.buffers()]]
    return {"weights": storage_bytes(tensors),
            "gradients": storage_bytes([p.grad for m in modules for p in m.parameters()]),
            "trainable": sum(p.numel() * p.element_size() for p in trainable),
            "trainable_parameters": sum(p.numel() for p in trainable)}


def _backbone(model):
    """The transformer body of a ``*ForCausalLM`` / ``*ForSequenceClassification`` (hidden states)."""
    return getattr(model, model.base_model_prefix)


def _hidden(backbone, input_ids, attention_mask, position_ids):
    return backbone(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                    use_cache=False).last_hidden_state


def _load_tokenizer(location: str, trust_remote_code: bool):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(location, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _model_kwargs(spec: ModelSpec) -> dict[str, Any]:
    import torch

    return {"dtype": torch.float32, "trust_remote_code": spec.trust_remote_code, **spec.model_kwargs}


def _same_folder(a: str | Path | None, b: str | Path | None) -> bool:
    return a is not None and b is not None and Path(a).expanduser().resolve() == Path(b).expanduser().resolve()


def _same_vocabulary(tokenizer, other) -> bool:
    return tokenizer.get_vocab() == other.get_vocab()


# --- full fine-tuning (and freeze) ------------------------------------------------------------


class FullModels:
    """Separate policy, frozen reference and value models (a backbone with a one-output head)."""

    layout = "full"

    def __init__(self, policy, reference, value_model, tokenizer, adapter=None):
        self.policy = policy
        self.reference = reference
        self.value_model = value_model
        self.tokenizer = tokenizer
        self.reward_module = None               # a separate reward classifier, when there is one
        for model in (policy, reference, value_model):
            _no_dropout(model)
        reference.requires_grad_(False)
        if adapter is not None and adapter.method == "freeze":
            from studio.training.adapters import apply_freeze

            self.layout = "freeze"
            apply_freeze(policy, adapter)
            # The value head is new (or the reward model's) and must always train.
            apply_freeze(value_model, adapter.model_copy(
                update={"train_modules": [*adapter.train_modules, "score"]}))
        self._value_backbone = _backbone(value_model)

    def policy_logits(self, input_ids, attention_mask, position_ids):
        return self.policy(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                           use_cache=False).logits

    def reference_logits(self, input_ids, attention_mask, position_ids):
        import torch

        with torch.no_grad():
            return self.reference(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                                  use_cache=False).logits

    def values(self, input_ids, attention_mask, position_ids):
        hidden = _hidden(self._value_backbone, input_ids, attention_mask, position_ids)
        return self.value_model.score(hidden).squeeze(-1)

    @contextlib.contextmanager
    def generator(self):
        yield self.policy

    def named_trainable(self) -> dict[str, Any]:
        out = {f"policy.{n}": p for n, p in self.policy.named_parameters() if p.requires_grad}
        out.update({f"value.{n}": p for n, p in self.value_model.named_parameters() if p.requires_grad})
        return out

    def parameters_to_train(self) -> list:
        return list(self.named_trainable().values())

    def train_state(self) -> dict[str, Any]:
        return {name: p.detach().cpu().clone() for name, p in self.named_trainable().items()}

    def load_train_state(self, state: dict[str, Any]) -> None:
        _load_named(self.named_trainable(), state)

    def save(self, final_dir: Path) -> None:
        final_dir = Path(final_dir)
        self.policy.save_pretrained(str(final_dir))
        self.tokenizer.save_pretrained(str(final_dir))
        self.value_model.save_pretrained(str(final_dir / "value"))

    def memory(self) -> dict[str, int]:
        modules = [self.policy, self.reference, self.value_model]
        return _memory(modules + ([self.reward_module] if self.reward_module is not None else []),
                       self.parameters_to_train())


def _load_named(params: dict[str, Any], state: dict[str, Any]) -> None:
    import torch

    missing = sorted(set(params) - set(state))
    unexpected = sorted(set(state) - set(params))
    if missing or unexpected:
        raise ValueError(f"train state does not fit these models: missing {missing[:3]}, unexpected "
                         f"{unexpected[:3]}")
    with torch.no_grad():
        for name, param in params.items():
            param.copy_(state[name].to(param.device, param.dtype))


def _full_models(spec: ModelSpec, tokenizer, reward: "LoadedReward") -> FullModels:
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    from studio.models.loading import quiet_progress

    kwargs = _model_kwargs(spec)
    with quiet_progress():
        policy = AutoModelForCausalLM.from_pretrained(spec.policy, **kwargs)
        reference = AutoModelForCausalLM.from_pretrained(spec.policy, **kwargs)
        if reward.value_from_reward:
            # A trainable copy of the reward classifier (merged, as scored): its last-token value is the score.
            value = copy.deepcopy(reward.scorer.model).requires_grad_(True)
        else:
            torch.manual_seed(spec.seed)
            value = AutoModelForSequenceClassification.from_pretrained(spec.policy, num_labels=1, **kwargs)
            with torch.no_grad():
                value.score.weight.zero_()
                if getattr(value.score, "bias", None) is not None:
                    value.score.bias.zero_()
    if value.config.pad_token_id is None:
        value.config.pad_token_id = tokenizer.pad_token_id
    for model in (policy, reference, value):
        model.to(spec.device)
    return FullModels(policy, reference, value, tokenizer, spec.adapter)


# --- reward sources ---------------------------------------------------------------------------


class RuleRewards:
    """The built-in rule rewards (``studio.training.rule_rewards``), called as GRPO calls them:
    the completions, their ids and every prompt column. A reward that cannot judge an episode
    (None, e.g. exact_answer without an answer) gives 0 for it."""

    def __init__(self, names: list[str], options, tokenizer, end_ids: tuple[int, ...] = ()):
        self.names = list(names)
        self.funcs = [rule_rewards.build(name, options, tokenizer, end_ids) for name in self.names]

    def scores(self, episodes: Episodes) -> dict[str, list[float]]:
        columns = {k: v for k, v in episodes.columns.items() if k not in ("completions", "completion_ids", "prompts")}
        out = {}
        for name, func in zip(self.names, self.funcs):
            values = func(completions=episodes.completions, completion_ids=episodes.response_ids,
                          prompts=episodes.prompts, **columns)
            out[name] = [0.0 if v is None else float(v) for v in values]
        return out


class ScorerReward:
    """A reward model scored as the reward workbench scores a conversation: the prompt messages
    plus the assistant's completion through the reward tokenizer's chat template."""

    name = "reward_model"

    def __init__(self, scorer):
        self.scorer = scorer  # anything with score_conversations (a workbench RewardModel, an AdapterReward)

    def scores(self, episodes: Episodes) -> dict[str, list[float]]:
        conversations = [[*prompt, {"role": "assistant", "content": completion}]
                         for prompt, completion in zip(episodes.prompts, episodes.completions)]
        return {self.name: [float(v) for v in self.scorer.score_conversations(conversations)]}


class WeightedReward:
    """The weighted sum of the sources (weights in order: rule rewards, then the reward model)."""

    def __init__(self, sources: list, weights: list[float] | None = None):
        self.sources = sources
        self.weights = weights

    @property
    def names(self) -> list[str]:
        return [n for s in self.sources for n in (s.names if hasattr(s, "names") else [s.name])]

    def score(self, episodes: Episodes) -> tuple[Any, dict[str, float]]:
        import torch

        per_source: dict[str, list[float]] = {}
        for source in self.sources:
            per_source.update(source.scores(episodes))
        names = self.names
        weights = self.weights if self.weights is not None else [1.0] * len(names)
        if len(weights) != len(names):
            raise ValueError(f"{len(weights)} reward weight(s) for {len(names)} reward(s): {', '.join(names)}")
        total = torch.zeros(len(episodes.completions), dtype=torch.float32)
        for name, weight in zip(names, weights):
            total += weight * torch.tensor(per_source[name], dtype=torch.float32)
        means = {f"rewards/{name}/mean": float(torch.tensor(per_source[name]).mean()) for name in names}
        return total, means


@dataclass
class LoadedReward:
    """What the reward model decided about the layout: its scorer (a workbench RewardModel; None
    when the LoRA reward run is scored as an adapter), its adapter folder, and whether the value
    model starts from it."""
    scorer: Any = None
    adapter_folder: Path | None = None
    value_from_reward: bool = False


def _reward_adapter_on(reward_folder: Path, policy: str) -> Path | None:
    """A LoRA reward run's unmerged adapter when its base is the policy's folder."""
    adapter = reward_adapter_folder(reward_folder)
    return adapter if adapter is not None and _same_folder(adapter_base(adapter), policy) else None


def _load_reward(spec: ModelSpec, tokenizer, lora: bool) -> LoadedReward:
    options = spec.options
    if not spec.reward_model:
        return LoadedReward()
    model_dir = reward_model_folder(spec.reward_model)
    adapter = _reward_adapter_on(model_dir, spec.policy) if lora else None
    if adapter is not None:
        spec.emit("info", message=f"reward model: the LoRA reward run's adapter {adapter} on the policy's base")
        return LoadedReward(adapter_folder=adapter, value_from_reward=options.value_init in ("reward", "auto"))
    scorer = load_reward_model(model_dir, device=spec.device)
    spec.emit("info", message=f"reward model: {scorer.location}")
    value_from_reward = False
    if options.value_init in ("reward", "auto"):
        value_from_reward = _same_vocabulary(tokenizer, scorer.tokenizer) and hasattr(scorer.model, "score")
        if not value_from_reward and options.value_init == "reward":
            raise ValueError(f"config.value_init 'reward': the reward model {model_dir} does not share the "
                             f"policy's vocabulary (or has no .score head); use value_init 'policy'")
        if not value_from_reward:
            spec.emit("info", message="value model: from the policy with a zero head (the reward model has "
                                      "another vocabulary)")
    return LoadedReward(scorer=scorer, value_from_reward=value_from_reward)


def _reward_source(spec: ModelSpec, tokenizer, end_ids, reward: LoadedReward, adapter_scorer=None) -> WeightedReward:
    sources: list = []
    if spec.options.reward_funcs:
        sources.append(RuleRewards(spec.options.reward_funcs, spec.options, tokenizer, end_ids))
    scorer = adapter_scorer or reward.scorer
    if scorer is not None:
        sources.append(ScorerReward(scorer))
    if not sources:
        raise ValueError("no reward: name config.reward_funcs and/or a config.reward_model")
    return WeightedReward(sources, spec.options.reward_weights)


def load_ppo_models(spec: ModelSpec) -> tuple[PPOModels, RewardSource]:
    """The roles for ``spec``: full/freeze layouts as separate models, LoRA/DoRA on one base."""
    import torch

    torch.manual_seed(spec.seed)
    tokenizer = _load_tokenizer(spec.policy, spec.trust_remote_code)
    method = getattr(spec.adapter, "method", "none") if spec.adapter is not None else "none"
    if method in LORA_METHODS:
        reward = _load_reward(spec, tokenizer, lora=True)
        models, adapter_scorer = _lora_models(spec, tokenizer, reward)
        end_ids = end_token_ids(models.base, tokenizer)
        return models, _reward_source(spec, tokenizer, end_ids, reward, adapter_scorer)
    if method not in ("none", "freeze"):
        raise ValueError(f"adapter.method: PPO supports none, freeze, lora and dora, not {method!r}")
    reward = _load_reward(spec, tokenizer, lora=False)
    models = _full_models(spec, tokenizer, reward)
    models.reward_module = reward.scorer.model if reward.scorer is not None else None
    return models, _reward_source(spec, tokenizer, end_token_ids(models.policy, tokenizer), reward)


# --- LoRA / DoRA: one base, several adapters --------------------------------------------------


def _read_head(path: Path):
    from safetensors.torch import load_file

    return load_file(str(path))


def _linear_head(hidden_size: int, weights: dict[str, Any] | None = None):
    """A one-output head: zero-initialised (values start at 0) or the given score weights."""
    import torch

    bias = weights is not None and "bias" in weights
    head = torch.nn.Linear(hidden_size, 1, bias=bias)
    with torch.no_grad():
        if weights is None:
            head.weight.zero_()
        else:
            head.weight.copy_(weights["weight"].reshape(1, hidden_size))
            if bias:
                head.bias.copy_(weights["bias"].reshape(1))
    return head


def _adapter_lora_weights(folder: Path) -> dict[str, Any]:
    """The LoRA (and DoRA) weights of a saved adapter, without its task head (modules_to_save)."""
    from safetensors.torch import load_file

    state = load_file(str(folder / "adapter_model.safetensors"))
    return {k: v for k, v in state.items() if ".lora_" in k}


def _causal_config(folder: Path):
    """A saved adapter's LoRA config made fit for the causal base: no task head, no dropout, training."""
    from peft import LoraConfig

    config = LoraConfig.from_pretrained(str(folder))
    config.task_type = "CAUSAL_LM"
    config.modules_to_save = None
    config.lora_dropout = 0.0
    config.inference_mode = False
    return config


def _add_saved_adapter(model, name: str, folder: Path) -> None:
    """A saved (reward) adapter as adapter ``name`` of the causal base: same layers, same weights."""
    from peft import set_peft_model_state_dict

    model.add_adapter(name, _causal_config(folder))
    weights = _adapter_lora_weights(folder)
    result = set_peft_model_state_dict(model, weights, adapter_name=name)
    if result.unexpected_keys or not weights:
        raise ValueError(f"the adapter in {folder} does not fit the policy's base: "
                         f"{len(result.unexpected_keys)} of {len(weights)} weights found no layer "
                         f"(e.g. {result.unexpected_keys[:2]})")


class LoRAModels:
    """One base model with peft adapters ``policy`` and ``value`` (and ``reward`` for a LoRA
    reward run on the same base); the value head is a separate linear layer; the reference is
    the base with adapters off.

    peft's ``set_adapter`` (and leaving ``disable_adapter``) marks only the active adapter
    trainable; every role switch here restores ``requires_grad`` on both trained adapters so the
    optimiser keeps stepping policy and value whatever ran last."""

    layout = "lora"
    POLICY, VALUE, REWARD = "policy", "value", "reward"

    def __init__(self, model, value_head, tokenizer, base_location: str, reward_head=None):
        self.model = model                      # the PeftModel
        self.value_head = value_head
        self.reward_head = reward_head
        self.tokenizer = tokenizer
        self.base_location = base_location
        self.reward_module = None               # a separate reward classifier, when there is one
        _no_dropout(model)
        for head in (value_head, reward_head):
            if head is not None:
                head.eval()
        if reward_head is not None:
            reward_head.requires_grad_(False)
        self._trainable = {f"{role}.{name}": p for role in (self.POLICY, self.VALUE)
                           for name, p in model.named_parameters() if f".{role}." in name}
        self._trainable.update({f"value_head.{n}": p for n, p in value_head.named_parameters()})
        self._frozen = [p for n, p in model.named_parameters() if f".{self.REWARD}." in n]
        self._active = None
        self._use(self.POLICY)

    @property
    def base(self):
        return self.model.get_base_model()

    @property
    def _body(self):
        return _backbone(self.base)

    def _restore_trainable(self) -> None:
        for p in self._trainable.values():
            p.requires_grad_(True)
        for p in self._frozen:
            p.requires_grad_(False)

    def _use(self, adapter: str) -> None:
        if self._active != adapter:
            self.model.set_adapter(adapter)
            self._active = adapter
        self._restore_trainable()

    def policy_logits(self, input_ids, attention_mask, position_ids):
        self._use(self.POLICY)
        return self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                          use_cache=False).logits

    def reference_logits(self, input_ids, attention_mask, position_ids):
        import torch

        try:
            with torch.no_grad(), self.model.disable_adapter():
                return self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                                  use_cache=False).logits
        finally:
            self._restore_trainable()

    def values(self, input_ids, attention_mask, position_ids):
        self._use(self.VALUE)
        return self.value_head(_hidden(self._body, input_ids, attention_mask, position_ids)).squeeze(-1)

    def reward_hidden_scores(self, input_ids, attention_mask):
        """[B] scores of the reward adapter + score head read at each row's last real token
        (rows right-padded, as a sequence classifier reads them)."""
        import torch

        with torch.no_grad():
            self._use(self.REWARD)
            try:
                hidden = _hidden(self._body, input_ids, attention_mask, None)
            finally:
                self._use(self.POLICY)
            last = attention_mask.sum(-1) - 1
            return self.reward_head(hidden[torch.arange(hidden.shape[0]), last]).squeeze(-1)

    @contextlib.contextmanager
    def generator(self):
        self._use(self.POLICY)
        yield self.model

    def parameters_to_train(self) -> list:
        return list(self._trainable.values())

    def train_state(self) -> dict[str, Any]:
        return {name: p.detach().cpu().clone() for name, p in self._trainable.items()}

    def load_train_state(self, state: dict[str, Any]) -> None:
        _load_named(self._trainable, state)

    def _save_adapter(self, adapter: str, folder: Path) -> None:
        from peft import get_peft_model_state_dict
        from safetensors.torch import save_file

        folder.mkdir(parents=True, exist_ok=True)
        state = get_peft_model_state_dict(self.model, adapter_name=adapter)
        save_file({k: v.detach().cpu().contiguous() for k, v in state.items()},
                  str(folder / "adapter_model.safetensors"))
        config = copy.deepcopy(self.model.peft_config[adapter])
        config.base_model_name_or_path = self.base_location
        config.inference_mode = True
        config.save_pretrained(str(folder))

    def save(self, final_dir: Path) -> None:
        """final/: the policy adapter alone, a plain peft adapter on the resolved base (as SFT LoRA
        runs save it), with the tokenizer; final/value/: the value adapter and its head."""
        from safetensors.torch import save_file

        final_dir = Path(final_dir)
        self._save_adapter(self.POLICY, final_dir)
        self.tokenizer.save_pretrained(str(final_dir))
        self._save_adapter(self.VALUE, final_dir / "value")
        save_file({k: v.detach().cpu().contiguous() for k, v in self.value_head.state_dict().items()},
                  str(final_dir / "value" / VALUE_HEAD_FILE))

    def memory(self) -> dict[str, int]:
        modules = [self.model, self.value_head] + [m for m in (self.reward_head, self.reward_module) if m is not None]
        return _memory(modules, self.parameters_to_train())


class AdapterReward:
    """A LoRA reward run scored as the third adapter on the policy's base: the workbench's
    encoding (its chat template) and the classifier's reading (the last real token)."""

    def __init__(self, models: LoRAModels, max_length: int = 1024):
        self.models = models
        self.encoder = RewardModel(None, models.tokenizer, models.base_location, max_length)

    def score_conversations(self, conversations: list[list[dict[str, str]]]) -> list[float]:
        import torch

        from studio.training.reward_workbench import SCORE_BATCH

        pad = self.models.tokenizer.pad_token_id
        out: list[float] = []
        device = next(self.models.model.parameters()).device
        for lo in range(0, len(conversations), SCORE_BATCH):
            encoded = [self.encoder.encode(c) for c in conversations[lo:lo + SCORE_BATCH]]
            width = max(len(ids) for ids in encoded)
            input_ids = torch.full((len(encoded), width), pad, dtype=torch.long)
            attention = torch.zeros((len(encoded), width), dtype=torch.long)
            for i, ids in enumerate(encoded):
                input_ids[i, :len(ids)] = torch.tensor(ids, dtype=torch.long)
                attention[i, :len(ids)] = 1
            scores = self.models.reward_hidden_scores(input_ids.to(device), attention.to(device))
            out.extend(float(v) for v in scores.float().cpu())
        return out


def _lora_config(adapter):
    from studio.training.adapters import peft_config

    config = peft_config(adapter, "CAUSAL_LM", "")
    config.lora_dropout = 0.0  # dropout off in every role
    return config


def _lora_models(spec: ModelSpec, tokenizer, reward: LoadedReward) -> tuple[LoRAModels, AdapterReward | None]:
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from studio.models.loading import quiet_progress

    with quiet_progress():
        base = AutoModelForCausalLM.from_pretrained(spec.policy, **_model_kwargs(spec))
    torch.manual_seed(spec.seed)
    model = get_peft_model(base, _lora_config(spec.adapter), adapter_name=LoRAModels.POLICY)
    hidden = base.config.hidden_size
    reward_head = None
    if reward.adapter_folder is not None:
        folder = reward.adapter_folder
        _add_saved_adapter(model, LoRAModels.REWARD, folder)
        reward_head = _linear_head(hidden, _read_head(folder / SCORE_HEAD_FILE))
    if reward.value_from_reward and reward.adapter_folder is not None:
        # The value adapter and head start as copies of the reward adapter and its score head.
        folder = reward.adapter_folder
        _add_saved_adapter(model, LoRAModels.VALUE, folder)
        value_head = _linear_head(hidden, _read_head(folder / SCORE_HEAD_FILE))
    else:
        model.add_adapter(LoRAModels.VALUE, _lora_config(spec.adapter))
        head_weights = None
        if reward.value_from_reward and reward.scorer is not None:
            score = reward.scorer.model.score
            if score.weight.shape[-1] == hidden:
                head_weights = {k: v.detach().clone() for k, v in score.state_dict().items()}
        value_head = _linear_head(hidden, head_weights)
    for module in (model, value_head, reward_head):
        if module is not None:
            module.to(spec.device)
    models = LoRAModels(model, value_head, tokenizer, spec.policy, reward_head)
    if reward.scorer is not None:
        models.reward_module = reward.scorer.model
    limit = getattr(base.config, "max_position_embeddings", None) or 1024
    scorer = AdapterReward(models, min(1024, limit)) if reward_head is not None else None
    return models, scorer
