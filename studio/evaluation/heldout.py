"""Held-out loss and perplexity, measured on exactly the tokens training puts loss on.

A conversation is rendered by the model's chat template with ``return_assistant_tokens_mask``
(the template's ``{% generation %}`` blocks), as trl's SFTTrainer does with ``assistant_only_loss``:
loss falls on the assistant's replies and their end-of-turn token, nothing else. A template
without the marks gets trl's marked version of it where trl knows one (as the SFT back-end
does); otherwise the evaluation says so rather than measure different tokens than training.

Per conversation: the summed negative log-likelihood of its assistant tokens and their count.
The held-out loss is the token-weighted mean (what the trainer's ``eval_loss`` reports over a
whole split), perplexity its exponential.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

from studio.evaluation.base import EvalStopped
from studio.evaluation.stats import mcnemar, paired_bootstrap


Progress = Callable[[int, int], None]


def marked_template(tokenizer, model_ref: str = "the model") -> str:
    """The chat template that marks assistant tokens: the tokenizer's own, or trl's marked
    version of a popular unmarked one. Raises ValueError when there is neither."""
    from studio.models.inspect import marked_chat_template

    if not tokenizer.chat_template:
        raise ValueError(f"{model_ref} has no chat template: held-out loss is measured on the assistant tokens "
                         "the chat template marks, as training does")
    marked = marked_chat_template(tokenizer)
    if not marked:
        raise ValueError(f"the chat template of {model_ref} has no {{% generation %}} marks (and trl knows no marked "
                         "version of it), so its assistant tokens cannot be told apart the way training does")
    return marked


def encode_conversation(tokenizer, messages: list[dict[str, str]], template: str,
                        max_length: int | None = None) -> tuple[list[int], list[int]]:
    """Token ids and the assistant mask (1 = carries loss), cut to ``max_length`` as training cuts."""
    encoded = tokenizer.apply_chat_template(messages, chat_template=template, tokenize=True, return_dict=True,
                                            return_assistant_tokens_mask=True)
    ids = list(encoded["input_ids"])
    mask = [int(bool(bit)) for bit in encoded["assistant_masks"]]
    if max_length is not None:
        ids, mask = ids[:max_length], mask[:max_length]
    if mask:
        mask[0] = 0  # nothing before the first token predicts it
    return ids, mask


def conversation_losses(model, tokenizer, conversations: Sequence[list[dict[str, str]]], *, batch_size: int = 16,
                        max_length: int | None = None, model_ref: str = "the model",
                        progress: Progress | None = None,
                        cancelled: Callable[[], bool] = lambda: False) -> list[tuple[float, int]]:
    """(summed NLL over assistant tokens, assistant token count) per conversation, in order.
    Conversations are batched by length, right-padded; padding never reaches the loss."""
    import torch

    template = marked_template(tokenizer, model_ref)
    limit = max_length or getattr(model.config, "max_position_embeddings", None)
    encoded = [encode_conversation(tokenizer, c, template, limit) for c in conversations]
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i][0]))
    results: list[tuple[float, int]] = [(0.0, 0)] * len(encoded)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    done = 0
    try:
        for start in range(0, len(order), max(1, batch_size)):
            if cancelled():
                raise EvalStopped("cancelled")
            batch = order[start:start + batch_size]
            width = max(len(encoded[i][0]) for i in batch)
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            attention = torch.zeros((len(batch), width), dtype=torch.long)
            loss_mask = torch.zeros((len(batch), width), dtype=torch.bool)
            for row, i in enumerate(batch):
                tokens, mask = encoded[i]
                ids[row, :len(tokens)] = torch.tensor(tokens, dtype=torch.long)
                attention[row, :len(tokens)] = 1
                loss_mask[row, :len(mask)] = torch.tensor(mask, dtype=torch.bool)
            with torch.no_grad():
                logits = model(input_ids=ids.to(device), attention_mask=attention.to(device)).logits.float()
            logprobs = torch.log_softmax(logits[:, :-1], dim=-1)
            targets = ids[:, 1:].to(device)
            picked = logprobs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
            counted = loss_mask[:, 1:].to(device)
            nll = -(picked * counted).sum(dim=-1)
            for row, i in enumerate(batch):
                results[i] = (float(nll[row]), int(counted[row].sum()))
            done += len(batch)
            if progress is not None:
                progress(done, len(order))
    finally:
        if was_training:
            model.train()
    return results


def token_weighted_loss(nlls: Sequence[float], tokens: Sequence[int]) -> dict[str, Any]:
    """Loss (total NLL / total tokens) and perplexity, with standard errors: the ratio
    estimator's for the loss over conversations, the delta method's for perplexity."""
    pairs = [(nll, t) for nll, t in zip(nlls, tokens) if t > 0]
    n = len(pairs)
    total_tokens = sum(t for _, t in pairs)
    if not total_tokens:
        nan = float("nan")
        return {"loss": {"value": nan, "stderr": nan, "n": n}, "perplexity": {"value": nan, "stderr": nan, "n": n}}
    loss = sum(nll for nll, _ in pairs) / total_tokens
    if n > 1:
        spread = sum((nll - loss * t) ** 2 for nll, t in pairs)
        stderr = math.sqrt(n / (n - 1) * spread) / total_tokens
    else:
        stderr = float("nan")
    perplexity = math.exp(loss) if loss < 700 else float("inf")
    return {"loss": {"value": loss, "stderr": stderr, "n": n},
            "perplexity": {"value": perplexity, "stderr": perplexity * stderr, "n": n}}


def win_rate(base_rewards: Sequence[float], tuned_rewards: Sequence[float]) -> dict[str, Any]:
    """Tuned over base under a reward model: a tie counts half; the sign test on wins and
    losses (exact McNemar) says whether the difference is real."""
    wins = sum(1 for b, t in zip(base_rewards, tuned_rewards) if t > b)
    losses = sum(1 for b, t in zip(base_rewards, tuned_rewards) if t < b)
    n = min(len(base_rewards), len(tuned_rewards))
    ties = n - wins - losses
    sign = mcnemar([1.0 if b > t else 0.0 for b, t in zip(base_rewards, tuned_rewards)],
                   [1.0 if t > b else 0.0 for b, t in zip(base_rewards, tuned_rewards)])
    margin = paired_bootstrap(list(base_rewards), list(tuned_rewards))
    return {"n": n, "wins": wins, "losses": losses, "ties": ties,
            "win_rate": (wins + 0.5 * ties) / n if n else float("nan"),
            "mean_reward_base": sum(base_rewards) / n if n else float("nan"),
            "mean_reward_tuned": sum(tuned_rewards) / n if n else float("nan"),
            "test": "sign test (exact McNemar on wins and losses)", "p_value": sign["p_value"],
            "reward_margin_ci95": margin["ci95"]}
