"""``mt_bench``: the model answers MT-Bench's two-turn questions and a judge grades every answer.

    studio eval run --model embedded --task mt_bench=datasets/eval/mt_bench_sample.jsonl

Questions come from MT-Bench's ``question.jsonl`` (``{question_id, category, turns: [t1, t2],
reference?: [...]}``); reference answers may also come from a file in FastChat's
``reference_answer/<model>.jsonl`` shape (``{question_id, choices: [{turns: [...]}]}``), which then
wins over a question's own ``reference``. The model answers turn 1, then turn 2 with its own
turn-1 answer in the conversation. The judge (the run's ``judge`` provider, through the studio's
generation engine and journal) grades each turn 1-10; questions of the reference categories are
graded against their reference. Per item: ``score`` (the mean of the turn grades that parsed),
``score_turn1``, ``score_turn2``; a grade that does not parse is recorded as such, left out of the
means and counted in ``unparsed_grades``. ``pairwise`` has the judge compare base and tuned
answers, each pair in both orders.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from studio.evaluation.base import EvalContext, EvalDataError, Evaluator
from studio.evaluation.judging import (
    REFERENCE_CATEGORIES, JudgeClient, combine_orders, pairwise_prompt, parse_rating, parse_verdict, rating_format,
    single_prompt, verdict_format,
)
from studio.evaluation.stats import mcnemar, mean_with_stderr

TURNS = (1, 2)
JUDGE_LEDGER = "judge_ledger"  # key of the judge's running cost in EvalContext.options


class MTBenchOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = Field(description="MT-Bench question.jsonl: {question_id, category, turns: [t1, t2], reference?}")
    references: str | None = Field(None, description="reference answers in FastChat's reference_answer/*.jsonl "
                                   "shape {question_id, choices: [{turns}]} (default: each question's own reference)")
    categories: list[str] | None = Field(None, description="only questions of these categories (default: all)")
    reference_categories: list[str] = Field(list(REFERENCE_CATEGORIES), description="categories graded against "
                                            "their reference answer, when they have one")
    max_new_tokens: int = Field(1024, ge=1, description="token limit of each of the model's answers")
    judge_format: Literal["text", "json"] = Field("text", description="text: the judge writes [[rating]] / [[A]]; "
                                                  "json: one JSON object, its schema sent as response_format "
                                                  "(structured outputs, for judges that cannot keep the text form)")
    judge_max_tokens: int = Field(2048, ge=16, description="token limit of each judge answer")


def _read_jsonl(path: Path, what: str) -> list[tuple[int, dict[str, Any]]]:
    if not path.is_file():
        raise EvalDataError(path, None, None, f"no such {what} file")
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise EvalDataError(path, number, None, f"not JSON: {exc}") from None
        if not isinstance(row, dict):
            raise EvalDataError(path, number, None, "each line must be a JSON object")
        rows.append((number, row))
    return rows


def _strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def load_references(path: Path) -> dict[str, list[str]]:
    references = {}
    for number, row in _read_jsonl(path, "reference answers"):
        if "question_id" not in row:
            raise EvalDataError(path, number, "question_id", "missing")
        choices = row.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict) \
                or not _strings(choices[0].get("turns")):
            raise EvalDataError(path, number, "choices", "expected [{\"turns\": [answer to turn 1, ...]}]")
        references[str(row["question_id"])] = list(choices[0]["turns"])
    return references


class MTBench(Evaluator):
    name = "mt_bench"
    title = "MT-Bench"
    summary = "two-turn questions answered by the model, graded 1-10 by an OpenAI-compatible judge"
    config_model = MTBenchOptions
    uses = ("chat", "judge")
    primary_metric = "score"

    def data_files(self, config: MTBenchOptions) -> list[Path]:
        return [Path(config.path)] + ([Path(config.references)] if config.references else [])

    def load(self, config: MTBenchOptions) -> list[dict[str, Any]]:
        path = Path(config.path)
        references = load_references(Path(config.references)) if config.references else {}
        items, seen = [], set()
        for number, row in _read_jsonl(path, "MT-Bench question"):
            if "question_id" not in row:
                raise EvalDataError(path, number, "question_id", "missing")
            turns = row.get("turns")
            if not _strings(turns) or len(turns) not in (1, 2):
                raise EvalDataError(path, number, "turns", "expected a list of one or two questions")
            qid = str(row["question_id"])
            if qid in seen:
                raise EvalDataError(path, number, "question_id", f"{qid} appears twice")
            seen.add(qid)
            category = str(row.get("category") or "")
            if config.categories and category not in config.categories:
                continue
            reference = references.get(qid) or row.get("reference")
            if reference is not None and not _strings(reference):
                raise EvalDataError(path, number, "reference", "expected a list of answers, one per turn")
            items.append({"id": qid, "category": category, "turns": list(turns), "reference": reference or None})
        return items

    # --- scoring -------------------------------------------------------------------------------

    def _judge(self, ctx: EvalContext, config: MTBenchOptions) -> JudgeClient:
        # The ledger lives in the run-wide options, so every chunk the runner scores spends from one budget.
        return JudgeClient(ctx.options.get("judge"), ctx.workspace, budget=ctx.options.get("budget"), emit=ctx.emit,
                           cancelled=ctx.cancelled, run_id=f"eval-{ctx.task or self.name}",
                           max_tokens=config.judge_max_tokens, ledger=ctx.options.setdefault(JUDGE_LEDGER, {}))

    def _answers(self, ctx: EvalContext, items: list[dict[str, Any]], config: MTBenchOptions,
                 total: int) -> list[list[str]]:
        """Each item's answers, turn by turn: turn 2 sees the model's own turn-1 answer. Progress
        counts answers and grades alike (``total`` of both)."""
        answers: list[list[str]] = [[] for _ in items]
        done = 0
        for turn in TURNS:
            ctx.check_cancelled()
            indices = [i for i, item in enumerate(items) if len(item["turns"]) >= turn]
            conversations = []
            for i in indices:
                conversation = []
                for t in range(turn - 1):
                    conversation += [{"role": "user", "content": items[i]["turns"][t]},
                                     {"role": "assistant", "content": answers[i][t]}]
                conversations.append(conversation + [{"role": "user", "content": items[i]["turns"][turn - 1]}])
            replies = ctx.model.chat(conversations, max_new_tokens=config.max_new_tokens, batch_size=ctx.batch_size,
                                     temperature=0.0) if conversations else []
            for i, reply in zip(indices, replies):
                answers[i].append(reply)
            done += len(indices)
            ctx.progress(done, total, f"answers, turn {turn}")
        return answers

    def _reference(self, item: dict[str, Any], config: MTBenchOptions) -> list[str] | None:
        return item.get("reference") if item.get("category") in config.reference_categories else None

    def score(self, ctx: EvalContext, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        config: MTBenchOptions = ctx.config
        turns = sum(len(item["turns"]) for item in items)
        total = 2 * turns  # each turn answered, then graded
        answers = self._answers(ctx, items, config, total)
        json_format = config.judge_format == "json"
        asks, where = [], []
        for i, item in enumerate(items):
            reference = self._reference(item, config)
            for turn in range(1, len(item["turns"]) + 1):
                asks.append(single_prompt(item["turns"], answers[i], turn, reference, json_format))
                where.append((i, turn))
        ctx.check_cancelled()
        with self._judge(ctx, config) as judge:
            replies = judge.ask(asks, rating_format() if json_format else None,
                                progress=lambda done, _: ctx.progress(turns + done, total, "grading"))
            judged_by = judge.describe()
        judgments: list[list[dict[str, Any]]] = [[] for _ in items]
        for (i, turn), reply in zip(where, replies):
            rating = parse_rating(reply.text)
            judgments[i].append({"turn": turn, "rating": rating, "judge": reply.text, "error": reply.error,
                                 "reference_guided": self._reference(items[i], config) is not None,
                                 "parsed": rating is not None})
        samples = []
        for item, item_answers, item_judgments in zip(items, answers, judgments):
            ratings = {j["turn"]: j["rating"] for j in item_judgments}
            parsed = [r for r in ratings.values() if r is not None]
            samples.append({
                "id": item["id"], "category": item["category"], "prompt": item["turns"][0], "turns": item["turns"],
                "prediction": item_answers, "target": item.get("reference"), "judgments": item_judgments,
                "judge": judged_by,
                "metrics": {"score": sum(parsed) / len(parsed) if parsed else None,
                            "score_turn1": ratings.get(1), "score_turn2": ratings.get(2),
                            "unparsed_grades": float(len(item_judgments) - len(parsed))},
            })
        return samples

    def aggregate(self, samples: list[dict[str, Any]], config: MTBenchOptions) -> dict[str, dict[str, Any]]:
        out = {}
        for name in ("score", "score_turn1", "score_turn2"):
            out[name] = mean_with_stderr([s["metrics"][name] for s in samples if s["metrics"].get(name) is not None])
        grades = sum(len(s.get("judgments", [])) for s in samples)
        unparsed = sum(int(s["metrics"].get("unparsed_grades") or 0) for s in samples)
        out["unparsed_grades"] = {"value": float(unparsed), "stderr": float("nan"), "n": grades}
        return out

    # --- base against tuned --------------------------------------------------------------------

    def pairwise(self, ctx: EvalContext, base: list[dict[str, Any]], tuned: list[dict[str, Any]], base_model: Any,
                 tuned_model: Any) -> dict[str, Any] | None:
        """The judge compares base and tuned answers turn by turn, each pair in both orders (base
        as A, then tuned as A); only agreeing orders make a win or a loss."""
        config: MTBenchOptions = ctx.config
        json_format = config.judge_format == "json"
        tuned_by_id = {s["id"]: s for s in tuned}
        games = []
        for b in base:
            t = tuned_by_id.get(b["id"])
            if t is None:
                continue
            reference = b.get("target") if b.get("category") in config.reference_categories else None
            for turn in range(1, min(len(b["prediction"]), len(t["prediction"])) + 1):
                games.append({"id": b["id"], "turn": turn, "turns": b["turns"], "base": b["prediction"],
                              "tuned": t["prediction"], "reference": reference})
        asks = []
        for game in games:
            asks.append(pairwise_prompt(game["turns"], game["base"], game["tuned"], game["turn"], game["reference"],
                                        json_format))
            asks.append(pairwise_prompt(game["turns"], game["tuned"], game["base"], game["turn"], game["reference"],
                                        json_format))
        with self._judge(ctx, config) as judge:
            replies = judge.ask(asks, verdict_format() if json_format else None,
                                progress=lambda done, total: ctx.progress(done, total, "comparing"))
        details, outcomes = [], []
        unparsed = inconsistent = 0
        for k, game in enumerate(games):
            base_first, tuned_first = parse_verdict(replies[2 * k].text), parse_verdict(replies[2 * k + 1].text)
            unparsed += (base_first is None) + (tuned_first is None)
            outcome = combine_orders(tuned_first, base_first)  # seen from the tuned model
            if outcome == "tie" and base_first is not None and tuned_first is not None \
                    and not (base_first == tuned_first == "C"):
                inconsistent += 1
            outcomes.append(outcome)
            details.append({"id": game["id"], "turn": game["turn"], "base_as_a": base_first,
                            "tuned_as_a": tuned_first, "outcome": outcome})
        wins, losses = outcomes.count("win"), outcomes.count("loss")
        ties = len(outcomes) - wins - losses
        n = len(outcomes)
        test = mcnemar([1.0 if o == "loss" else 0.0 for o in outcomes], [1.0 if o == "win" else 0.0 for o in outcomes])
        return {"judge_pairwise": {
            "base": getattr(base_model, "label", str(base_model)), "tuned": getattr(tuned_model, "label", str(tuned_model)),
            "games": n, "wins": wins, "losses": losses, "ties": ties, "inconsistent": inconsistent,
            "unparsed": unparsed, "win_rate": wins / n if n else float("nan"),
            "win_rate_ties_half": (wins + 0.5 * ties) / n if n else float("nan"),
            "test": "sign test (exact McNemar on wins and losses)", "p_value": test["p_value"],
            "details": details,
        }}
