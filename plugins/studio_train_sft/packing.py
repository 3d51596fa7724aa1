"""Packed batches without a varlen attention kernel (imported only in the run process).

trl's packing (best-fit decreasing) fills rows of ``max_length`` tokens with whole examples and
goes padding-free: its collator concatenates the batch's rows into ONE sequence and restarts
``position_ids`` at each example. That is right with flash-attention, whose varlen kernel skips
the cross-example blocks. With SDPA or eager attention (every CPU, most consumer GPUs) the model
instead builds a block-diagonal mask over the whole flattened batch and computes attention over
``batch_size * max_length`` positions: eight times the work of eight separate rows of 256.

So without flash-attention the packed rows stay separate rows (``[batch, longest pack]``), still
with restarted ``position_ids`` and no attention mask; transformers finds each row's examples
from the restarts and masks attention within each row (``find_packed_sequence_indices``). Nearly
every position is a real token, and attention stays per row.

transformers looks for those restarts only when there is no KV cache, so a forward pass over packed
rows must pass ``use_cache=False``, or the examples of a row attend to each other; trl's
``compute_loss`` does so for training and evaluation alike.
"""
from __future__ import annotations

from typing import Any

import torch
from trl import SFTTrainer


def has_varlen_attention(model) -> bool:
    config = getattr(model, "config", None)
    return "flash" in str(getattr(config, "_attn_implementation", "") or "")


class PackedRowsCollator:
    """Pads packed rows to the longest one. Padding gets position 0 (each pad token is then its
    own one-token sequence) and label -100; so does the first token of every packed example,
    which must not be predicted from the end of the example before it."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        width = max(len(e["input_ids"]) for e in examples)
        input_ids = torch.full((len(examples), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(examples), width), -100, dtype=torch.long)
        position_ids = torch.zeros((len(examples), width), dtype=torch.long)
        for row, example in enumerate(examples):
            n = len(example["input_ids"])
            input_ids[row, :n] = torch.as_tensor(example["input_ids"])
            labels[row, :n] = torch.as_tensor(example.get("labels", example["input_ids"]))
            lengths = example.get("seq_lengths") or [n]
            position_ids[row, :n] = torch.cat([torch.arange(length) for length in lengths])
        labels[position_ids == 0] = -100
        real = sum(len(e["input_ids"]) for e in examples)
        return {"input_ids": input_ids, "labels": labels, "position_ids": position_ids,
                "num_real_tokens": torch.tensor([real])}


class StudioSFTTrainer(SFTTrainer):
    """trl's SFTTrainer with packed rows kept separate when there is no varlen attention."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.packed_rows = bool(self.args.packing and self.padding_free and not has_varlen_attention(self.model))
        if self.packed_rows:
            self.data_collator = PackedRowsCollator(self._tokenizer.pad_token_id)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        real = inputs.pop("num_real_tokens", None)
        counted = self._total_train_tokens
        result = super().compute_loss(model, inputs, return_outputs=return_outputs,
                                      num_items_in_batch=num_items_in_batch)
        if real is not None and self.model.training:
            # trl counts position_ids.size(1) tokens, right for its one flattened row but not for
            # separate rows: count the real tokens of every row instead (the logged num_tokens).
            self._total_train_tokens = counted + int(self.accelerator.gather_for_metrics(real).sum().item())
            self._metrics["train"]["num_tokens"] = [self._total_train_tokens]
        return result
