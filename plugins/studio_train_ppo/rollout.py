"""Sampling the responses of one update: our own KV-cache loop, not HF ``generate``.

Prompts are left-padded and every forward pass gets explicit ``position_ids`` (the cumulative
sum of the attention mask), so a prompt's positions do not depend on its padding. Logits are
divided by the temperature, with no top-k and no top-p, so the distribution sampled from is the
one the update's log-probs are computed under. Sampling draws from a ``torch.Generator`` the
caller seeds per update: a resumed run samples what the uninterrupted one did.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .core import truncate_after_stop


@dataclass
class Rollout:
    """One batch of sampled episodes, ready for the scoring and training passes.

    ``query_responses``: ``[B, P + R]`` left-padded prompts then responses (pads after each
    response's stop token); ``attention_mask`` and ``position_ids`` the same shape;
    ``responses`` and ``response_mask``: ``[B, R]``; ``ended``: whether each response closed its
    turn within the length cap."""
    query_responses: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    context_length: int
    responses: torch.Tensor
    response_mask: torch.Tensor
    ended: torch.Tensor

    def response_ids(self) -> list[list[int]]:
        lengths = self.response_mask.sum(1).tolist()
        return [row[:n] for row, n in zip(self.responses.tolist(), lengths)]


def positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids for left-padded rows: 0 at each row's first real token (pads get 0)."""
    return (attention_mask.long().cumsum(1) - 1).clamp(min=0)


def left_pad(prompts: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ids, attention_mask)`` of the prompts, padded on the left to the longest."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt):] = torch.tensor(prompt, dtype=torch.long)
        mask[row, width - len(prompt):] = 1
    return ids, mask


def stop_ids(model, tokenizer) -> list[int]:
    """The ids a response ends on: the model's generation-config EOS list plus the tokenizer's EOS."""
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = configured if isinstance(configured, list) else [configured] if configured is not None else []
    if tokenizer.eos_token_id is not None:
        ids = [*ids, tokenizer.eos_token_id]
    return sorted(set(ids))


@torch.inference_mode()
def sample(model, prompts: list[list[int]], *, pad_id: int, stop: list[int], response_length: int,
           temperature: float, generator: torch.Generator) -> Rollout:
    """Sample one response per prompt, at most ``response_length`` tokens, stopping a row at its
    first stop token (the loop ends when every row has stopped)."""
    from transformers import DynamicCache

    from studio.serving.batching import cache_keyword

    query, query_mask = left_pad(prompts, pad_id)
    batch, context_length = query.shape
    device = next(model.parameters()).device
    query, query_mask = query.to(device), query_mask.to(device)
    stop_tensor = torch.tensor(stop, dtype=torch.long, device=device)
    cache = DynamicCache()
    # transformers 5.25 renamed the forward's past_key_values to cache; a name the model does not
    # take would be swallowed by **kwargs and every step would see only its own token.
    keyword = cache_keyword(model.get_base_model() if hasattr(model, "get_base_model") else model)
    attention = query_mask
    step_ids, step_positions = query, positions(query_mask)
    next_position = query_mask.sum(1, keepdim=True)
    tokens, done = [], torch.zeros(batch, dtype=torch.bool, device=device)
    for _ in range(response_length):
        # The cache fills in place; only the last position's logits are needed.
        out = model(input_ids=step_ids, attention_mask=attention, position_ids=step_positions, use_cache=True,
                    logits_to_keep=1, **{keyword: cache})
        logits = out.logits[:, -1, :].float() / temperature
        probs = torch.softmax(logits, dim=-1)
        token = torch.multinomial(probs.cpu(), 1, generator=generator).to(device)
        tokens.append(token)
        done = done | torch.isin(token.squeeze(1), stop_tensor)
        if bool(done.all()):
            break
        step_ids, step_positions = token, next_position
        next_position = next_position + 1
        attention = torch.cat([attention, torch.ones_like(token)], dim=1)
    raw = torch.cat(tokens, dim=1)
    responses, response_mask, ended = truncate_after_stop(raw, stop, pad_id)
    attention_mask = torch.cat([query_mask, response_mask.long()], dim=1)
    return Rollout(query_responses=torch.cat([query, responses], dim=1), attention_mask=attention_mask,
                   position_ids=positions(attention_mask), context_length=context_length, responses=responses,
                   response_mask=response_mask, ended=ended)
