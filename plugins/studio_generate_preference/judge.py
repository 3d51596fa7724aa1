"""The LLM judge both preference generators use: a written rubric in the spirit of UltraFeedback
(Cui et al., 2023: helpfulness, honesty, instruction following, truthfulness), one request per
answer, and a parser that survives what models actually write.

The judge is asked for one JSON object, and by default the request also carries that object's
JSON schema as ``response_format`` (OpenAI's structured outputs; vLLM, llama.cpp, SGLang and the
studio's own server honour it too), so a model that can't write JSON on its own, like the tiny
embedded one, still answers with a verdict that parses. An endpoint that refuses the parameter
(HTTP 400 or 422) is asked again without it, and the prompt alone must do.

Parsing tries, in order: the whole answer as JSON (code fences removed), the first JSON object
anywhere in it, then ``aspect: 4`` / ``Score: 7/10`` lines. Scores outside ``1..scale`` are
ignored; a ``x/y`` score on another scale is rescaled. The overall score is the mean of the aspect
scores found (or the judge's own overall score when it gave no aspect). An answer with no usable
score raises :class:`JudgeParseError`.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from studio.generation.generator_base import Completion, GenerationContext, GenerationFailed
from studio_generate_common import RowFailed, ask

Aspect = Literal["helpfulness", "honesty", "instruction_following", "truthfulness"]

RUBRIC = {
    "helpfulness": "Does the answer serve the user's actual need: relevant, correct in substance, complete "
                   "enough, clear, and free of padding or needless repetition?",
    "honesty": "Does the answer show confidence that matches how sure it can be: it admits uncertainty or "
               "limits where they exist, and never pretends to knowledge or abilities it lacks?",
    "instruction_following": "Does the answer do what was asked, within every stated constraint (length, "
                             "format, style, scope), without drifting from the task?",
    "truthfulness": "Is what the answer states true: no invented facts, no contradiction of the question or "
                    "of itself, no misleading claims?",
}
ASPECTS: tuple[str, ...] = tuple(RUBRIC)

# How models spell each aspect when they don't follow the JSON keys.
_ALIASES = {
    "helpfulness": r"help(?:ful(?:ness)?)?",
    "honesty": r"honest(?:y)?|calibration",
    "instruction_following": r"instruction[\s_-]*following|following[\s_-]*instructions?|instruction[\s_-]*adherence",
    "truthfulness": r"truthful(?:ness)?|factual(?:ity|ness)?|accuracy",
}
_OVERALL_KEYS = ("overall", "overall_score", "score", "rating", "final_score", "total")
_RATIONALE_KEYS = ("rationale", "reason", "reasoning", "explanation", "justification", "comment", "comments",
                   "feedback", "critique")
_NUMBER = r"(\d+(?:\.\d+)?)(?:\s*(?:/|out\s+of)\s*(\d+(?:\.\d+)?))?"
REFUSED_PARAMETER = (400, 422)  # how endpoints without structured outputs answer response_format


class JudgeConfig(BaseModel):
    """Judge settings shared by preference_pairs and judge_scores."""

    judge_model: str | None = Field(None, description="model that judges (empty: the run's model)")
    # An int, not Literal[5, 10]: command-line values arrive as text, and argparse compares them
    # with the choices before pydantic could convert them.
    scale: int = Field(5, description="top of the score scale: 5 or 10 (scores run from 1 to this)")
    aspects: list[Aspect] = Field(list(ASPECTS), min_length=1,
                                  description="rubric aspects scored: helpfulness, honesty, instruction_following, "
                                              "truthfulness; the overall score is their mean")
    judge_max_tokens: int = Field(512, ge=16, le=32_768, description="token limit of each judge answer")
    structured_output: bool = Field(True, description="send the verdict's JSON schema as response_format "
                                                      "(structured outputs); asked again without it when the "
                                                      "endpoint refuses it")


    @field_validator("scale")
    @classmethod
    def _known_scale(cls, value: int) -> int:
        if value not in (5, 10):
            raise ValueError("scale must be 5 or 10")
        return value


class JudgeParseError(ValueError):
    pass


@dataclass
class Verdict:
    score: float
    aspects: dict[str, float] = field(default_factory=dict)
    rationale: str = ""
    method: str = "json"  # json | text

    def as_meta(self, model: str, scale: int) -> dict[str, Any]:
        return {"score": self.score, "rationale": self.rationale, "aspects": self.aspects, "model": model,
                "scale": scale, "parsed_from": self.method}


# --- prompt --------------------------------------------------------------------------------------


def render_conversation(messages: list[dict[str, Any]]) -> str:
    names = {"system": "System", "user": "User", "assistant": "Assistant", "tool": "Tool result",
             "tool_call": "Assistant (tool call)"}
    return "\n\n".join(f"[{names.get(m['role'], m['role'])}]\n{m.get('content') or ''}" for m in messages)


def judge_prompt(messages: list[dict[str, Any]], answer: str, aspects: list[str], scale: int) -> str:
    rubric = "\n".join(f"- {name}: {RUBRIC[name]}" for name in aspects)
    example = ", ".join(f'"{name}": <1-{scale}>' for name in aspects)
    return (
        "You are a strict, impartial grader of AI assistant answers. Read the conversation and the answer "
        f"that continues it, then score the answer on each aspect from 1 (very poor) to {scale} (excellent). "
        "Judge the content, not the length: a long answer is not better for being long.\n\n"
        f"Aspects:\n{rubric}\n\n"
        f"=== Conversation ===\n{render_conversation(messages)}\n\n"
        f"=== Answer to grade ===\n{answer}\n\n"
        "Reply with one JSON object and nothing else, in this form:\n"
        f'{{{example}, "rationale": "<one or two sentences on the main strengths and flaws>"}}'
    )


def verdict_schema(aspects: list[str], scale: int) -> dict[str, Any]:
    """``response_format`` for a verdict: the prompt's JSON object, as a strict JSON schema."""
    properties: dict[str, Any] = {name: {"type": "integer", "minimum": 1, "maximum": scale} for name in aspects}
    properties["rationale"] = {"type": "string"}
    return {"type": "json_schema", "json_schema": {
        "name": "verdict", "strict": True,
        "schema": {"type": "object", "properties": properties, "required": list(properties),
                   "additionalProperties": False}}}


# --- parsing -------------------------------------------------------------------------------------


def _key(name: str) -> str:
    return re.sub(r"[\s\-]+", "_", name.strip().lower())


def _aspect_of(key: str) -> str | None:
    for aspect, alias in _ALIASES.items():
        if re.fullmatch(alias, key.replace("_", " "), re.I) or re.fullmatch(alias, key, re.I):
            return aspect
    return None


def _scaled(value: float, out_of: float | None, scale: int) -> float | None:
    if out_of:
        if out_of <= 0:
            return None
        value = value * scale / out_of
    if 1 <= value <= scale:
        return round(value, 3)
    return None


def _number(value: Any, scale: int) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return _scaled(float(value), None, scale)
    if isinstance(value, str):
        match = re.search(_NUMBER, value)
        if match:
            return _scaled(float(match.group(1)), float(match.group(2)) if match.group(2) else None, scale)
        return None
    if isinstance(value, dict):
        for name in ("score", "rating", "value"):
            if name in value:
                return _number(value[name], scale)
    return None


def _json_object(text: str) -> dict[str, Any] | None:
    stripped = re.sub(r"^\s*```(?:json)?\s*|\s*```\s*$", "", text.strip(), flags=re.I)
    try:
        data = json.loads(stripped)
        if isinstance(data, dict):
            return data
    except (json.JSONDecodeError, ValueError):
        pass
    decoder = json.JSONDecoder()
    for match in re.finditer(r"\{", text):
        try:
            data, _ = decoder.raw_decode(text, match.start())
        except (json.JSONDecodeError, ValueError):
            continue
        if isinstance(data, dict):
            return data
    return None


def _from_json(data: dict[str, Any], aspects: list[str], scale: int) -> Verdict | None:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and _key(key) in ("scores", "ratings", "aspects", "evaluation", "grades"):
            flat.update({_key(k): v for k, v in value.items()})
        else:
            flat[_key(key)] = value
    found: dict[str, float] = {}
    notes: list[str] = []
    for key, value in flat.items():
        aspect = _aspect_of(key)
        if aspect in aspects and aspect not in found:
            score = _number(value, scale)
            if score is not None:
                found[aspect] = score
            if isinstance(value, dict):
                note = next((value[k] for k in _RATIONALE_KEYS if isinstance(value.get(k), str)), None)
                if note:
                    notes.append(f"{aspect}: {note}")
    rationale = next((flat[k] for k in _RATIONALE_KEYS if isinstance(flat.get(k), str)), None) or " ".join(notes)
    if found:
        return Verdict(_mean(found), {a: found[a] for a in aspects if a in found}, rationale.strip(), "json")
    for key in _OVERALL_KEYS:
        score = _number(flat.get(key), scale)
        if score is not None:
            return Verdict(score, {}, rationale.strip(), "json")
    return None


def _from_text(text: str, aspects: list[str], scale: int) -> Verdict | None:
    found: dict[str, float] = {}
    for aspect in aspects:
        pattern = rf"(?:{_ALIASES[aspect]})\W{{0,12}}?(?:score|rating)?[^\d\n]{{0,12}}?{_NUMBER}"
        for match in re.finditer(pattern, text, re.I):
            score = _scaled(float(match.group(1)), float(match.group(2)) if match.group(2) else None, scale)
            if score is not None:
                found[aspect] = score
                break
    rationale_match = re.search(rf"(?:{'|'.join(_RATIONALE_KEYS)})\W{{0,4}}[:\-]\s*(.+)", text, re.I | re.S)
    rationale = rationale_match.group(1).strip().strip('"}').strip()[:1000] if rationale_match else ""
    if found:
        return Verdict(_mean(found), {a: found[a] for a in aspects if a in found}, rationale, "text")
    pattern = rf"\b(?:overall(?:\s+score)?|score|rating)\b[^\d\n]{{0,12}}?{_NUMBER}"
    for match in re.finditer(pattern, text, re.I):
        score = _scaled(float(match.group(1)), float(match.group(2)) if match.group(2) else None, scale)
        if score is not None:
            return Verdict(score, {}, rationale, "text")
    return None


def _mean(scores: dict[str, float]) -> float:
    return round(sum(scores.values()) / len(scores), 3)


def parse_verdict(text: str, aspects: list[str] | tuple[str, ...] = ASPECTS, scale: int = 5) -> Verdict:
    """The judge's scores in an answer; raises JudgeParseError when there are none."""
    aspects = list(aspects)
    data = _json_object(text)
    if data is not None:
        verdict = _from_json(data, aspects, scale)
        if verdict is not None:
            return verdict
    verdict = _from_text(text, aspects, scale)
    if verdict is not None:
        return verdict
    snippet = " ".join(text.split())[:100]
    raise JudgeParseError(f"the judge's answer holds no score on 1..{scale}: {snippet!r}")


# --- asking --------------------------------------------------------------------------------------


async def judge(ctx: GenerationContext, config: JudgeConfig, messages: list[dict[str, Any]], answer: str,
                sample: int = 0) -> tuple[Completion, Verdict | JudgeParseError]:
    """One judge request; the verdict, or the parse error when the answer holds no score. A failed
    request raises RowFailed (stage ``judge``)."""
    params: dict[str, Any] = dict(temperature=0.0, max_tokens=config.judge_max_tokens)
    if config.judge_model:
        params["model"] = config.judge_model
    prompt = [{"role": "user", "content": judge_prompt(messages, answer, list(config.aspects), config.scale)}]
    completion = None
    if config.structured_output:
        try:
            completion = await ctx.chat(prompt, sample=sample, response_format=verdict_schema(
                list(config.aspects), config.scale), **params)
        except GenerationFailed as exc:
            if exc.status not in REFUSED_PARAMETER:
                raise RowFailed("judge", exc) from exc
    if completion is None:
        completion = await ask("judge", ctx.chat(prompt, sample=sample, **params))
    try:
        return completion, parse_verdict(completion.text, config.aspects, config.scale)
    except JudgeParseError as exc:
        return completion, exc
