"""MT-Bench-style judging: the judge prompts, the parsing of grades and verdicts, and the client
that asks any OpenAI-compatible judge through the studio's generation engine.

The rules follow MT-Bench (Zheng et al., 2023); the wording is the studio's own:

* single-answer grading: the judge explains, then rates the answer 1-10 as ``[[rating]]``. Turn 2
  is graded with the whole two-turn conversation in view, the judge told to grade only the
  second answer;
* reference-guided grading for categories whose answers can be checked (math, reasoning,
  coding): the judge sees a reference answer and is told to compare against it;
* pairwise comparison: the judge sees two assistants' answers and answers ``[[A]]``, ``[[B]]`` or
  ``[[C]]`` (a tie). Every pair is judged in both orders; a verdict counts only when both orders
  agree, anything else is a tie (position bias cancels out).

``judge_format: json`` asks for the same content as one JSON object and sends its schema as
``response_format`` (structured outputs), so a judge that cannot keep to ``[[8]]`` by itself, such
as the tiny embedded model behind ``studio serve``, still yields a grade that parses. An endpoint
that refuses the parameter (HTTP 400 or 422) is asked again with the plain prompt.

Every request goes through :class:`studio.generation.engine.Engine` with the workspace's journal
(``<workspace>/generation/journal.sqlite``): rate limits, retries, the budget and resume apply,
and a re-run or a resumed evaluation gets every grade it already paid for from the journal.
"""
from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from studio.evaluation.base import EvalStopped
from studio.generation.engine import Engine
from studio.generation.generator_base import GenerationFailed, RunStopped
from studio.generation.journal import Journal
from studio.generation.provider import ProviderConfig, resolve_provider

# Categories MT-Bench grades against a reference answer when one is given.
REFERENCE_CATEGORIES = ("math", "reasoning", "coding")
RATING_SCALE = (1, 10)
JOURNAL_PATH = ("generation", "journal.sqlite")
REFUSED_PARAMETER = (400, 422)  # how endpoints without structured outputs answer response_format
EXPLANATION_CHARS = 400  # the JSON explanation's cap: enough for a reason, short for small judges

_DOUBLE_RATING = re.compile(r"\[\[\s*(\d+(?:\.\d+)?)\s*\]\]")
_SINGLE_RATING = re.compile(r"\[\s*(\d+(?:\.\d+)?)\s*\]")
_VERDICT = re.compile(r"\[\[\s*([ABC])\s*\]\]")

Messages = list[dict[str, str]]


# --- prompts ---------------------------------------------------------------------------------------

_SINGLE_SYSTEM = (
    "You are a fair and careful judge of AI assistant answers. You read a user's question and an "
    "assistant's answer, and you grade how good the answer is: whether it helps, is relevant, correct, "
    "deep enough, creative where that matters, and as detailed as the question needs. Length alone earns "
    "nothing. Explain your judgement briefly first, keeping an open mind; then give the grade."
)
_REFERENCE_SYSTEM = (
    "You are a fair and careful judge of AI assistant answers to questions that have a right answer. "
    "You are given a reference answer that is correct. Compare the assistant's answer with it: find and "
    "correct any mistake the assistant made, judging correctness above all and helpfulness second. "
    "Explain your judgement briefly first; then give the grade."
)
_PAIR_SYSTEM = (
    "You are a fair and careful judge comparing two AI assistants. Both answered the same user question; "
    "decide which answer serves the user better: helpful, relevant, correct, deep, creative where that "
    "matters, and as detailed as needed. The order in which the answers appear must not sway you, nor "
    "their length, nor the assistants' names. Explain your comparison briefly first; then give the verdict."
)
_PAIR_REFERENCE_SYSTEM = (
    "You are a fair and careful judge comparing two AI assistants' answers to a question that has a right "
    "answer. You are given a correct reference answer: check both answers against it, point out their "
    "mistakes, and prefer the more correct one. The order in which the answers appear must not sway you, "
    "nor their length. Explain your comparison briefly first; then give the verdict."
)


def _grade_instruction(json_format: bool, second_turn: bool) -> str:
    which = "the assistant's second answer (the first is context only)" if second_turn else "the answer"
    if json_format:
        return (f"Grade {which} from 1 (worst) to 10 (best). Reply with one JSON object: "
                '{"explanation": "<a short reason>", "rating": <1-10>}')
    return (f"Grade {which} from 1 (worst) to 10 (best). End with the grade in double square brackets, "
            'exactly like this: "Rating: [[6]]".')


def _verdict_instruction(json_format: bool, second_turn: bool) -> str:
    what = "their answers to the user's second question" if second_turn else "the two answers"
    if json_format:
        return (f"Compare {what}. Reply with one JSON object: "
                '{"explanation": "<a short reason>", "verdict": "A" | "B" | "C"} where A means assistant A is '
                'better, B means assistant B is better and C means a tie.')
    return (f"Compare {what}. End with your verdict in double square brackets: [[A]] if assistant A is "
            "better, [[B]] if assistant B is better, [[C]] for a tie.")


def _reference_block(reference: list[str] | None, turn: int) -> str:
    if not reference:
        return ""
    if turn == 1:
        return f"[Reference answer]\n{reference[0]}\n[End of reference answer]\n\n"
    text = "\n\n".join(f"[Reference answer to question {i + 1}]\n{ref}" for i, ref in enumerate(reference[:2]))
    return f"{text}\n[End of reference answers]\n\n"


def single_prompt(questions: list[str], answers: list[str], turn: int, reference: list[str] | None = None,
                  json_format: bool = False) -> Messages:
    """The judge conversation that grades ``answers[turn - 1]`` (turn 1 or 2)."""
    system = _REFERENCE_SYSTEM if reference else _SINGLE_SYSTEM
    if turn == 1:
        body = (f"[Question]\n{questions[0]}\n\n{_reference_block(reference, 1)}"
                f"[The assistant's answer]\n{answers[0]}\n[End of the assistant's answer]\n\n")
    else:
        body = (f"[Conversation]\nUser: {questions[0]}\n\nAssistant: {answers[0]}\n\nUser: {questions[1]}\n\n"
                f"Assistant: {answers[1]}\n[End of conversation]\n\n{_reference_block(reference, 2)}")
    return [{"role": "system", "content": system},
            {"role": "user", "content": body + _grade_instruction(json_format, turn == 2)}]


def pairwise_prompt(questions: list[str], answers_a: list[str], answers_b: list[str], turn: int,
                    reference: list[str] | None = None, json_format: bool = False) -> Messages:
    """The judge conversation comparing assistant A's and B's answer of ``turn`` (1 or 2)."""
    system = _PAIR_REFERENCE_SYSTEM if reference else _PAIR_SYSTEM
    if turn == 1:
        body = (f"[Question]\n{questions[0]}\n\n{_reference_block(reference, 1)}"
                f"[Assistant A's answer]\n{answers_a[0]}\n[End of assistant A's answer]\n\n"
                f"[Assistant B's answer]\n{answers_b[0]}\n[End of assistant B's answer]\n\n")
    else:
        def conversation(name: str, answers: list[str]) -> str:
            return (f"[Conversation with assistant {name}]\nUser: {questions[0]}\n\nAssistant {name}: {answers[0]}"
                    f"\n\nUser: {questions[1]}\n\nAssistant {name}: {answers[1]}\n[End of conversation with "
                    f"assistant {name}]\n\n")

        body = conversation("A", answers_a) + conversation("B", answers_b) + _reference_block(reference, 2)
    return [{"role": "system", "content": system},
            {"role": "user", "content": body + _verdict_instruction(json_format, turn == 2)}]


def rating_format() -> dict[str, Any]:
    """``response_format`` of a single-answer grade: a short explanation, then the rating."""
    low, high = RATING_SCALE
    return {"type": "json_schema", "json_schema": {"name": "grade", "strict": True, "schema": {
        "type": "object", "additionalProperties": False, "required": ["explanation", "rating"],
        "properties": {"explanation": {"type": "string", "maxLength": EXPLANATION_CHARS},
                       "rating": {"type": "integer", "minimum": low, "maximum": high}}}}}


def verdict_format() -> dict[str, Any]:
    """``response_format`` of a pairwise verdict."""
    return {"type": "json_schema", "json_schema": {"name": "verdict", "strict": True, "schema": {
        "type": "object", "additionalProperties": False, "required": ["explanation", "verdict"],
        "properties": {"explanation": {"type": "string", "maxLength": EXPLANATION_CHARS},
                       "verdict": {"type": "string", "enum": ["A", "B", "C"]}}}}}


# --- parsing -------------------------------------------------------------------------------------


def _json_field(text: str, name: str) -> Any:
    body = text.strip()
    if body.startswith("```"):
        body = body.strip("`").partition("\n")[2]
    for candidate in (body, *re.findall(r"\{.*?\}", text, flags=re.S)):
        try:
            data = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(data, dict) and name in data:
            return data[name]
    return None


def parse_rating(text: str | None) -> float | None:
    """The 1-10 grade in a judge's answer (a JSON ``rating``, ``[[8]]``, or ``[8]`` as MT-Bench
    also accepts), or None when there is none in range."""
    if not text:
        return None
    low, high = RATING_SCALE
    value = _json_field(text, "rating")
    candidates: list[Any] = [value] if value is not None else []
    match = _DOUBLE_RATING.search(text) or _SINGLE_RATING.search(text)
    if match:
        candidates.append(match.group(1))
    for candidate in candidates:
        try:
            rating = float(candidate)
        except (TypeError, ValueError):
            continue
        if low <= rating <= high:
            return rating
    return None


def parse_verdict(text: str | None) -> str | None:
    """``"A"``, ``"B"`` or ``"C"`` (tie) from a judge's answer, or None."""
    if not text:
        return None
    value = _json_field(text, "verdict")
    if isinstance(value, str) and value.strip().upper() in ("A", "B", "C"):
        return value.strip().upper()
    found = set(_VERDICT.findall(text))
    return found.pop() if len(found) == 1 else None


def combine_orders(first: str | None, swapped: str | None) -> str:
    """The outcome for the model shown as A in ``first`` (and as B in ``swapped``): ``"win"``,
    ``"loss"`` or ``"tie"``; two orders that disagree, or an unparsed verdict, are a tie."""
    if first == "A" and swapped == "B":
        return "win"
    if first == "B" and swapped == "A":
        return "loss"
    return "tie"


# --- the client ------------------------------------------------------------------------------------


@dataclass
class JudgeAnswer:
    text: str | None  # None when the request failed for good
    error: str | None = None
    cached: bool = False


def journal_path(workspace) -> Path:
    if workspace is None:
        raise ValueError("judged tasks need a workspace: the judge's answers are journaled there, so a re-run "
                         "or a resumed evaluation never pays for the same grade twice")
    return Path(workspace.root).joinpath(*JOURNAL_PATH)


class JudgeClient:
    """Asks the judge many things at once through the generation engine; the provider's
    concurrency, rate limits and retries hold across them, and the journal answers repeats.

    With no base URL (the embedded provider) the studio serves its own model on loopback while the
    client is open."""

    def __init__(self, spec: str | dict | ProviderConfig | None, workspace, *, budget: float | None = None,
                 emit: Callable[[dict], None] = lambda e: None, cancelled: Callable[[], bool] = lambda: False,
                 run_id: str = "eval-judge", max_tokens: int = 2048, ledger: dict[str, float] | None = None):
        self.provider = resolve_provider(spec, Path(workspace.root) if workspace is not None else None)
        self.journal = Journal(journal_path(workspace))
        self.budget = budget
        self.emit = emit
        self.cancelled = cancelled
        self.run_id = run_id
        self.max_tokens = max_tokens
        # What the judge cost so far; a ledger shared by several clients (the chunks and tasks of one
        # evaluation) holds them all to one budget.
        self.ledger = ledger if ledger is not None else {}
        self.ledger.setdefault("spent", 0.0)
        self.sent = 0  # requests answered by the judge in this client's life (journal hits excluded)
        self.cached = 0
        self._server = None

    def describe(self) -> dict[str, Any]:
        return {"provider": self.provider.name, "model": self.provider.model,
                "base_url": self.provider.base_url or "embedded"}

    def _endpoint(self) -> tuple[str, str]:
        if self.provider.base_url:
            return self.provider.base_url, self.provider.model
        if self._server is None:
            from studio.serving.launch import start_background_server

            self._server = start_background_server(self.provider.serve_model, emit=self.emit)
        return self._server.base_url, self._server.model_name

    def ask(self, conversations: list[Messages], response_format: dict | None = None,
            progress: Callable[[int, int], None] | None = None) -> list[JudgeAnswer]:
        """One answer per judge conversation, in order. A request that fails for good is an answer
        with ``error`` set; a budget stop, a refused key or cancellation raises ``EvalStopped``.
        ``progress(done, total)`` hears of each answer as it arrives."""
        if not conversations:
            return []
        base_url, model = self._endpoint()
        remaining = None if self.budget is None else max(0.0, self.budget - self.ledger["spent"])
        # retry_failed: a request that failed for good in an earlier evaluation is sent again rather
        # than replayed as failed from the journal (answers that came back are still reused).
        engine = Engine(self.provider, self.journal, run_id=self.run_id, emit=self._engine_event,
                        cancelled=self.cancelled, budget=remaining, base_url=base_url, model=model,
                        retry_failed=True)

        answered = [0]

        async def one(messages: Messages) -> JudgeAnswer:
            answer = await ask_one(messages)
            answered[0] += 1
            if progress is not None:
                progress(answered[0], len(conversations))
            return answer

        async def ask_one(messages: Messages) -> JudgeAnswer:
            params: dict[str, Any] = {"messages": messages, "temperature": 0.0, "max_tokens": self.max_tokens}
            if response_format is not None:
                params["response_format"] = response_format
            try:
                completion = await engine.request("chat", params)
            except GenerationFailed as exc:
                if response_format is None or exc.status not in REFUSED_PARAMETER:
                    return JudgeAnswer(None, str(exc))
                params.pop("response_format")  # no structured outputs there: the prompt alone must do
                try:
                    completion = await engine.request("chat", params)
                except GenerationFailed as again:
                    return JudgeAnswer(None, str(again))
            return JudgeAnswer(completion.texts[0] if completion.texts else "", cached=completion.cached)

        async def main() -> list[JudgeAnswer]:
            try:
                return await asyncio.gather(*(one(messages) for messages in conversations))
            finally:
                await engine.aclose()

        try:
            answers = asyncio.run(main())
        except RunStopped as exc:
            raise EvalStopped(f"judge stopped: {exc}") from None
        finally:
            self.ledger["spent"] += engine.meter.cost
            self.sent += engine.meter.answered
            self.cached += engine.meter.cached
        return answers

    def _engine_event(self, event: dict[str, Any]) -> None:
        # The engine's own progress events would read as the evaluation's; pass on the rest.
        if event.get("event") != "progress":
            self.emit({**event, "source": "judge"})

    def close(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
        self.journal.close()

    def __enter__(self) -> "JudgeClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
