"""What both sides of the PPO benchmark share: the planted reward and the memory accounting.

Imported by ``bench/bench_ppo.py``'s child (the studio's venv) and by ``bench/ppo_reference_trl.py``
(trl 1.12.0's venv), so it needs nothing but the standard library and torch.

The planted reward is a learnable rule over response token ids: the share of a response's tokens
(before its end token) that fall in a fixed "good" half of the vocabulary. trl takes a reward as a
module with ``base_model_prefix``, a backbone returning hidden states and a ``.score`` head, and
reads the score at the response's last token; ``PlantedRewardModel`` computes the rule that way.
The studio takes a ``RewardSource`` over finished episodes; ``planted_share`` computes it from the
response ids. Both give the same number for the same response (tests/test_bench_ppo.py).
"""
from __future__ import annotations

import gc
import random
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn


def good_token_ids(vocab_size: int, seed: int = 0, skip: tuple[int, ...] = ()) -> list[int]:
    """A fixed random half of the vocabulary (special tokens in ``skip`` never count as good)."""
    ids = [i for i in range(vocab_size) if i not in set(skip)]
    return sorted(random.Random(seed).sample(ids, len(ids) // 2))


def planted_share(response_ids: list[int], good: set[int], end_id: int, pad_id: int) -> float:
    """Share of good tokens among the response's tokens before its end token (0 for none).

    A pad token inside a response ends it, as it does where trl reads its score."""
    body = []
    for token in response_ids:
        if token in (end_id, pad_id):
            break
        body.append(token)
    return sum(t in good for t in body) / len(body) if body else 0.0


class _TokenFeatures(nn.Module):
    """Stands in for a transformer backbone: per position, [is a response token, is a good one]."""

    def __init__(self, good_mask: torch.Tensor, context_length: int, end_id: int):
        super().__init__()
        self.register_buffer("good_mask", good_mask, persistent=False)
        self.context_length = context_length
        self.end_id = end_id

    def forward(self, input_ids, attention_mask=None, **kwargs):
        positions = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)
        in_response = positions >= self.context_length
        stop = in_response & (input_ids == self.end_id)
        if attention_mask is not None:
            stop = stop | (in_response & ~attention_mask.bool())
        # the end token, a pad, and everything after the first of them do not count (as in planted_share)
        response = in_response & (torch.cumsum(stop.long(), dim=1) == 0)
        good = response & self.good_mask[input_ids]
        features = torch.stack([response, good], dim=-1).float()
        return SimpleNamespace(hidden_states=(features,), logits=None)


class _ShareOfGood(nn.Module):
    def forward(self, hidden):
        counted = torch.cumsum(hidden[..., 0], dim=1)
        good = torch.cumsum(hidden[..., 1], dim=1)
        return (good / counted.clamp(min=1.0)).unsqueeze(-1)


class PlantedRewardModel(nn.Module):
    """The planted rule as a reward *model* the way trl 1.12's ``get_reward`` calls one:
    ``getattr(model, model.base_model_prefix)(input_ids=..., attention_mask=..., ...)`` then
    ``model.score(hidden_states[-1])``, read at each response's last token. Prompts are left-padded
    to one length, so the response starts at ``context_length``."""

    base_model_prefix = "backbone"

    def __init__(self, good: list[int], vocab_size: int, context_length: int, end_id: int):
        super().__init__()
        mask = torch.zeros(vocab_size, dtype=torch.bool)
        mask[torch.tensor(good, dtype=torch.long)] = True
        self.backbone = _TokenFeatures(mask, context_length, end_id)
        self.score = _ShareOfGood()


# ---------------------------------------------------------------------------------------------------
# Memory


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def import_model_libraries() -> None:
    """What both sides load lazily (peft, the Llama classes), imported before the RSS baseline so
    that the peak above it counts training, not imports."""
    import peft  # noqa: F401
    from transformers.models.llama import modeling_llama  # noqa: F401


def rss_baseline() -> int:
    """Bytes resident now, and the peak (VmHWM) reset to it where the kernel allows, so that the
    peak read later counts only what came after (imports stay in the baseline)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    return _status_kib("VmRSS") * 1024


def rss_peak() -> int:
    return _status_kib("VmHWM") * 1024


def _storage_key(tensor: torch.Tensor) -> int:
    return tensor.untyped_storage().data_ptr()


def held_tensor_bytes() -> dict[str, int]:
    """Bytes of every live model's weights (unique storages across all modules: a shared base is
    counted once), of the gradients its trainable parameters hold at an optimiser step, and of
    every live optimiser's state."""
    with warnings.catch_warnings():  # isinstance() on some torch module objects warns of deprecations
        warnings.simplefilter("ignore")
        objects = gc.get_objects()
        modules = [o for o in objects if isinstance(o, nn.Module)]
        optimisers = [o for o in objects if isinstance(o, torch.optim.Optimizer)]
    weights: dict[int, int] = {}
    for module in modules:
        for tensor in list(module.parameters(recurse=False)) + list(module.buffers(recurse=False)):
            if _storage_key(tensor):
                weights[_storage_key(tensor)] = tensor.untyped_storage().nbytes()
    # a parameter an optimiser steps holds a gradient of its size at the step (requires_grad alone
    # says nothing: trl's frozen reference copy keeps it on)
    trained: dict[int, int] = {}
    state: dict[int, int] = {}
    for optimiser in optimisers:
        for group in optimiser.param_groups:
            for param in group["params"]:
                trained[_storage_key(param)] = param.untyped_storage().nbytes()
        for per_param in optimiser.state.values():
            for value in per_param.values():
                if isinstance(value, torch.Tensor) and _storage_key(value) and _storage_key(value) not in weights:
                    state[_storage_key(value)] = value.untyped_storage().nbytes()
    del objects, modules, optimisers
    return {"weights": sum(weights.values()), "gradients": sum(trained.values()), "optimizer": sum(state.values())}


def timed_training(train, profile: bool) -> tuple[float, float, str | None]:
    """Runs ``train()``: its wall and CPU seconds (the CPU seconds move less when other processes
    share the cores), and with ``profile`` the top of a cProfile by cumulative time (where the
    seconds go; the profiler's overhead lands in the seconds)."""
    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
    start, cpu = time.perf_counter(), time.process_time()
    if profiler is None:
        train()
    else:
        profiler.runcall(train)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    if profiler is None:
        return seconds, cpu_seconds, None
    import io
    import pstats

    text = io.StringIO()
    pstats.Stats(profiler, stream=text).strip_dirs().sort_stats("cumulative").print_stats(40)
    return seconds, cpu_seconds, text.getvalue()


def gain_per_episode(scores: list[float], batch_size: int, k: int) -> float:
    """Mean score of the last ``k`` updates minus the first ``k``, over the episodes between the
    two windows' centres."""
    k = max(1, min(k, len(scores) // 2))
    if len(scores) < 2:
        return 0.0
    first, last = sum(scores[:k]) / k, sum(scores[-k:]) / k
    return (last - first) / ((len(scores) - k) * batch_size)
