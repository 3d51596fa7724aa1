"""Log-likelihoods of continuations, tokenised exactly as lm-evaluation-harness 0.4.13's HF back-end does.

    score_requests(model, tokenizer, [(context, continuation), ...], batch_size=16)
        -> [(sum of log P(continuation | context), whether every continuation token is the argmax), ...]

Tokenisation (``RequestEncoder``) follows lm-eval so numbers agree with it: trailing spaces of the context
move to the continuation; the continuation's tokens are ``encode(context + continuation)`` past
``len(encode(context))``; an empty context becomes the prefix token (BOS, else EOS); the tokenizer's own
special-token rule applies unless the text already starts with that token; a pair longer than the
model's window keeps its last ``max_length + 1`` tokens.

Speed comes from computing each token once, never from approximations; numbers equal the plain
computation (``score_requests_plain``: one forward per pair, right padded, like lm-eval) to float
rounding. The fast path:

- groups requests by context tokens: a context runs once, then its continuations run over the
  context's KV cache, side by side in one row under a mask that keeps them apart (choices that differ
  only in their last token share a segment);
- finds long token prefixes shared by many contexts (a k-shot block, a task description), runs each
  once and starts its contexts from its cache;
- batches contexts by length, asks the model for logits only where a continuation is scored, and runs
  under ``torch.inference_mode()``.

Models whose cache is not a plain growing one (sliding windows, recurrent layers, prompt-tuning
adapters) take the plain path.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

Progress = Callable[[int, int], None]
Request = tuple[str, str]
Result = tuple[float, bool]
# lm-eval's fallback window when neither the config nor the tokenizer names one.
DEFAULT_MAX_LENGTH = 2048
# transformers' "no limit" value of tokenizer.model_max_length.
TOKENIZER_INFINITY = 1000000000000000019884624838656
WINDOW_CONFIG_ATTRS = ("n_positions", "max_position_embeddings", "n_ctx")
# A shared prefix is run on its own only when it is at least this long and saves at least this share
# of its contexts' tokens; otherwise its contexts join the common length-sorted stream, which batches
# better than many small groups.
MIN_SHARED_TOKENS = 16
MIN_SHARED_SAVING = 0.25
# Attention implementations that apply an additive 4D mask as given, so the continuations of a context
# can share its row; others get one row per continuation.
CUSTOM_MASK_ATTENTION = ("sdpa", "eager")


class RequestEncoder:
    """(context, continuation) strings -> (context tokens, continuation tokens), lm-eval's rules."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
        self.prefix_token_id = bos if bos is not None else eos
        self.prefix_text = tokenizer.decode(self.prefix_token_id)

    def encode(self, text: str, add_special_tokens: bool | None = None) -> list[int]:
        if add_special_tokens is None:
            # A text that already starts with BOS gets no second one.
            if self.prefix_text and text.startswith(self.prefix_text):
                return self.tokenizer.encode(text, add_special_tokens=False)
            return self.tokenizer.encode(text)
        return self.tokenizer.encode(text, add_special_tokens=add_special_tokens)

    def pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        if context == "":
            tokens = self.encode(continuation, add_special_tokens=False)
            if tokens and tokens[0] == self.prefix_token_id:
                return tokens[:1], tokens[1:]
            return [self.prefix_token_id], tokens
        stripped = context.rstrip()
        if len(stripped) < len(context):
            continuation = context[len(stripped):] + continuation
            context = stripped
        whole = self.encode(context + continuation)
        context_tokens = self.encode(context)
        return context_tokens, whole[len(context_tokens):]


def model_max_length(model: Any, tokenizer: Any) -> int:
    """The window lm-eval uses: the config's positions, else the tokenizer's limit, else 2048."""
    config = getattr(model, "config", None)
    config = getattr(config, "text_config", None) or config
    for attr in WINDOW_CONFIG_ATTRS:
        value = getattr(config, attr, None)
        if value is not None:
            return int(value)
    limit = getattr(tokenizer, "model_max_length", None)
    if limit is not None and limit != TOKENIZER_INFINITY:
        return int(limit)
    return DEFAULT_MAX_LENGTH


def encode_requests(tokenizer: Any, requests: Sequence[Request]) -> list[tuple[list[int], list[int]]]:
    encoder = RequestEncoder(tokenizer)
    return [encoder.pair(context, continuation) for context, continuation in requests]


def _device(model: Any):
    return next(model.parameters()).device


def score_tokens_plain(model: Any, pairs: Sequence[tuple[list[int], list[int]]], max_length: int,
                       batch_size: int = 16, progress: Progress | None = None) -> list[Result]:
    """One forward per pair over ``(context + continuation)[-(max_length + 1):][:-1]``, right padded."""
    import torch

    device = _device(model)
    results: list[Result | None] = [None] * len(pairs)
    order = sorted(range(len(pairs)), key=lambda i: -(len(pairs[i][0]) + len(pairs[i][1])))
    done = 0
    with torch.inference_mode():
        for start in range(0, len(order), max(1, batch_size)):
            chunk = [i for i in order[start:start + max(1, batch_size)]]
            rows = []
            for i in chunk:
                context, continuation = pairs[i]
                if not continuation:
                    results[i] = (0.0, True)
                    continue
                rows.append((i, (context + continuation)[-(max_length + 1):][:-1], continuation))
            if rows:
                width = max(len(tokens) for _, tokens, _ in rows)
                batch = torch.zeros((len(rows), width), dtype=torch.long, device=device)
                for r, (_, tokens, _) in enumerate(rows):
                    batch[r, :len(tokens)] = torch.tensor(tokens, dtype=torch.long)
                logits = model(batch).logits
                for r, (i, tokens, continuation) in enumerate(rows):
                    n = len(continuation)
                    picked = torch.log_softmax(logits[r, len(tokens) - n:len(tokens)].float(), dim=-1)
                    target = torch.tensor(continuation, dtype=torch.long, device=device)
                    logprob = picked.gather(1, target[:, None]).sum().item()
                    greedy = bool((picked.argmax(dim=-1) == target).all().item())
                    results[i] = (float(logprob), greedy)
            done += len(chunk)
            if progress is not None:
                progress(done, len(pairs))
    return results  # type: ignore[return-value]


def score_requests_plain(model: Any, tokenizer: Any, requests: Sequence[Request], batch_size: int = 16,
                         progress: Progress | None = None) -> list[Result]:
    pairs = encode_requests(tokenizer, requests)
    return score_tokens_plain(model, pairs, model_max_length(model, tokenizer), batch_size, progress)




def score_requests(model: Any, tokenizer: Any, requests: Sequence[Request], batch_size: int = 16,
                   progress: Progress | None = None) -> list[Result]:
    """(log-likelihood, is_greedy) of each (context, continuation), in the order given."""
    pairs = encode_requests(tokenizer, requests)
    return score_tokens(model, pairs, model_max_length(model, tokenizer), batch_size, progress)


def score_tokens(model: Any, pairs: Sequence[tuple[list[int], list[int]]], max_length: int,
                 batch_size: int = 16, progress: Progress | None = None) -> list[Result]:
    """The fast path over encoded pairs (see the module docstring); the plain one where it cannot go."""
    import torch

    forward = ModelForward(model)
    if not forward.supports_shared_cache:
        return score_tokens_plain(model, pairs, max_length, batch_size, progress)
    results: list[Result | None] = [None] * len(pairs)
    contexts: dict[tuple[int, ...], _Context] = {}
    for index, (context, continuation) in enumerate(pairs):
        if not continuation:
            results[index] = (0.0, True)
            continue
        if len(continuation) > max_length:
            raise ValueError(f"a continuation of {len(continuation)} tokens does not fit the model's "
                             f"window of {max_length}")
        # A pair longer than the window keeps its last max_length + 1 tokens: the context loses its head.
        keep = max_length + 1 - len(continuation)
        key = tuple(context[-keep:]) if len(context) > keep else tuple(context)
        contexts.setdefault(key, _Context(key)).add(index, continuation)
    counter = _Counter(len(pairs), progress, done=sum(r is not None for r in results))
    scorer = _SharedContextScorer(forward, max(1, batch_size), results, counter)
    with torch.inference_mode():
        for shared, members in plan_shared_prefixes(list(contexts)):
            scorer.run([contexts[key] for key in members], shared)
    return results  # type: ignore[return-value]


@dataclass
class _Context:
    tokens: tuple[int, ...]
    # Distinct continuation inputs (continuation[:-1]) -> [(pair index, continuation)]: choices that
    # differ only in their last token share one row, as their logits are the same.
    rows: dict[tuple[int, ...], list[tuple[int, list[int]]]] = field(default_factory=dict)

    def add(self, index: int, continuation: list[int]) -> None:
        self.rows.setdefault(tuple(continuation[:-1]), []).append((index, continuation))


class _Counter:
    def __init__(self, total: int, progress: Progress | None, done: int = 0):
        self.total, self.progress, self.done = total, progress, done

    def add(self, n: int) -> None:
        self.done += n
        if self.progress is not None and n:
            self.progress(self.done, self.total)


def _common_length(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def plan_shared_prefixes(contexts: list[tuple[int, ...]]) -> list[tuple[int, list[tuple[int, ...]]]]:
    """Split contexts into groups that run from one shared prefix: [(prefix length, contexts), ...].

    Sorted contexts put shared prefixes next to each other; a run of neighbours shares the minimum of
    their adjacent common lengths. Each run either stays whole or splits where that minimum occurs,
    whichever saves more tokens (a split's parts share longer prefixes). Every prefix leaves each
    context at least one token of its own. Contexts in no worthwhile group come back last with 0."""
    ordered = sorted(contexts)
    if len(ordered) < 2:
        return [(0, ordered)] if ordered else []
    common = [_common_length(a, b) for a, b in zip(ordered, ordered[1:])]
    best: dict[tuple[int, int], tuple[int, list[tuple[int, int, int]]]] = {}
    stack = [(0, len(ordered), False)]
    while stack:  # post-order over runs, without recursion (runs nest as deep as prefixes are long)
        lo, hi, expanded = stack.pop()
        if hi - lo == 1:
            best[(lo, hi)] = (0, [])
            continue
        low = min(common[lo:hi - 1])
        cuts = [lo] + [j + 1 for j in range(lo, hi - 1) if common[j] == low] + [hi]
        parts = list(zip(cuts, cuts[1:]))
        if not expanded:
            stack.append((lo, hi, True))
            stack.extend((a, b, False) for a, b in parts)
            continue
        split_saving = sum(best[part][0] for part in parts)
        shared = min(low, min(len(ordered[i]) for i in range(lo, hi)) - 1)
        saving = (hi - lo - 1) * shared
        total = sum(len(ordered[i]) for i in range(lo, hi))
        worthwhile = shared >= MIN_SHARED_TOKENS and saving >= MIN_SHARED_SAVING * total
        if worthwhile and saving >= split_saving:
            best[(lo, hi)] = (saving, [(shared, lo, hi)])
        else:
            best[(lo, hi)] = (split_saving, [group for part in parts for group in best[part][1]])
    groups = best[(0, len(ordered))][1]
    grouped = set()
    plan = []
    for shared, lo, hi in groups:
        plan.append((shared, ordered[lo:hi]))
        grouped.update(range(lo, hi))
    rest = [ordered[i] for i in range(len(ordered)) if i not in grouped]
    if rest:
        plan.append((0, rest))
    return plan


class ModelForward:
    """How to call a causal LM with an explicit cache, and whether its cache can be shared."""

    def __init__(self, model: Any):
        self.model = model
        target = model.get_base_model() if hasattr(model, "get_base_model") else model
        params = inspect.signature(target.forward).parameters
        self.cache_keyword = "cache" if "cache" in params else "past_key_values"
        self.keeps_logits = "logits_to_keep" in params
        peft_config = getattr(model, "active_peft_config", None)
        prompt_learning = bool(getattr(peft_config, "is_prompt_learning", False))
        self.supports_shared_cache = (self.cache_keyword in params and "position_ids" in params
                                      and not prompt_learning and self._plain_cache_layers())
        config = getattr(model, "config", None)
        self.takes_custom_masks = getattr(config, "_attn_implementation", None) in CUSTOM_MASK_ATTENTION
        self.device = _device(model)
        self.dtype = next(model.parameters()).dtype

    def _plain_cache_layers(self) -> bool:
        try:
            from transformers import DynamicCache
            from transformers.cache_utils import DynamicLayer
        except ImportError:
            return False
        try:
            cache = DynamicCache(config=self.model.config)
        except Exception:  # a config the cache cannot read: no shared caches for this model
            return False
        return all(type(layer) is DynamicLayer for layer in cache.layers)

    def new_cache(self, layers: list[tuple[Any, Any]] | None = None):
        """A cache holding these (keys, values) per layer, as they are: no copy until the next forward."""
        from transformers import DynamicCache

        cache = DynamicCache(config=self.model.config)
        if layers:
            if len(cache.layers) != len(layers):
                return DynamicCache(ddp_cache_data=layers, config=self.model.config)
            for layer, (keys, values) in zip(cache.layers, layers):
                layer.lazy_initialization(keys, values)
                layer.keys, layer.values = keys, values
        return cache

    def __call__(self, input_ids, attention_mask, position_ids, cache, last_logit_only: bool):
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids,
                  "use_cache": True, self.cache_keyword: cache}
        if last_logit_only and self.keeps_logits:
            kwargs["logits_to_keep"] = 1
        return self.model(**kwargs).logits


def _cache_tensors(cache) -> list[tuple[Any, Any]]:
    return [(layer.keys, layer.values) for layer in cache.layers]


class _SharedContextScorer:
    """Runs groups of contexts from a shared prefix, then their continuations from the contexts' caches.

    A context row is [shared prefix P (cached once)][the context's own tokens but its last | right pad];
    its continuations then run as segments [last context token, continuation[:-1]], each starting at
    the context's last position, side by side in one row (or one row each where attention cannot take
    a custom mask). Pads inside the cache are masked out; positions are always explicit.
    """

    def __init__(self, forward: ModelForward, batch_size: int, results: list, counter: _Counter):
        self.forward, self.batch_size, self.results, self.counter = forward, batch_size, results, counter

    def run(self, contexts: list[_Context], shared: int) -> None:
        import torch

        device = self.forward.device
        prefix_layers = None
        if shared:
            tokens = torch.tensor([contexts[0].tokens[:shared]], dtype=torch.long, device=device)
            cache = self.forward.new_cache()
            self.forward(tokens, torch.ones_like(tokens), torch.arange(shared, device=device)[None], cache,
                         last_logit_only=True)
            prefix_layers = _cache_tensors(cache)
        # Longest first; one-token contexts (an empty context's prefix token) on their own, as a row
        # of nothing but padding would attend to nothing.
        ordered = sorted(contexts, key=lambda c: (len(c.tokens) - shared > 1, len(c.tokens)), reverse=True)
        for start in range(0, len(ordered), self.batch_size):
            chunk = ordered[start:start + self.batch_size]
            if shared == 0 and len(chunk[0].tokens) > 1 and len(chunk[-1].tokens) == 1:
                cut = next(i for i, c in enumerate(chunk) if len(c.tokens) == 1)
                self._run_contexts(chunk[:cut], shared, prefix_layers)
                self._run_contexts(chunk[cut:], shared, prefix_layers)
            else:
                self._run_contexts(chunk, shared, prefix_layers)

    def _run_contexts(self, chunk: list[_Context], shared: int, prefix_layers) -> None:
        import torch

        device = self.forward.device
        suffixes = [c.tokens[shared:-1] for c in chunk]
        width = max(len(s) for s in suffixes)
        mask = torch.zeros((len(chunk), shared + width), dtype=torch.long, device=device)
        mask[:, :shared] = 1
        for r, suffix in enumerate(suffixes):
            mask[r, shared:shared + len(suffix)] = 1
        expanded = [(k.expand(len(chunk), -1, -1, -1), v.expand(len(chunk), -1, -1, -1))
                    for k, v in prefix_layers] if prefix_layers else None
        if width:
            ids = torch.zeros((len(chunk), width), dtype=torch.long, device=device)
            for r, suffix in enumerate(suffixes):
                ids[r, :len(suffix)] = torch.tensor(suffix, dtype=torch.long)
            cache = self.forward.new_cache(expanded)
            positions = (shared + torch.arange(width, device=device))[None].expand(len(chunk), -1)
            # Right padding: no real token sees a pad, so with nothing cached the plain causal mask
            # does (and lets attention skip the masked half); pads are masked later, in the cache.
            self.forward(ids, mask if shared else None, positions, cache, last_logit_only=True)
            layers = _cache_tensors(cache)
        else:
            layers = expanded
        if self.forward.takes_custom_masks:
            self._run_packed_continuations(chunk, mask, layers)
            return
        rows = [(r, inputs, members) for r, c in enumerate(chunk) for inputs, members in c.rows.items()]
        rows.sort(key=lambda row: len(row[1]), reverse=True)
        for start in range(0, len(rows), self.batch_size):
            self._run_continuations(chunk, rows[start:start + self.batch_size], mask, layers)

    def _run_packed_continuations(self, chunk: list[_Context], context_mask, layers) -> None:
        """All continuations of a context in the context's own row, side by side: each segment starts at
        the context's last position and sees the cached context and itself, never the other segments.
        The cache is then read once per context instead of once per choice."""
        import torch

        device = self.forward.device
        segments = [[(inputs, members) for inputs, members in c.rows.items()] for c in chunk]
        width = max(sum(1 + len(inputs) for inputs, _ in row) for row in segments)
        cached = context_mask.shape[1]
        ids = torch.zeros((len(chunk), width), dtype=torch.long, device=device)
        positions = torch.zeros((len(chunk), width), dtype=torch.long, device=device)
        allowed = torch.zeros((len(chunk), width, cached + width), dtype=torch.bool, device=device)
        allowed[:, :, :cached] = context_mask[:, None, :].bool()
        # A pad query sees itself, so no row of the mask is empty.
        allowed[:, torch.arange(width), cached + torch.arange(width)] = True
        spans = []
        for r, (context, row) in enumerate(zip(chunk, segments)):
            start, last = 0, len(context.tokens) - 1
            for inputs, members in row:
                n = 1 + len(inputs)
                ids[r, start:start + n] = torch.tensor((context.tokens[-1],) + inputs, dtype=torch.long)
                positions[r, start:start + n] = last + torch.arange(n)
                allowed[r, start:start + n, cached + start:cached + start + n] = \
                    torch.ones((n, n), dtype=torch.bool, device=device).tril()
                spans.append((r, start, n, members))
                start += n
        mask = torch.zeros(allowed.shape, dtype=self.forward.dtype, device=device)
        mask.masked_fill_(~allowed, torch.finfo(self.forward.dtype).min)
        cache = self.forward.new_cache(layers) if layers else self.forward.new_cache()
        logits = self.forward(ids, mask[:, None], positions, cache, last_logit_only=False)
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        greedy = logprobs.argmax(dim=-1)
        scored = 0
        for r, start, n, members in spans:
            for index, continuation in members:
                target = torch.tensor(continuation, dtype=torch.long, device=device)
                logprob = logprobs[r, start:start + n].gather(1, target[:, None]).sum().item()
                self.results[index] = (float(logprob), bool((greedy[r, start:start + n] == target).all().item()))
                scored += 1
        self.counter.add(scored)

    def _run_continuations(self, chunk: list[_Context], rows, context_mask, layers) -> None:
        import torch

        device = self.forward.device
        width = 1 + max(len(inputs) for _, inputs, _ in rows)
        ids = torch.zeros((len(rows), width), dtype=torch.long, device=device)
        own_mask = torch.zeros((len(rows), width), dtype=torch.long, device=device)
        starts = torch.empty((len(rows), 1), dtype=torch.long, device=device)
        for i, (r, inputs, _) in enumerate(rows):
            tokens = (chunk[r].tokens[-1],) + inputs
            ids[i, :len(tokens)] = torch.tensor(tokens, dtype=torch.long)
            own_mask[i, :len(tokens)] = 1
            starts[i, 0] = len(chunk[r].tokens) - 1
        which = torch.tensor([r for r, _, _ in rows], dtype=torch.long, device=device)
        cache = self.forward.new_cache([(k.index_select(0, which), v.index_select(0, which))
                                        for k, v in layers] if layers else None)
        mask = torch.cat([context_mask.index_select(0, which), own_mask], dim=1)
        positions = starts + torch.arange(width, device=device)[None]
        logits = self.forward(ids, mask, positions, cache, last_logit_only=False)
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        greedy = logprobs.argmax(dim=-1)
        scored = 0
        for i, (_, inputs, members) in enumerate(rows):
            n = len(inputs) + 1
            for index, continuation in members:
                target = torch.tensor(continuation, dtype=torch.long, device=device)
                logprob = logprobs[i, :n].gather(1, target[:, None]).sum().item()
                self.results[index] = (float(logprob), bool((greedy[i, :n] == target).all().item()))
                scored += 1
        self.counter.add(scored)
