"""refusal_filter: refusals and AI boilerplate in answers, with a policy for preference pairs.

In a pair, a refusing *chosen* answer teaches the model to refuse, so the pair goes; a refusing
*rejected* answer next to a helpful chosen one is exactly the contrast preference training wants,
so the pair stays (and is counted in the report). Unpaired (KTO) rows follow the same logic: a
refusal labelled desirable goes, one labelled undesirable stays.
"""
from __future__ import annotations

import re
from collections import Counter
from functools import lru_cache
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from studio.curation.op_base import CurationOp, OpContext, OpInput, OpResult
from studio_curate_filters.common import build_result

Category = Literal["refusal", "ai_boilerplate"]

REFUSAL_PHRASES = (
    "I'm sorry, but I cannot", "I'm sorry, but I can't", "I am sorry, but I cannot", "I'm sorry, I cannot",
    "I'm sorry, I can't", "Sorry, but I can't", "Sorry, but I cannot", "I apologize, but I cannot",
    "I apologize, but I can't", "I cannot fulfill", "I can't fulfill", "I cannot comply", "I can't comply",
    "I cannot assist with", "I can't assist with", "I cannot help with", "I can't help with that",
    "I cannot help you with", "I can't help you with", "I'm not able to help with", "I am not able to help with",
    "I'm unable to help with", "I am unable to help with", "I'm unable to assist", "I am unable to assist",
    "I cannot provide assistance", "I can't provide assistance", "I cannot create content",
    "I cannot generate", "I can't generate", "I cannot engage in", "I can't engage in", "I must decline",
    "I must respectfully decline", "I'm afraid I can't", "I'm afraid I cannot", "I am afraid I cannot",
    "I won't be able to help", "I will not be able to help", "it is not appropriate for me to",
    "it's not appropriate for me to", "it would not be appropriate for me to", "it would be inappropriate for me to",
    "goes against my programming", "against my programming", "against my guidelines", "violates my guidelines",
    "against my ethical guidelines", "I'm not allowed to", "I am not allowed to", "I'm not programmed to",
    "I am not programmed to", "I cannot condone", "I can't condone", "I'm not comfortable providing",
    "I am not comfortable providing",
)
BOILERPLATE_PHRASES = (
    "As an AI language model", "As a language model", "As an AI assistant", "As an AI,", "As an AI developed by",
    "As a large language model", "As an artificial intelligence", "I am an AI language model",
    "I'm an AI language model", "I'm just an AI", "I am just an AI", "I am only an AI", "I'm only an AI",
    "I'm just a language model", "I am just a language model", "I don't have personal opinions",
    "I do not have personal opinions", "I don't have personal beliefs", "I do not have personal beliefs",
    "I don't have personal feelings", "I do not have personal feelings", "I don't have feelings or emotions",
    "I do not have feelings or emotions", "I don't have the ability to browse", "I do not have the ability to browse",
    "I cannot browse the internet", "I can't browse the internet", "I don't have access to real-time",
    "I do not have access to real-time", "As of my knowledge cutoff", "as of my last knowledge update",
    "as of my last training", "my knowledge cutoff", "my training data only goes up to", "trained by OpenAI",
    "developed by OpenAI",
)


APOSTROPHES = str.maketrans({"’": "'", "`": "'"})
SPACES = re.compile(r"\s+")


def _pieces(phrase: str) -> list[str]:
    """A lower-cased phrase as regex pieces: any apostrophe, any run of whitespace."""
    out = []
    for ch in SPACES.sub(" ", phrase.lower().translate(APOSTROPHES).strip()):
        out.append(r"\s+" if ch == " " else "['’`]" if ch == "'" else re.escape(ch))
    if re.search(r"\w$", phrase):
        out.append(r"(?!\w)")  # whole words: "as an ai," must not fire inside "as an aide"
    return out


def _trie_regex(phrases: list[str]) -> str:
    """One regex for many phrases, shaped as a trie: at each position the engine follows one
    branch instead of trying every phrase (hundreds of times faster than a flat alternation)."""
    trie: dict = {}
    for phrase in phrases:
        node = trie
        for piece in _pieces(phrase):
            node = node.setdefault(piece, {})
        node[""] = {}

    def emit(node: dict) -> str:
        ends = "" in node
        branches = [piece + emit(child) for piece, child in node.items() if piece]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        if ends:
            return "(?:" + body + ")?" if len(branches) == 1 else body + "?"
        return body

    return emit(trie)


def normalise_phrase(text: str) -> str:
    return SPACES.sub(" ", text.lower().translate(APOSTROPHES).strip())


@lru_cache(maxsize=16)
def compile_phrases(categories: tuple[str, ...], extra: tuple[str, ...]) -> tuple[re.Pattern, dict[str, str]]:
    """The phrase regex and a map from each normalised phrase to its category."""
    table = {"refusal": REFUSAL_PHRASES, "ai_boilerplate": BOILERPLATE_PHRASES, "custom": extra}
    category_of: dict[str, str] = {}
    for category in (*categories, "custom"):
        for phrase in table[category]:
            if phrase.strip():
                category_of.setdefault(normalise_phrase(phrase), category)
    if not category_of:
        return re.compile(r"(?!x)x"), category_of
    return re.compile(r"(?<!\w)" + _trie_regex(sorted(category_of))), category_of


def find_phrase(text: str, compiled: tuple[re.Pattern, dict[str, str]], search_chars: int | None):
    """(category, phrase) of the first listed phrase in ``text``."""
    if not text:
        return None
    pattern, category_of = compiled
    match = pattern.search((text if search_chars is None else text[:search_chars]).lower())
    if match is None:
        return None
    phrase = normalise_phrase(match.group(0))
    return category_of.get(phrase, "custom"), phrase


def judge_refusal(row: dict[str, Any], cfg: dict[str, Any]) -> Any:
    """None (keep), or ``("refusal"|"AI boilerplate"|..., detail)``; kept pairs whose rejected side
    refuses come back as ``("keep", detail)`` so the report can count them."""
    pattern = compile_phrases(tuple(cfg["categories"]), tuple(cfg["extra_phrases"]))
    limit = cfg["search_chars"]
    policy = cfg["pair_policy"]
    if row.get("chosen") is not None or row.get("rejected") is not None:
        sides = {"chosen": row.get("chosen") or [], "rejected": row.get("rejected") or []}
        found = {side: _first(turns, pattern, limit, cfg["all_assistant_turns"]) for side, turns in sides.items()}
        if found["chosen"] and policy != "keep_pairs":
            return _removal(found["chosen"], "chosen")
        if found["rejected"]:
            if policy == "drop_if_either_refuses":
                return _removal(found["rejected"], "rejected")
            return "keep", {"side": "rejected", "category": found["rejected"][1], "phrase": found["rejected"][2]}
        return None
    hit = _first(row.get("messages") or [], pattern, limit, cfg["all_assistant_turns"])
    if hit is None:
        return None
    if row.get("label") is False and policy != "drop_if_either_refuses":
        # An undesirable example that refuses: the unpaired analogue of a refusing rejected answer.
        return "keep", {"side": "undesirable", "category": hit[1], "phrase": hit[2]}
    return _removal(hit, "response")


def _first(turns: list[dict], pattern: re.Pattern, limit: int | None, all_turns: bool):
    """(turn index, category, phrase) of the first matching answer turn."""
    answer = [i for i, t in enumerate(turns) if t["role"] == "assistant"]
    if not all_turns:
        answer = answer[-1:]
    for i in answer:
        hit = find_phrase(turns[i]["content"] or "", pattern, limit)
        if hit:
            return i, hit[0], hit[1]
    return None


REASONS = {"refusal": "refusal", "ai_boilerplate": "AI boilerplate", "custom": "listed phrase"}


def _removal(hit, side: str):
    turn, category, phrase = hit
    reason = REASONS[category] + ("" if side == "response" else f" in {side}")
    return reason, {"rule": category, "value": phrase, "threshold": "no listed phrase", "side": side, "turn": turn}


class RefusalConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    categories: list[Category] = Field(["refusal", "ai_boilerplate"],
                                       description="built-in phrase lists to use: refusal ('I'm sorry, but I "
                                                   "cannot', 'I cannot fulfill'...) and ai_boilerplate ('As an AI "
                                                   "language model', 'as of my knowledge cutoff'...)")
    extra_phrases: list[str] = Field([], description="your own phrases (case-insensitive, whole words)")
    pair_policy: Literal["drop_if_chosen_refuses", "drop_if_either_refuses", "keep_pairs"] = Field(
        "drop_if_chosen_refuses",
        description="preference pairs: drop when the chosen answer refuses (a refusing rejected answer is a "
                    "good contrast and stays), when either side refuses, or never")
    all_assistant_turns: bool = Field(True, description="check every assistant turn, not only the last answer")
    search_chars: int | None = Field(None, ge=1, description="only look at the first N characters of each answer "
                                                            "(empty: the whole answer)")


class RefusalFilter(CurationOp):
    name = "refusal_filter"
    title = "Refusal filter"
    summary = "remove refusals and 'As an AI language model' boilerplate; pairs keep refusing rejected answers"
    category = "filter"
    config_model = RefusalConfig

    def run(self, data: OpInput, config: RefusalConfig, ctx: OpContext) -> OpResult:
        compile_phrases(tuple(config.categories), tuple(config.extra_phrases))  # a bad phrase fails here
        verdicts = ctx.map_rows(data, judge_refusal, what="looking for refusals", cfg=config.model_dump())
        kept = [v for v in verdicts if v is not None and v[0] == "keep"]
        phrases = Counter(v[1]["phrase"] if v[0] == "keep" else v[1]["value"] for v in verdicts if v is not None)
        report = {"kept_with_refusing_rejected": sum(1 for v in kept if v[1]["side"] == "rejected"),
                  "kept_undesirable_refusals": sum(1 for v in kept if v[1]["side"] == "undesirable"),
                  "phrases": dict(phrases.most_common(20))}
        return build_result([None if v is None or v[0] == "keep" else v for v in verdicts], report)
