"""The public shapes of rows with several scored (or ranked) responses to one prompt.

Each shape knows three things: whether a row looks like it (:meth:`Shape.looks_like`, used by
detection, so a row with a bad score still counts as this shape and is rejected by name at read
time), how to take the prompt, the responses and their scores out of a row (:meth:`Shape.parse`),
and how to put edited responses back (:meth:`Shape.put_response`). Scores are turned into one
"higher is better" number per response (a Nectar rank r becomes -r), so pairing is the same code
for every shape.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from statistics import fmean
from typing import Any

from studio.data.format_kit import RecordError, Turn, type_name

# Magpie names its reward column after the reward model (rewards_armorm); other dumps use others.
REWARDS_PREFIX = "rewards_"


@dataclass
class Scored:
    prompt: list[Turn]
    responses: list[str]
    scores: list[float]  # higher is better
    by: str  # what the scores are, e.g. "rewards_armorm", "overall_score", "rank"
    prompt_key: str
    prompt_raw: str | None = None  # the prompt text when re-rendering it would not give the same bytes


def _number(value: Any, field: str) -> float:
    if value is None:
        raise RecordError(field, "missing")
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise RecordError(field, f"expected a number, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise RecordError(field, f"expected a number, got {value!r}")
    return float(value)


def _user_prompt(row: dict, key: str) -> list[Turn]:
    value = row.get(key)
    if value is None:
        raise RecordError(key, "missing")
    if not isinstance(value, str):
        raise RecordError(key, f"expected a string, got {type_name(value)}")
    if not value.strip():
        raise RecordError(key, "empty prompt")
    return [Turn("user", value)]


def _enough(items: list, field: str) -> None:
    if len(items) < 2:
        raise RecordError(field, f"a preference needs 2 or more responses, got {len(items)}")


class Shape:
    name: str
    title: str

    def looks_like(self, row: dict) -> bool:
        raise NotImplementedError

    def parse(self, row: dict) -> Scored:
        raise NotImplementedError

    def put_response(self, row: dict, index: int, text: str) -> None:
        """Write an edited response back into ``row`` (a copy of the source row)."""
        raise NotImplementedError

    def put_prompt(self, row: dict, prompt: list[Turn], key: str, raw: str | None = None) -> str | None:
        """Write the prompt into ``row[key]`` (``raw``: the source's spelling, used while it still
        says the same); a reason when these turns cannot be held, else None."""
        if len(prompt) != 1 or prompt[0].role != "user":
            return "prompts other than one user turn"
        row[key] = prompt[0].content
        return None


class Magpie(Shape):
    """``{"instruction", "responses": [str x5], "rewards_armorm": [float x5], ...}``; the public
    files also carry ``uuid``, ``gen_input_configs``, ... and sometimes ``chosen``/``rejected``
    message lists already picked from the responses. A reward may be spelt ``{"score": x}``."""

    name = "magpie"
    title = "Magpie (instruction + responses + rewards_*)"

    @staticmethod
    def reward_key(row: dict) -> str | None:
        keys = [k for k in row if k.startswith(REWARDS_PREFIX)]
        return keys[0] if keys else None

    def looks_like(self, row):
        return isinstance(row.get("instruction"), str) and isinstance(row.get("responses"), list) \
            and self.reward_key(row) is not None

    def parse(self, row):
        prompt = _user_prompt(row, "instruction")
        responses = row.get("responses")
        if not isinstance(responses, list):
            raise RecordError("responses", "missing" if responses is None else f"expected a list, got {type_name(responses)}")
        key = self.reward_key(row) or "rewards_armorm"
        rewards = row.get(key)
        if not isinstance(rewards, list):
            raise RecordError(key, "missing" if rewards is None else f"expected a list of scores, got {type_name(rewards)}")
        texts = [_response_text(r, f"responses[{i}]") for i, r in enumerate(responses)]
        _enough(texts, "responses")
        if len(rewards) != len(texts):
            raise RecordError(key, f"{len(rewards)} scores for {len(texts)} responses")
        scores = [_number(r.get("score") if isinstance(r, dict) else r, f"{key}[{i}]") for i, r in enumerate(rewards)]
        return Scored(prompt, texts, scores, key, "instruction")

    def put_response(self, row, index, text):
        row["responses"][index] = text


class UltraFeedback(Shape):
    """``{"instruction" (or "prompt"), "completions": [{"model", "response", "overall_score",
    "fine-grained_score", "annotations": {aspect: {"Rating", "Rationale"}}, "custom_system_prompt",
    "principle", ...}], ...}``. The score of a row is the first of overall_score,
    fine-grained_score (UltraFeedback's own mean of the ratings) or the mean of the numeric
    annotation ratings that *every* completion has, so one row never mixes scales."""

    name = "ultrafeedback"
    title = "UltraFeedback (instruction + completions with ratings)"
    SOURCES = ("overall_score", "fine-grained_score", "mean annotation rating")

    @staticmethod
    def prompt_key(row: dict) -> str:
        return "instruction" if "instruction" in row else "prompt"

    def looks_like(self, row):
        completions = row.get("completions")
        return isinstance(row.get(self.prompt_key(row)), str) and isinstance(completions, list) \
            and any(isinstance(c, dict) and "response" in c for c in completions)

    @staticmethod
    def _mean_rating(completion: dict, field: str) -> float | None:
        annotations = completion.get("annotations")
        if not isinstance(annotations, dict):
            return None
        ratings = []
        for aspect, value in annotations.items():
            rating = value.get("Rating") if isinstance(value, dict) else None
            if rating in (None, "N/A", ""):
                continue
            ratings.append(_number(rating, f"{field}.annotations.{aspect}.Rating"))
        return fmean(ratings) if ratings else None

    def parse(self, row):
        key = self.prompt_key(row)
        prompt = _user_prompt(row, key)
        completions = row.get("completions")
        if not isinstance(completions, list):
            raise RecordError("completions", "missing" if completions is None else f"expected a list, got {type_name(completions)}")
        texts = []
        for i, c in enumerate(completions):
            if not isinstance(c, dict):
                raise RecordError(f"completions[{i}]", f"expected an object with a response, got {type_name(c)}")
            texts.append(_response_text(c.get("response"), f"completions[{i}].response"))
        _enough(texts, "completions")
        for source in self.SOURCES:
            if source == "mean annotation rating":
                scores = [self._mean_rating(c, f"completions[{i}]") for i, c in enumerate(completions)]
            else:
                scores = [c.get(source) for c in completions]
            if all(s is not None for s in scores):
                field = "" if source == "mean annotation rating" else f".{source}"
                return Scored(prompt, texts, [_number(s, f"completions[{i}]{field}") for i, s in enumerate(scores)],
                              source, key)
        missing = next(i for i, c in enumerate(completions)
                       if c.get("overall_score") is None and self._mean_rating(c, "") is None)
        raise RecordError(f"completions[{missing}].overall_score",
                          "missing (no overall_score, fine-grained_score or numeric annotation Rating)")

    def put_response(self, row, index, text):
        row["completions"][index]["response"] = text


# Nectar prompts are hh-rlhf style transcripts ending on an open "\n\nAssistant:" turn.
MARKER = re.compile(r"\n\n(Human|Assistant):")
ROLE = {"Human": "user", "Assistant": "assistant"}
LABEL = {"user": "Human", "assistant": "Assistant"}


def parse_transcript(text: str, field: str) -> list[Turn]:
    parts = MARKER.split(text if text.startswith("\n\n") else "\n\n" + text)
    if parts[0] != "" or len(parts) < 3:
        raise RecordError(field, "expected a transcript of '\\n\\nHuman: ...\\n\\nAssistant:' turns")
    turns = [Turn(ROLE[parts[i]], parts[i + 1][1:] if parts[i + 1].startswith(" ") else parts[i + 1])
             for i in range(1, len(parts), 2)]
    if turns[-1].role == "assistant" and not turns[-1].content.strip():
        turns.pop()  # the open slot the answers fill
    if not turns or turns[-1].role != "user":
        raise RecordError(field, "expected the transcript to end on a Human turn and an open 'Assistant:'")
    return turns


def render_transcript(turns: list[Turn]) -> str:
    return "".join(f"\n\n{LABEL[t.role]}: {t.content}" for t in turns) + "\n\nAssistant:"


class Nectar(Shape):
    """``{"prompt": "\\n\\nHuman: ...\\n\\nAssistant:", "answers": [{"answer", "model", "rank"}],
    "turns", "num_responses", "good_natured", "source"}``; rank 1 is the best answer."""

    name = "nectar"
    title = "Nectar (prompt transcript + ranked answers)"

    def looks_like(self, row):
        answers = row.get("answers")
        return isinstance(row.get("prompt"), str) and isinstance(answers, list) \
            and any(isinstance(a, dict) and "answer" in a for a in answers)

    def parse(self, row):
        text = row.get("prompt")
        if not isinstance(text, str):
            raise RecordError("prompt", "missing" if text is None else f"expected a string, got {type_name(text)}")
        prompt = parse_transcript(text, "prompt")
        answers = row.get("answers")
        if not isinstance(answers, list):
            raise RecordError("answers", "missing" if answers is None else f"expected a list, got {type_name(answers)}")
        texts, scores = [], []
        for i, a in enumerate(answers):
            if not isinstance(a, dict):
                raise RecordError(f"answers[{i}]", f"expected an object with answer and rank, got {type_name(a)}")
            texts.append(_response_text(a.get("answer"), f"answers[{i}].answer"))
            scores.append(-_number(a.get("rank"), f"answers[{i}].rank"))
        _enough(texts, "answers")
        raw = None if render_transcript(prompt) == text else text
        return Scored(prompt, texts, scores, "rank", "prompt", raw)

    def put_response(self, row, index, text):
        row["answers"][index]["answer"] = text

    def put_prompt(self, row, prompt, key, raw=None):
        if not prompt or any(t.role not in LABEL for t in prompt) or prompt[-1].role != "user":
            return "prompts other than Human/Assistant turns ending on a Human turn"
        row[key] = raw if raw is not None and parse_transcript(raw, key) == prompt else render_transcript(prompt)
        return None


def _response_text(value: Any, field: str) -> str:
    if value is None:
        raise RecordError(field, "missing")
    if not isinstance(value, str):
        raise RecordError(field, f"expected a string, got {type_name(value)}")
    return value


SHAPES: tuple[Shape, ...] = (Magpie(), UltraFeedback(), Nectar())


def shape_of(row: dict) -> Shape | None:
    return next((s for s in SHAPES if s.looks_like(row)), None)
