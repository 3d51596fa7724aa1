"""MT-Bench judging: prompts and parsing, grading against a scripted OpenAI-compatible judge (over
real HTTP, through the generation engine and its journal), pairwise verdicts in both orders, the
budget, a SIGKILLed evaluation that resumes without asking the judge again, and the embedded
model behind `studio serve` as a judge with structured outputs."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import DATASETS, ROOT
from studio.evaluation.base import EvalContext, EvalDataError, EvalStopped
from studio.evaluation.models import EvalModel
from studio.evaluation.judging import (
    combine_orders, pairwise_prompt, parse_rating, parse_verdict, single_prompt,
)
from studio.serving.scripted import ScriptedServer
from studio.store import Workspace
from studio_eval_judged.mt_bench import MTBench, MTBenchOptions

SAMPLE = DATASETS / "eval" / "mt_bench_sample.jsonl"
REFERENCES = DATASETS / "eval" / "mt_bench_reference.jsonl"


class ScriptedModel(EvalModel):
    """A model under test whose answers are known: ``style`` plus the question it answers, and
    the conversations it was given kept for inspection."""

    kind = "local"

    def __init__(self, label: str, style: str):
        super().__init__(label, label)
        self.fingerprint = f"scripted-{style}"
        self.style = style
        self.seen: list[list[dict[str, str]]] = []

    def chat(self, conversations, *, max_new_tokens, batch_size=16, temperature=0.0, seed=0, progress=None):
        self.seen += conversations
        return [f"{self.style} answer {len(c) // 2 + 1} to: {c[-1]['content'][:30]}" for c in conversations]


def grading_judge(endpoint: str, body: dict, choice: int) -> str:
    """Grades 8 for a 'good' answer, 3 for a 'poor' one, nothing usable for a 'garbled' one;
    compares A and B the same way (C when both are alike)."""
    prompt = body["messages"][-1]["content"]
    if "[Assistant A's answer]" in prompt or "[Conversation with assistant A]" in prompt:
        marker = "[Assistant B's answer]" if "[Assistant B's answer]" in prompt else "[Conversation with assistant B]"
        head, _, tail = prompt.partition(marker)
        a_good, b_good = "good answer" in head, "good answer" in tail
        verdict = "A" if a_good and not b_good else "B" if b_good and not a_good else "C"
        return f"Both answered. Verdict: [[{verdict}]]"
    graded = prompt.rsplit("Assistant:", 1)[-1] if "[Conversation]" in prompt else prompt
    if "garbled" in graded:
        return "I cannot decide on a number."
    return "Fine work. Rating: [[8]]" if "good answer" in graded else "Weak. Rating: [[3]]"


def position_biased_judge(endpoint: str, body: dict, choice: int) -> str:
    return "The first one reads better. [[A]]"


def make_ctx(tmp_path: Path, model: EvalModel, url: str, config: MTBenchOptions, **options) -> EvalContext:
    ws_root = tmp_path / "ws"
    ws = Workspace(ws_root) if (ws_root / "studio.yaml").is_file() else Workspace.init(ws_root, name="eval")
    return EvalContext(model=model, config=config, workspace=ws, task="mt_bench",
                       options={"judge": {"name": "judge", "base_url": url, "model": "judge-model"}, **options})


def judge_bodies(server: ScriptedServer) -> list[dict]:
    return [e for e in server.log if e["status"] == 200]


# --- prompts and parsing ---------------------------------------------------------------------------


def test_ratings_and_verdicts_parse_as_mt_bench_reads_them():
    assert parse_rating("Good. Rating: [[7]]") == 7.0
    assert parse_rating("Rating: [[7.5]] overall") == 7.5
    assert parse_rating("Rating: [6]") == 6.0  # MT-Bench's fallback form
    assert parse_rating('{"explanation": "ok", "rating": 9}') == 9.0
    assert parse_rating("Rating: [[11]]") is None and parse_rating("no number") is None and parse_rating(None) is None
    assert parse_verdict("so [[B]]") == "B" and parse_verdict('{"explanation": "x", "verdict": "C"}') == "C"
    assert parse_verdict("[[A]] or maybe [[B]]") is None and parse_verdict("A is better") is None
    # Seen from the model shown as A first: both orders must agree, anything else is a tie.
    assert combine_orders("A", "B") == "win" and combine_orders("B", "A") == "loss"
    assert combine_orders("A", "A") == "tie" and combine_orders("C", "C") == "tie" and combine_orders(None, "B") == "tie"


def test_turn_two_is_graded_with_the_whole_conversation_and_references_when_given():
    questions, answers = ["Q one?", "Q two?"], ["first reply", "second reply"]
    turn1 = single_prompt(questions, answers, 1)[-1]["content"]
    assert "Q one?" in turn1 and "first reply" in turn1 and "Q two?" not in turn1 and "[[" in turn1
    turn2 = single_prompt(questions, answers, 2, reference=["ref one", "ref two"])
    text = turn2[-1]["content"]
    assert all(part in text for part in ("Q one?", "first reply", "Q two?", "second reply", "ref one", "ref two"))
    assert "reference" in turn2[0]["content"].lower()
    pair = pairwise_prompt(questions, ["base 1", "base 2"], ["tuned 1", "tuned 2"], 1, json_format=True)[-1]["content"]
    assert pair.index("base 1") < pair.index("tuned 1") and "tuned 2" not in pair and '"verdict"' in pair


# --- data ------------------------------------------------------------------------------------------


def test_questions_and_references_load_with_the_reference_file_winning(tmp_path):
    task = MTBench()
    items = task.load(MTBenchOptions(path=str(SAMPLE)))
    assert len(items) == 8 and len({i["id"] for i in items}) == 8
    math = next(i for i in items if i["category"] == "math")
    assert math["reference"][0].startswith("12 pencils are 4 groups of 3, so")  # the question's own reference
    with_file = {i["id"]: i for i in task.load(MTBenchOptions(path=str(SAMPLE), references=str(REFERENCES)))}
    assert with_file[math["id"]]["reference"][0].startswith("12 pencils are 4 groups of 3:")
    assert with_file["1005"]["reference"] and with_file["1001"]["reference"] is None
    only = task.load(MTBenchOptions(path=str(SAMPLE), categories=["math", "coding"]))
    assert [i["category"] for i in only] == ["math", "coding"]

    bad = tmp_path / "q.jsonl"
    bad.write_text('{"question_id": 1, "turns": ["a", "b"]}\n{"question_id": 2, "turns": "one"}\n')
    with pytest.raises(EvalDataError, match=r"line 2, field 'turns'"):
        task.load(MTBenchOptions(path=str(bad)))
    refs = tmp_path / "r.jsonl"
    refs.write_text('{"question_id": 1, "choices": []}\n')
    with pytest.raises(EvalDataError, match=r"r.jsonl, line 1, field 'choices'"):
        task.load(MTBenchOptions(path=str(SAMPLE), references=str(refs)))


# --- grading through the engine ----------------------------------------------------------------


def test_grades_come_from_the_judge_and_a_rerun_asks_it_nothing(tmp_path):
    task = MTBench()
    config = MTBenchOptions(path=str(SAMPLE), references=str(REFERENCES), max_new_tokens=16)
    items = task.load(config)
    model = ScriptedModel("tuned", "good")
    events = []
    with ScriptedServer(responder=grading_judge) as server:
        ctx = make_ctx(tmp_path, model, server.base_url, config)
        ctx.emit = events.append
        samples = task.score(ctx, items)
        first = len(judge_bodies(server))
        again = task.score(make_ctx(tmp_path, model, server.base_url, config), items)
        assert len(judge_bodies(server)) == first == 16  # 8 questions x 2 turns, then all from the journal
    assert [s["id"] for s in samples] == [i["id"] for i in items]
    # Progress counts answers, then grades, on one scale: 16 turns answered and 16 graded.
    done = [e["done"] for e in events if e["event"] == "progress"]
    assert done == sorted(done) and done[-1] == 32 and {e["total"] for e in events if e["event"] == "progress"} == {32}
    assert all(s["metrics"] == {"score": 8.0, "score_turn1": 8.0, "score_turn2": 8.0, "unparsed_grades": 0.0}
               for s in samples)
    assert [s["metrics"] for s in again] == [s["metrics"] for s in samples]
    assert samples[0]["judge"] == {"provider": "judge", "model": "judge-model", "base_url": server.base_url}
    # Turn 2 was asked (in each of the two runs) with the model's own turn-1 answer in the conversation.
    second_turns = [c for c in model.seen if len(c) == 3]
    assert len(second_turns) == 16 and all(c[1]["role"] == "assistant" and "good answer 1" in c[1]["content"]
                                          for c in second_turns)
    guided = {s["category"]: [j["reference_guided"] for j in s["judgments"]] for s in samples}
    assert guided["math"] == guided["coding"] == guided["reasoning"] == [True, True]
    assert guided["writing"] == guided["stem"] == [False, False]
    aggregate = task.aggregate(samples, config)
    assert aggregate["score"]["value"] == 8.0 and aggregate["score"]["n"] == 8
    assert aggregate["unparsed_grades"]["value"] == 0


def test_an_unparseable_grade_is_recorded_counted_and_left_out_of_the_mean(tmp_path):
    class HalfGarbled(ScriptedModel):
        def chat(self, conversations, **kwargs):
            answers = super().chat(conversations, **kwargs)
            return [a.replace("good", "garbled") if len(c) == 3 else a for a, c in zip(answers, conversations)]

    task = MTBench()
    config = MTBenchOptions(path=str(SAMPLE), categories=["writing", "stem"], max_new_tokens=16)
    with ScriptedServer(responder=grading_judge) as server:
        samples = task.score(make_ctx(tmp_path, HalfGarbled("m", "good"), server.base_url, config), task.load(config))
    for sample in samples:
        assert sample["metrics"] == {"score": 8.0, "score_turn1": 8.0, "score_turn2": None, "unparsed_grades": 1.0}
        assert sample["judgments"][1]["parsed"] is False and "cannot decide" in sample["judgments"][1]["judge"]
    aggregate = task.aggregate(samples, config)
    assert aggregate["score_turn2"]["n"] == 0 and aggregate["score"]["value"] == 8.0
    assert aggregate["unparsed_grades"] == {"value": 2.0, "stderr": aggregate["unparsed_grades"]["stderr"], "n": 4}


def test_a_grade_the_judge_failed_is_recorded_and_asked_again_by_a_rerun(tmp_path):
    class OneFault(ScriptedModel):
        def chat(self, conversations, **kwargs):
            answers = super().chat(conversations, **kwargs)
            # The scripted judge answers HTTP 500 to the first request holding this marker.
            return [a + " [[500]]" if len(c) == 1 and i == 0 else a for i, (a, c) in enumerate(zip(answers, conversations))]

    task = MTBench()
    config = MTBenchOptions(path=str(SAMPLE), categories=["writing"], max_new_tokens=16)
    items = task.load(config)
    with ScriptedServer(responder=grading_judge) as server:
        ctx = make_ctx(tmp_path, OneFault("m", "good"), server.base_url, config)
        ctx.options["judge"] = {**ctx.options["judge"], "max_retries": 0}
        (failed,) = task.score(ctx, items)
        (again,) = task.score(ctx, items)
    # Both grades failed: turn 2's judge sees the whole conversation, the faulty answer included.
    assert all(j["rating"] is None and not j["parsed"] and "500" in j["error"] for j in failed["judgments"])
    assert failed["metrics"] == {"score": None, "score_turn1": None, "score_turn2": None, "unparsed_grades": 2.0}
    # The journal kept the failures, but a later evaluation asks again instead of replaying them.
    assert again["metrics"] == {"score": 8.0, "score_turn1": 8.0, "score_turn2": 8.0, "unparsed_grades": 0.0}


def test_pairwise_verdicts_are_judged_in_both_orders(tmp_path):
    task = MTBench()
    config = MTBenchOptions(path=str(SAMPLE), categories=["writing", "math", "stem"], max_new_tokens=16)
    items = task.load(config)
    base, tuned = ScriptedModel("base", "poor"), ScriptedModel("tuned", "good")
    with ScriptedServer(responder=grading_judge) as server:
        base_samples = task.score(make_ctx(tmp_path, base, server.base_url, config), items)
        tuned_samples = task.score(make_ctx(tmp_path, tuned, server.base_url, config), items)
        before = len(judge_bodies(server))
        result = task.pairwise(make_ctx(tmp_path, tuned, server.base_url, config), base_samples, tuned_samples,
                               base, tuned)["judge_pairwise"]
        assert len(judge_bodies(server)) - before == 12  # 3 questions x 2 turns x 2 orders
    assert (result["wins"], result["losses"], result["ties"], result["games"]) == (6, 0, 0, 6)
    assert result["win_rate"] == 1.0 and result["p_value"] < 0.05
    assert all(d["base_as_a"] == "B" and d["tuned_as_a"] == "A" for d in result["details"])

    # A judge that always prefers whatever it sees first disagrees with itself: all ties.
    # (Another judge model: the journal keys answers by model name and request.)
    with ScriptedServer(responder=position_biased_judge) as server:
        ctx = make_ctx(tmp_path, tuned, server.base_url, config)
        ctx.options["judge"]["model"] = "biased-judge"
        biased = task.pairwise(ctx, base_samples, tuned_samples, base, tuned)["judge_pairwise"]
    assert (biased["wins"], biased["losses"], biased["ties"], biased["inconsistent"]) == (0, 0, 6, 6)
    assert biased["win_rate"] == 0.0 and biased["win_rate_ties_half"] == 0.5 and biased["p_value"] == 1.0


def test_the_budget_stops_judging(tmp_path):
    task = MTBench()
    config = MTBenchOptions(path=str(SAMPLE), max_new_tokens=16, judge_max_tokens=1000)
    with ScriptedServer(responder=grading_judge) as server:
        ctx = make_ctx(tmp_path, ScriptedModel("m", "good"), server.base_url, config, budget=0.01)
        ctx.options["judge"] = {**ctx.options["judge"], "prices": {"judge-model": {"input": 1000.0, "output": 1000.0}},
                                "concurrency": 1}
        with pytest.raises(EvalStopped, match="budget"):
            task.score(ctx, task.load(config))
        # Each request could cost up to ~1.0 (1000 tokens at 1000 per 1M): none fits in 0.01.
        assert judge_bodies(server) == []


def test_one_budget_holds_across_the_chunks_of_an_evaluation(tmp_path):
    # The runner scores a task in chunks, each with its own score() call, all sharing the run-wide
    # options: the judge's spending must add up across them, not start afresh in every chunk.
    task = MTBench()
    config = MTBenchOptions(path=str(SAMPLE), max_new_tokens=16, judge_max_tokens=16)
    items = task.load(config)
    prices = {"judge-model": {"input": 1000.0, "output": 1000.0}}  # about 0.1 per request here
    with ScriptedServer(responder=grading_judge) as server:
        ctx = make_ctx(tmp_path, ScriptedModel("m", "good"), server.base_url, config, budget=0.6)
        ctx.options["judge"] = {**ctx.options["judge"], "prices": prices, "concurrency": 1}
        task.score(ctx, items[:1])
        first = ctx.options["judge_ledger"]["spent"]
        assert 0 < first < 0.6 and len(judge_bodies(server)) == 2
        with pytest.raises(EvalStopped, match="budget"):
            task.score(ctx, items[1:])
        assert first < ctx.options["judge_ledger"]["spent"] <= 0.6
        assert 2 < len(judge_bodies(server)) < 16


# --- a killed evaluation resumes from the journal ------------------------------------------------------

CHILD = textwrap.dedent("""
    import json, sys
    from studio.evaluation.base import EvalContext
    from studio.evaluation.models import EvalModel
    from studio.store import Workspace
    from studio_eval_judged.mt_bench import MTBench, MTBenchOptions

    class Model(EvalModel):
        def chat(self, conversations, **kwargs):
            return [f"good answer {len(c) // 2 + 1} to: {c[-1]['content'][:30]}" for c in conversations]

    url, ws_root, sample, out = sys.argv[1:5]
    task = MTBench()
    config = MTBenchOptions(path=sample, max_new_tokens=16)
    ctx = EvalContext(model=Model("m"), config=config, workspace=Workspace(ws_root), task="mt_bench",
                      options={"judge": {"name": "judge", "base_url": url, "model": "judge-model", "concurrency": 2}})
    samples = task.score(ctx, task.load(config))
    open(out, "w").write(json.dumps([s["metrics"] for s in samples]))
""")


def _journal_answers(path: Path) -> int:
    if not path.is_file():
        return 0
    with sqlite3.connect(str(path)) as db:
        try:
            return db.execute("SELECT COUNT(*) FROM answers WHERE status = 'ok'").fetchone()[0]
        except sqlite3.OperationalError:
            return 0


@pytest.mark.slow
def test_a_sigkilled_judged_evaluation_resumes_without_asking_the_judge_again(tmp_path):
    ws = Workspace.init(tmp_path / "ws", name="eval")
    journal = Path(ws.root) / "generation" / "journal.sqlite"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "plugins"),
                                                        os.environ.get("PYTHONPATH", "")])}
    out = tmp_path / "metrics.json"
    command = [sys.executable, "-c", CHILD, "", str(ws.root), str(SAMPLE), str(out)]
    with ScriptedServer(responder=grading_judge, hold_after=5) as server:
        command[3] = server.base_url
        child = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while not (_journal_answers(journal) == 5 and server.held >= 1):
            assert child.poll() is None, child.stderr.read().decode()
            assert time.monotonic() < deadline, "the judged run never got half-way"
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
        child.wait()
        killed_at = time.time()
        answered_before = {e["hash"] for e in server.log if e["status"] == 200 and e["end"] < killed_at}
        assert len(answered_before) == 5
        server.release()  # the requests held for the dead child now go nowhere

        resumed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        assert resumed.returncode == 0, resumed.stderr
        asked_after = [e["hash"] for e in server.log if e["time"] > killed_at]
    assert not answered_before & set(asked_after)  # nothing the journal holds was asked again
    assert len(set(asked_after)) == 16 - 5 and len(asked_after) == len(set(asked_after))
    assert all(m["score"] == 8.0 for m in json.loads(out.read_text()))
    assert _journal_answers(journal) == 16


# --- the embedded model as a judge, behind `studio serve` ------------------------------------------


@pytest.mark.slow
def test_the_embedded_model_served_by_studio_serve_judges_with_structured_output(tmp_path):
    from studio.serving.launch import start_background_server

    task = MTBench()
    config = MTBenchOptions(path=str(SAMPLE), categories=["math"], max_new_tokens=16,
                            judge_format="json", judge_max_tokens=64)
    items = task.load(config)
    with start_background_server("embedded") as served:
        ctx = make_ctx(tmp_path, ScriptedModel("m", "good"), served.base_url, config)
        ctx.options["judge"]["model"] = served.model_name
        samples = task.score(ctx, items)
    judgments = [j for s in samples for j in s["judgments"]]
    assert len(judgments) == 2 and all(j["reference_guided"] for j in judgments)
    assert all(j["parsed"] and 1 <= j["rating"] <= 10 for j in judgments), [j["judge"] for j in judgments]
    assert all(json.loads(j["judge"])["rating"] == j["rating"] for j in judgments)
    assert all(s["metrics"]["score"] is not None for s in samples)


# --- through the evaluation runner -------------------------------------------------------------------


@pytest.mark.slow
def test_the_runner_evaluates_the_embedded_model_and_compares_with_the_judge(tmp_path):
    from studio.evaluation.runner import run_evaluation
    from studio.recipes.evaluate import EvalRecipe

    ws = Workspace.init(tmp_path / "ws", name="eval")
    with ScriptedServer(responder=grading_judge) as server:
        recipe = EvalRecipe(models=["embedded", "embedded"], labels=["base", "tuned"], limit=2,
                            judge={"name": "judge", "base_url": server.base_url, "model": "judge-model"},
                            tasks=[{"task": "mt_bench", "path": str(SAMPLE), "max_new_tokens": 8}])
        result = run_evaluation(ws, recipe)
        asked = len(judge_bodies(server))
        again = run_evaluation(ws, recipe)
        assert len(judge_bodies(server)) == asked  # cached samples, journaled verdicts: nothing asked again
    assert result["status"] == "completed" and again["scored"] == {"base": {"mt_bench": 0}, "tuned": {"mt_bench": 0}}
    scores = result["tasks"]["mt_bench"]
    # The embedded model's answers hold no "good answer": the scripted judge grades every turn 3.
    assert scores["base"]["score"]["value"] == scores["tuned"]["score"]["value"] == 3.0
    assert scores["base"]["score"]["n"] == 2 and scores["base"]["unparsed_grades"]["value"] == 0
    # 2 questions x 2 turns graded once (both labels are the same weights: the cache serves the second),
    # then 2 x 2 games compared: with equal answers both orders are one and the same request.
    assert asked == 4 + 4
    verdicts = result["pairwise"]["mt_bench"]["tuned"]["judge_pairwise"]
    assert (verdicts["games"], verdicts["ties"], verdicts["wins"], verdicts["losses"]) == (4, 4, 0, 0)
