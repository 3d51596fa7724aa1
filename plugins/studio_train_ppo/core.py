"""PPO's arithmetic: masked statistics, GAE, KL estimators and controllers, the clipped losses,
score placement and truncation. Pure torch, no models: the unit tests check each function
against hand-computed examples.

Shapes: ``[B, R]`` per response token, with ``mask`` true on a response's valid tokens (a
prefix of each row: the tokens up to and including its end token).

Functions that compute whole-batch statistics take an optional ``reduce``: a callable that sums
a tensor over every process (``torch.distributed.all_reduce``), so that whitening under several
processes uses the statistics of the global batch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

Reduce = Callable[[torch.Tensor], torch.Tensor]


def _sum_all(x: torch.Tensor, reduce: Reduce | None) -> torch.Tensor:
    return reduce(x) if reduce is not None else x


# --- masked statistics ---------------------------------------------------------------------------


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of ``x`` over the positions where ``mask`` is true (over ``dim``, or everything)."""
    mask = mask.to(x.dtype)
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1)


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of ``x`` over the valid positions (Bessel-corrected when ``unbiased``)."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    if unbiased:
        count = mask.sum()
        var = var * count / (count - 1).clamp(min=1)
    return var


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True,
                  reduce: Reduce | None = None) -> torch.Tensor:
    """``(x - mean) / std`` with mean and (unbiased) variance over the valid tokens only; the
    mean is added back when ``shift_mean`` is false (rewards keep their sign). Invalid positions
    come out as 0."""
    m = mask.to(x.dtype)
    xd, md = x.double(), m.double()  # one-pass sums: double keeps sum(x^2) - n mean^2 exact enough
    stats = _sum_all(torch.stack([(xd * md).sum(), (xd * xd * md).sum(), md.sum()]), reduce)
    total, total_sq, count = stats[0], stats[1], stats[2].clamp(min=1)
    mean = total / count
    var = (total_sq / count - mean * mean).clamp(min=0) * count / (count - 1).clamp(min=1)
    mean, std = mean.to(x.dtype), torch.sqrt(var + 1e-8).to(x.dtype)
    whitened = (x - mean) / std
    if not shift_mean:
        whitened = whitened + mean
    return whitened * m


# --- advantages ----------------------------------------------------------------------------------


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float,
        lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation: ``(advantages, returns)``, both 0 past each response's
    last valid token. The value after the last valid token is 0 (the episode ends there), so
    nothing from the padding leaks into the response."""
    m = mask.to(values.dtype)
    rewards, values = rewards * m, values * m
    length = rewards.shape[1]
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(length)):  # over response positions (a few dozen), not episodes
        next_value = values[:, t + 1] if t + 1 < length else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = (delta + gamma * lam * running) * m[:, t]
        advantages[:, t] = running
    return advantages, (advantages + values) * m


# --- KL --------------------------------------------------------------------------------------------


def kl_per_token(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: str = "k1") -> torch.Tensor:
    """Per-token estimate of KL(policy || reference) from the sampled tokens' log-probs.
    k1: ``log p - log q`` (unbiased, may be negative); k3: ``(r - 1) - log r`` with
    ``r = q / p`` (unbiased, never negative)."""
    logratio = logprobs - ref_logprobs
    if estimator == "k1":
        return logratio
    if estimator == "k3":
        return torch.expm1(-logratio) + logratio
    raise ValueError(f"unknown KL estimator {estimator!r}; expected k1 or k3")


class FixedKL:
    """A constant KL coefficient beta."""

    def __init__(self, value: float):
        self.value = float(value)

    def update(self, current: float, n_steps: int) -> None:
        pass

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = float(state["value"])


class AdaptiveKL(FixedKL):
    """Ziegler et al.'s controller: beta grows when the KL runs above ``target`` and shrinks
    below it, by at most 20% of ``n_steps / horizon`` per update."""

    def __init__(self, value: float, target: float, horizon: int):
        super().__init__(value)
        self.target = float(target)
        self.horizon = int(horizon)

    def update(self, current: float, n_steps: int) -> None:
        error = min(max(current / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon


# --- running reward statistics ---------------------------------------------------------------------


class RunningMoments:
    """Running mean and (unbiased) standard deviation of every score seen, combined batch by
    batch with the parallel algorithm (Chan et al.), so the order of batches does not matter."""

    def __init__(self):
        self.mean, self.var, self.count = 0.0, 1.0, 1e-24

    @property
    def std(self) -> float:
        return math.sqrt(self.var * self.count / max(self.count - 1, 1))

    def update(self, xs: torch.Tensor) -> tuple[float, float]:
        """Fold a batch in; returns the batch's own mean and (unbiased) standard deviation."""
        xs = xs.detach().double().flatten()
        n = xs.numel()
        batch_mean = xs.mean().item()
        batch_var = xs.var(unbiased=False).item() if n > 1 else 0.0
        delta = batch_mean - self.mean
        total = self.count + n
        m2 = self.var * self.count + batch_var * n + delta * delta * self.count * n / total
        self.mean += delta * n / total
        self.var = m2 / total
        self.count = total
        return batch_mean, math.sqrt(batch_var * n / max(n - 1, 1))

    def state_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "var": self.var, "count": self.count}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.mean, self.var, self.count = float(state["mean"]), float(state["var"]), float(state["count"])


# --- log-probs and entropy ---------------------------------------------------------------------------


def logprobs_from_logits(logits: torch.Tensor, tokens: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Log-probability of each token under ``logits / temperature`` (the sampling distribution)."""
    logp = F.log_softmax(logits.float() / temperature, dim=-1)
    return logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the categorical distribution each position's logits define."""
    logp = F.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)


# --- losses ------------------------------------------------------------------------------------------


@dataclass
class PolicyLoss:
    loss: torch.Tensor
    clipfrac: torch.Tensor
    approxkl: torch.Tensor
    ratio: torch.Tensor


def policy_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                mask: torch.Tensor, cliprange: float) -> PolicyLoss:
    """PPO's clipped surrogate (to minimise), with the share of tokens where the clip binds,
    ``approxkl = 0.5 * mean(logratio^2)`` and the mean ratio, all over valid tokens."""
    logratio = logprobs - old_logprobs
    ratio = torch.exp(logratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    with torch.no_grad():
        clipfrac = masked_mean((clipped > unclipped).float(), mask)
        approxkl = 0.5 * masked_mean(logratio * logratio, mask)
        ratio_mean = masked_mean(ratio, mask)
    return PolicyLoss(masked_mean(torch.max(unclipped, clipped), mask), clipfrac, approxkl, ratio_mean)


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
               cliprange_value: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(0.5 * mean(max(unclipped, clipped squared error)), clipfrac)`` over valid tokens, the
    prediction clipped to ``old_values +- cliprange_value``."""
    clipped_values = old_values + torch.clamp(values - old_values, -cliprange_value, cliprange_value)
    unclipped_error = (values - returns) ** 2
    clipped_error = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.max(unclipped_error, clipped_error), mask)
    with torch.no_grad():
        clipfrac = masked_mean((clipped_error > unclipped_error).float(), mask)
    return loss, clipfrac


# --- scores and truncation ---------------------------------------------------------------------------


def last_valid_index(mask: torch.Tensor) -> torch.Tensor:
    """Index of each row's last valid token (0 for an empty row)."""
    return (mask.long().sum(1) - 1).clamp(min=0)


def place_score(rewards: torch.Tensor, scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Add each episode's score to its last valid token: the EOS/end-of-turn token itself when
    the response closed its turn (not the pad after it), else the last token sampled."""
    out = rewards.clone()
    rows = torch.arange(rewards.shape[0], device=rewards.device)
    out[rows, last_valid_index(mask)] += scores.to(rewards.dtype)
    return out


def truncate_after_stop(responses: torch.Tensor, stop_ids: list[int] | tuple[int, ...],
                        pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cut each sampled response after its first stop token: ``(responses with pads after it,
    mask of valid tokens (the stop token included), ended per row)``."""
    is_stop = torch.isin(responses, torch.tensor(list(stop_ids), dtype=responses.dtype, device=responses.device))
    # Tokens strictly after the first stop: a stop has been seen before this position.
    seen_before = (torch.cumsum(is_stop.long(), dim=1) - is_stop.long()) > 0
    mask = ~seen_before
    return responses.masked_fill(~mask, pad_id), mask, is_stop.any(1)
