"""Built-in rule rewards for online RL (GRPO, RLOO and PPO): small, deterministic functions a
recipe names in ``config.reward_funcs``.

Each takes what trl's GRPO/RLOO trainers pass a reward function, and the PPO back-end passes the
same: ``completions``, the ``completion_ids``, and every dataset column, here ``answer``. It
returns one float per completion, or None where it cannot judge (that reward is then left out).
trl logs each as ``rewards/<name>/mean`` beside the weighted total ``reward``.
"""
from __future__ import annotations

import functools
import re
from typing import Any, Callable

# name -> what it rewards (the text `studio` shows for config.reward_funcs)
DESCRIPTIONS = {
    "length_target": "closeness of the completion's length to config.target_length characters: "
                     "1 - |length - target| / target, floored at 0",
    "contains": "share of config.keywords the completion contains (case-insensitive)",
    "exact_answer": "1 when the completion equals the record's reference answer (the assistant turn after the "
                    "prompt), ignoring case, spacing and punctuation; 0.5 when it contains it; 0 otherwise",
    "format_chatml": "1 when the completion closes its turn with the end-of-turn token and opens no other turn; "
                     "0 when it was cut off or started a new turn",
}
NAMES = tuple(DESCRIPTIONS)
SHORT_HELP = ("length_target (length near target_length), contains (the keywords), exact_answer (the record's "
              "reference answer), format_chatml (closes its turn, opens no other)")


def completion_text(completion: Any) -> str:
    """Conversational completions arrive as message lists, standard ones as strings."""
    if isinstance(completion, str):
        return completion
    return "".join(m.get("content") or "" for m in completion)


def normalise(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def length_target(completions, target: int = 40, **kwargs) -> list[float]:
    out = []
    for completion in completions:
        length = len(completion_text(completion).strip())
        out.append(max(0.0, 1.0 - abs(length - target) / target))
    return out


def contains(completions, keywords: tuple[str, ...] = (), **kwargs) -> list[float]:
    words = [k.lower() for k in keywords]
    return [sum(k in completion_text(c).lower() for k in words) / len(words) for c in completions]


def exact_answer(completions, answer=None, **kwargs) -> list[float | None]:
    answers = answer or [None] * len(completions)
    out: list[float | None] = []
    for completion, reference in zip(completions, answers):
        if not reference:
            out.append(None)  # no reference answer on this record: not judged
            continue
        got, want = normalise(completion_text(completion)), normalise(reference)
        out.append(1.0 if got == want else 0.5 if want and re.search(rf"\b{re.escape(want)}\b", got) else 0.0)
    return out


def format_chatml(completions, completion_ids=None, end_ids: tuple[int, ...] = (),
                  open_ids: tuple[int, ...] = (), **kwargs) -> list[float]:
    if completion_ids is None:
        raise ValueError("format_chatml needs completion_ids (trl passes them to reward functions)")
    out = []
    for ids in completion_ids:
        ended = bool(ids) and ids[-1] in end_ids
        reopened = any(i in open_ids for i in ids)
        out.append(1.0 if ended and not reopened else 0.0)
    return out


def build(name: str, options, tokenizer, end_ids: tuple[int, ...] = ()) -> Callable[..., list]:
    """The reward callable for ``name`` with its options bound (a partial keeps trl's metric name).
    ``end_ids``: the token ids generation stops on (the model's end-of-turn and EOS)."""
    if name == "length_target":
        return functools.partial(length_target, target=options.target_length)
    if name == "contains":
        return functools.partial(contains, keywords=tuple(options.keywords))
    if name == "exact_answer":
        return exact_answer
    if name == "format_chatml":
        ends = set(end_ids) | set(_ids(tokenizer, getattr(tokenizer, "eos_token", None)))
        return functools.partial(format_chatml, end_ids=tuple(sorted(ends)),
                                 open_ids=tuple(_ids(tokenizer, "<|im_start|>")))
    raise ValueError(f"unknown reward function {name!r}; built in: {', '.join(NAMES)}")


def _ids(tokenizer, token: str | None) -> list[int]:
    if not token:
        return []
    vocab = tokenizer.get_vocab()
    return [vocab[token]] if token in vocab else []


def reward_problems(options) -> list[str]:
    """What is wrong with a config's reward sources (``reward_funcs``, ``reward_model``,
    ``reward_weights``, ``keywords``), found before a run starts; GRPO, RLOO and PPO share them."""
    problems = []
    unknown = [n for n in options.reward_funcs if n not in NAMES]
    if unknown:
        problems.append(f"config.reward_funcs: unknown {', '.join(map(repr, unknown))}; built in: {', '.join(NAMES)}")
    sources = len(options.reward_funcs) + (1 if options.reward_model else 0)
    if sources == 0:
        problems.append("config: no reward: name reward_funcs and/or a reward_model")
    if options.reward_weights is not None and len(options.reward_weights) != sources:
        problems.append(f"config.reward_weights: {len(options.reward_weights)} weight(s) for {sources} reward(s)")
    if "contains" in options.reward_funcs and not options.keywords:
        problems.append("config.keywords: the 'contains' reward needs at least one keyword")
    return problems
