"""What the preference back-ends (dpo, kto, orpo, cpo) share: the policy model, which may be a
previous run's LoRA adapter, and the reference-model choice.

Imported only inside ``train``: torch, transformers and peft load lazily."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

ADAPTER_REF_METHODS = ("lora", "dora", "qlora")

RefMode = Literal["auto", "copy", "adapter", "precomputed"]
REF_MODEL_FIELD = Field(
    "auto", description="the reference policy: copy = a frozen copy of the starting model; adapter = the same "
    "model with the LoRA/DoRA adapter switched off (no second model in memory); precomputed = reference "
    "log-probs computed once before training; auto = adapter when training an adapter, else copy")


def resolve_ref_mode(mode: str, adapter_method: str) -> str:
    if mode == "auto":
        return "adapter" if adapter_method in ADAPTER_REF_METHODS else "copy"
    return mode


def ref_mode_problems(mode: str, adapter_method: str) -> list[str]:
    if mode == "adapter" and adapter_method not in ADAPTER_REF_METHODS:
        return [f"config.ref_model: 'adapter' uses the model with its adapter switched off as the reference, so it "
                f"needs adapter.method lora or dora (the recipe has {adapter_method!r}); use ref_model 'copy' or "
                "'precomputed' for full fine-tuning"]
    return []


def load_policy(ctx):
    """``(model, tokenizer)`` to train. A LoRA/DoRA adapter folder (a previous run's final/) is
    loaded on its base model and merged, so the new run starts from base + adapter and may add
    an adapter of its own."""
    location = ctx.model_location()
    if not (Path(location) / "adapter_config.json").is_file():
        return ctx.load_causal_lm()
    if ctx.recipe.adapter.method == "qlora":
        raise ValueError(f"model: {location} is an adapter; merging it needs full-precision base weights, which "
                         "QLoRA does not keep. Merge it first or use adapter.method lora")
    import torch

    from studio.models.loading import load_model

    ctx.seed_everything()
    model, tokenizer = load_model(location, trust_remote_code=ctx.recipe.trust_remote_code,
                                  device="cuda" if torch.cuda.is_available() else "cpu")
    # peft loads an adapter for inference (base frozen): after merging, everything trains again.
    model = model.merge_and_unload().to(torch.float32).requires_grad_(True)
    ctx.emit("info", message=f"model: merged the adapter in {location} into its base model")
    ctx.apply_freeze(model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def frozen_copy(model):
    """A reference model that shares nothing with the policy and never trains."""
    import copy

    ref = copy.deepcopy(model)
    ref.requires_grad_(False)
    ref.eval()
    return ref


def reference(model, mode: str):
    """``(ref_model, precompute)`` for trl's DPO/KTO trainers under ``mode`` (resolved)."""
    if mode == "copy":
        return frozen_copy(model), False
    if mode == "precomputed":
        return None, True
    return None, False  # adapter: trl disables the adapter to get the reference log-probs


def _ids(tokenizer, messages, **kwargs) -> list[int]:
    return list(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True, **kwargs)["input_ids"])


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def completions_preview(tokenizer, prompt: list[dict], completions: list[tuple[str, list[dict]]],
                        notes: list[str]) -> dict:
    """The prompt (context) and each labelled completion (trained on), cut the way trl's
    preference trainers cut them: the completion starts where prompt and prompt+completion diverge."""
    prompt_ids = _ids(tokenizer, prompt, add_generation_prompt=True)
    fulls = [(label, _ids(tokenizer, prompt + turns)) for label, turns in completions]
    start = min(_common_prefix(prompt_ids, full) for _, full in fulls)

    def text(ids):
        return tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    segments = [{"text": text(prompt_ids[:start]), "loss": False}]
    loss_tokens = 0
    for label, full in fulls:
        segments.append({"text": f"\n[{label}] ", "loss": False})
        segments.append({"text": text(full[start:]), "loss": True})
        loss_tokens += len(full) - start
    return {"text": "".join(s["text"] for s in segments), "segments": segments,
            "tokens": start + loss_tokens, "loss_tokens": loss_tokens, "notes": notes}


def preference_preview(ctx, record, note: str) -> dict:
    from studio.training.data import check_records, preference_row

    problems = check_records([record], "preference", "preview")
    if problems:
        raise ValueError(problems[0])
    row = preference_row(record)
    return completions_preview(ctx.load_tokenizer(), row["prompt"],
                               [("chosen", row["chosen"]), ("rejected", row["rejected"])], [note])
