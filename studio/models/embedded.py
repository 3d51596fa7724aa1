"""The embedded default model: a tiny Llama with its own byte-level BPE tokenizer and ChatML chat
template, built offline from the studio's shipped sample datasets in seconds.

Nothing can be downloaded at run time, yet generation, training and evaluation need *some* model.
This one is small enough to build on first use and, after a short pretraining on the samples, it
writes text-shaped output (not useful answers), which is what pipelines and tests need.

    build_embedded_model(out, size="tiny")   # build into a folder
    ensure_embedded_model("tiny")            # build once into $STUDIO_HOME/models/embedded-tiny
"""
from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from studio.models.progress import quiet_progress

# Bump when the tokenizer, template, architecture or pretraining changes: cached builds are redone.
BUILDER_VERSION = 2

BOS, END_OF_TEXT, PAD = "<|begin_of_text|>", "<|end_of_text|>", "<|pad|>"
IM_START, IM_END = "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS = [BOS, END_OF_TEXT, PAD, IM_START, IM_END]

# ChatML. Each assistant turn's content and its closing <|im_end|> sit inside {% generation %} so
# `return_assistant_tokens_mask` and trl's `assistant_only_loss` train on exactly what the model must
# write, including where to stop. Every tag trims whitespace; newlines are written as '\n' strings.
CHAT_TEMPLATE = r"""{{- bos_token -}}
{%- if tools -%}
  {{- '<|im_start|>system\n# Tools\n' -}}
  {%- for tool in tools -%}{{- tool | tojson -}}{{- '\n' -}}{%- endfor -%}
  {{- '<|im_end|>\n' -}}
{%- endif -%}
{%- for message in messages -%}
  {{- '<|im_start|>' + message['role'] + '\n' -}}
  {%- if message['role'] == 'assistant' -%}
    {%- generation -%}
      {{- message['content'] if message['content'] is string else '' -}}
      {%- for call in message['tool_calls'] or [] -%}
        {{- '<tool_call>' -}}{{- (call['function'] if call['function'] is defined else call) | tojson -}}{{- '</tool_call>' -}}
      {%- endfor -%}
      {{- '<|im_end|>' -}}
    {%- endgeneration -%}
    {{- '\n' -}}
  {%- else -%}
    {{- (message['content'] if message['content'] is string else '') + '<|im_end|>\n' -}}
  {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\n' -}}{%- endif -%}"""

# Architecture and pretraining per size. tiny is what tests and the default endpoint use.
SIZES: dict[str, dict[str, Any]] = {
    "tiny": dict(vocab=2048, hidden=64, layers=2, heads=4, intermediate=128,
                 steps=120, batch=8, block=128, lr=6e-3),
    "small": dict(vocab=4096, hidden=256, layers=4, heads=8, intermediate=688,
                  steps=120, batch=8, block=128, lr=2e-3),
}
# Pretraining runs on one thread: these matrices are too small to gain much from more, on a busy
# machine two threads made steps 6-9x slower, and one thread gives the same weights on any core count.
PRETRAIN_THREADS = 1
MAX_POSITIONS = 1024

# Built-in text so a build works even with no sample datasets (a studio installed without them).
FALLBACK_CONVERSATIONS = [
    ("What is this model?", "I am the studio's embedded model: a tiny language model built on your machine "
     "from bundled text. I can write text-shaped answers, but I know very little."),
    ("What can the studio do?", "The studio reads datasets in many formats, curates them, generates synthetic "
     "data through an OpenAI-compatible endpoint, tunes models and evaluates them."),
    ("Give me three colours.", "Red, green and blue."),
    ("Write a short greeting.", "Hello! I hope your day is going well."),
    ("What is two plus two?", "Two plus two is four."),
    ("Summarise: The cat sat on the mat all afternoon.", "A cat spent the afternoon on a mat."),
    ("Name a fruit that is yellow.", "A banana is yellow."),
    ("How do I make tea?", "Boil water, pour it over a tea bag or leaves, wait three to five minutes, "
     "then remove the tea and add milk or lemon if you like."),
    ("Translate 'thank you' into French.", "Merci."),
    ("Is the sun a star?", "Yes. The sun is a star at the centre of our solar system."),
    ("List two uses of a dataset.", "Training a model and evaluating a model."),
    ("What does a tokenizer do?", "A tokenizer splits text into tokens and maps each token to a number that "
     "a model can read."),
]
FALLBACK_SYSTEM = "You are a helpful assistant."

Emit = Callable[[dict[str, Any]], None]


# --- corpus ---------------------------------------------------------------------------------


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        if value.strip():
            yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _record_conversations(record) -> list[list[dict[str, str]]]:
    # tool_call turns become assistant text; preference records contribute their chosen side only.
    def turns(items):
        return [{"role": "assistant" if t.role == "tool_call" else t.role, "content": t.content} for t in items]

    base = turns(record.messages)
    conversation = base + turns(record.chosen) if record.chosen else base
    return [conversation] if any(t["content"].strip() for t in conversation) else []


def _dataset_formats() -> dict:
    try:
        from studio.plugins import get_host

        return get_host().formats()
    except Exception:  # noqa: BLE001 - without formats every file is read as plain strings
        return {}


def _read_sample(path: Path, formats: dict) -> tuple[list[list[dict[str, str]]], list[str], int]:
    """(conversations, plain texts, rows) of one sample file. A file no format reads contributes
    its string values as plain text, so one odd sample never stops a build."""
    from studio.data.containers import RawRow, read_rows
    from studio.data.convert import read_file

    if formats:
        try:
            records = read_file(path, formats).records
            return [c for r in records for c in _record_conversations(r)], [], len(records)
        except Exception:  # noqa: BLE001 - fall back to the raw strings
            pass
    try:
        rows = [row.data for row in read_rows(path) if isinstance(row, RawRow)]
    except Exception:  # noqa: BLE001 - an unreadable sample is skipped
        return [], [], 0
    return [], [text for row in rows for text in _strings(row)], len(rows)


def collect_corpus() -> tuple[list[list[dict[str, str]]], list[str], dict[str, int]]:
    """Conversations and plain texts from the shipped sample datasets (``studio.resources``, through
    ``sample_files``), plus the built-in fallback."""
    from studio.sample_workspace import sample_files

    conversations = [[{"role": "system", "content": FALLBACK_SYSTEM}, {"role": "user", "content": q},
                      {"role": "assistant", "content": a}] for q, a in FALLBACK_CONVERSATIONS]
    texts: list[str] = []
    files = sample_files()
    formats = _dataset_formats() if files else {}
    records = 0
    for path in files:
        file_conversations, file_texts, rows = _read_sample(path, formats)
        conversations += file_conversations
        texts += file_texts
        records += rows
    stats = {"files": len(files), "records": records, "conversations": len(conversations), "texts": len(texts),
             "characters": sum(len(t["content"]) for c in conversations for t in c) + sum(map(len, texts))}
    return conversations, texts, stats


# --- tokenizer ------------------------------------------------------------------------------


def build_tokenizer(conversations: list[list[dict[str, str]]], texts: list[str], vocab_size: int):
    """A byte-level BPE tokenizer (any text encodes, no unknown token) with ChatML specials."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    # Train on contents only: rendered templates would teach merges of the special tokens' spelling.
    training_text = [t["content"] for c in conversations for t in c] + texts
    # Role names once per turn, as the template writes them, so each header is a token or two.
    training_text += [t["role"] for c in conversations for t in c] + ["tool"] * 2
    backend.train_from_iterator(training_text, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=BOS, eos_token=IM_END, pad_token=PAD,
        additional_special_tokens=[IM_START, END_OF_TEXT], add_bos_token=True,
        clean_up_tokenization_spaces=False, model_max_length=MAX_POSITIONS,
    )
    # eos is the end-of-turn token, so every consumer that stops on `tokenizer.eos_token_id`
    # (trl, plain generate calls) stops where a chat turn ends.
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


# --- model ----------------------------------------------------------------------------------


def _model_config(tokenizer, spec: dict[str, Any]):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=spec["hidden"], intermediate_size=spec["intermediate"],
        num_hidden_layers=spec["layers"], num_attention_heads=spec["heads"],
        num_key_value_heads=spec["heads"], max_position_embeddings=MAX_POSITIONS,
        tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def _generation_config(tokenizer):
    from transformers import GenerationConfig

    stops = [tokenizer.convert_tokens_to_ids(IM_END), tokenizer.convert_tokens_to_ids(END_OF_TEXT)]
    return GenerationConfig(bos_token_id=tokenizer.bos_token_id, eos_token_id=stops,
                            pad_token_id=tokenizer.pad_token_id)


def _token_stream(tokenizer, conversations, texts, generator) -> list[int]:
    """Every document tokenized, in a seeded random order, concatenated."""
    import torch

    docs = [tokenizer.apply_chat_template(c, tokenize=False) for c in conversations]
    docs += [BOS + t + END_OF_TEXT for t in texts]
    order = torch.randperm(len(docs), generator=generator).tolist()
    encoded = tokenizer([docs[i] for i in order], add_special_tokens=False)["input_ids"]
    return [token for ids in encoded for token in ids]


def _pretrain(model, stream: list[int], spec: dict[str, Any], steps: int, generator, emit: Emit) -> float | None:
    """Next-token training on random windows of the token stream; returns the mean of the last losses."""
    import torch

    data = torch.tensor(stream, dtype=torch.long)
    block = min(spec["block"], len(data) - 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=spec["lr"], weight_decay=0.01, betas=(0.9, 0.95))
    warmup = max(1, steps // 10)

    def lr_scale(step: int) -> float:  # linear warm-up, cosine decay to a tenth
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_scale)
    model.train()
    recent: list[float] = []
    for step in range(steps):
        starts = torch.randint(0, len(data) - block, (spec["batch"],), generator=generator)
        batch = torch.stack([data[s:s + block] for s in starts.tolist()])
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        recent = (recent + [loss.item()])[-10:]
        if (step + 1) % 50 == 0 or step + 1 == steps:
            emit({"event": "pretrain", "step": step + 1, "steps": steps, "loss": round(recent[-1], 4)})
    model.eval()
    return sum(recent) / len(recent) if recent else None


def build_embedded_model(out: Path, size: str = "tiny", seed: int = 0, pretrain_steps: int | None = None,
                         emit: Emit | None = None) -> Path:
    """Build the embedded model into ``out`` (created; existing files are overwritten) and return it.

    Deterministic for a given ``size``, ``seed`` and ``pretrain_steps`` on one machine.
    ``pretrain_steps=0`` leaves the weights at their random initialisation."""
    if size not in SIZES:
        raise ValueError(f"unknown embedded model size {size!r}; choose one of: {', '.join(SIZES)}")
    emit = emit or (lambda event: None)
    spec = SIZES[size]
    steps = spec["steps"] if pretrain_steps is None else int(pretrain_steps)
    if steps < 0:
        raise ValueError("pretrain_steps must be 0 or more")
    started = time.perf_counter()

    import torch
    from transformers import LlamaForCausalLM

    conversations, texts, stats = collect_corpus()
    emit({"event": "corpus", **stats})
    tokenizer = build_tokenizer(conversations, texts, spec["vocab"])
    emit({"event": "tokenizer", "vocab_size": len(tokenizer)})

    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = LlamaForCausalLM(_model_config(tokenizer, spec))
    model.generation_config = _generation_config(tokenizer)
    stream = _token_stream(tokenizer, conversations, texts, generator)
    stats["tokens"] = len(stream)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(PRETRAIN_THREADS)
        final_loss = _pretrain(model, stream, spec, steps, generator, emit) if steps else None
    finally:
        torch.set_num_threads(threads)

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with quiet_progress():
        model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    info = {
        "created_by": "studio model init",
        "builder_version": BUILDER_VERSION,
        "size": size,
        "seed": seed,
        "parameters": sum(p.numel() for p in model.parameters()),
        "vocab_size": len(tokenizer),
        "architecture": {k: spec[k] for k in ("hidden", "layers", "heads", "intermediate")},
        "corpus": stats,
        "pretrain_steps": steps,
        "final_loss": None if final_loss is None else round(final_loss, 4),
        "seconds": round(time.perf_counter() - started, 2),
    }
    (out / "studio_model.json").write_text(json.dumps(info, indent=2) + "\n")
    emit({"event": "done", **info})
    return out


def embedded_info(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads((Path(path) / "studio_model.json").read_text())
    except (OSError, ValueError):
        return None


def embedded_path(size: str = "tiny") -> Path:
    from studio.sample_workspace import studio_home

    return studio_home() / "models" / f"embedded-{size}"


def ensure_embedded_model(size: str = "tiny", emit: Emit | None = None) -> Path:
    """The cached embedded model of ``size``, built on first use (and again when the builder changes).

    A build is reported to ``emit`` as ``{"event": "model_build", "stage": ...}`` events: ``start``
    (size, path, why, steps) before anything else, then the builder's ``corpus``, ``tokenizer``,
    ``pretrain`` (step, steps, loss) and ``done`` (parameters, seconds, ...). A cached model emits nothing.

    The build happens in a temporary sibling folder renamed into place, so a crash or a second
    process building at the same time never leaves a half-written model behind."""
    if size not in SIZES:
        raise ValueError(f"unknown embedded model size {size!r}; choose one of: {', '.join(SIZES)}")
    target = embedded_path(size)
    info = embedded_info(target)
    if info and info.get("builder_version") == BUILDER_VERSION:
        return target
    emit = emit or (lambda event: None)
    # A build takes a while: say so before it starts, then pass on the builder's progress as
    # stages of the same event (corpus, tokenizer, pretrain, done).
    emit({"event": "model_build", "stage": "start", "size": size, "path": str(target),
          "why": "first use" if info is None else "the model builder changed", "steps": SIZES[size]["steps"]})

    def stage(event: dict[str, Any]) -> None:
        emit({"event": "model_build", "stage": event["event"], "size": size,
              **{k: v for k, v in event.items() if k != "event"}})

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        build_embedded_model(tmp, size=size, emit=stage)
        current = embedded_info(target)
        if current and current.get("builder_version") == BUILDER_VERSION:
            # Another process built it meanwhile (and may be loading it now): keep theirs.
            return target
        if target.exists():  # an outdated build: move it aside first, rename is not allowed onto a full folder
            stale = Path(tempfile.mkdtemp(prefix=f".{target.name}-stale-", dir=target.parent))
            os.replace(target, stale / "old")
            shutil.rmtree(stale, ignore_errors=True)
        try:
            os.replace(tmp, target)
        except OSError:
            # Another process finished first; use its build when it is current.
            info = embedded_info(target)
            if not (info and info.get("builder_version") == BUILDER_VERSION):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
