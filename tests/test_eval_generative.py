"""The generative evaluators: GSM8K (prompts, shots, lm-eval's answer filters and exact match) and
HumanEval (off until code execution is allowed, pass@k, canonical solutions), on the shipped samples,
scripted models and, when present, the real benchmark files."""
from __future__ import annotations

import gzip
import json
import random
import shutil

import pytest

from conftest import DATASETS, realdata_file

from studio.evaluation.base import EvalContext, EvalDataError
from studio.evaluation.models import EvalModel
from studio.evaluation.stats import pass_at_k
from studio_eval_generative.gsm8k import (
    Gsm8k, Gsm8kOptions, exact_match, flexible_answer, normalise, strict_answer,
)
from studio_eval_generative.humaneval import UNTIL, CodeExecutionRefused, HumanEval, HumanEvalOptions, program

EVAL = DATASETS / "eval"
GSM8K_SAMPLE = EVAL / "gsm8k_sample.jsonl"
HUMANEVAL_SAMPLE = EVAL / "humaneval_sample.jsonl"


class ScriptedModel(EvalModel):
    """Answers each prompt with ``answer(prompt, sample_index)`` and records what it was asked."""

    def __init__(self, answer):
        super().__init__("scripted")
        self.answer = answer
        self.calls: list[dict] = []

    def generate(self, prompts, *, until, max_new_tokens, batch_size=16, n=1, temperature=0.0, seed=0,
                 progress=None):
        self.calls.append({"prompts": list(prompts), "until": list(until), "max_new_tokens": max_new_tokens,
                           "n": n, "temperature": temperature})
        if progress is not None:
            progress(len(prompts), len(prompts))
        return [[self.answer(p, j) for j in range(n)] for p in prompts]


def run(evaluator, config, model, **options):
    items = evaluator.load(config)
    samples = evaluator.score(EvalContext(model=model, config=config, options=options, task=evaluator.name), items)
    return items, samples, evaluator.aggregate(samples, config)


# --- GSM8K ------------------------------------------------------------------------------------


def test_the_plugin_registers_both_tasks():
    from studio.plugins import get_host

    rows = {row["name"]: row for row in get_host().describe("evaluator")}
    assert rows["gsm8k"]["default_fewshot"] == 5 and rows["gsm8k"]["uses"] == ["generate"]
    assert rows["humaneval"]["primary_metric"] == "pass@1"
    assert {f["name"] for f in rows["humaneval"]["fields"]} >= {"path", "n", "temperature", "ks", "solutions"}


@pytest.mark.parametrize("completion, strict, flexible", [
    (" 14 + 9 = 23 and 23 - 6 = 17.\n#### 17", "17", "17"),
    (" She has 17 apples left.", "[invalid]", "17"),
    (" It costs $1,250.", "[invalid]", "$1,250."),
    ("#### -3\n#### 8", "-3", "8"),
    ("nothing here", "[invalid]", "[invalid]"),
    (" 3 boxes, 5 crayons", "[invalid]", "5"),
])
def test_answer_filters(completion, strict, flexible):
    assert strict_answer(completion) == strict
    assert flexible_answer(completion) == flexible


def test_exact_match_normalises_both_sides_like_lm_eval():
    reference = "Worked steps with 1,000 and $5.\n#### 1,250"
    assert normalise(reference) == "1250"
    assert exact_match("$1,250.", reference) == 1.0
    assert exact_match("1250", reference) == 1.0
    assert exact_match("1250.0", reference) == 0.0  # no numeric equivalence, as in lm-eval
    assert exact_match("[invalid]", reference) == 0.0


def test_gsm8k_prompts_take_five_shots_from_the_train_file_beside_the_test_file():
    evaluator = Gsm8k()
    config = Gsm8kOptions(path=str(GSM8K_SAMPLE))
    assert [p.name for p in evaluator.data_files(config)] == ["gsm8k_sample.jsonl", "gsm8k_train_sample.jsonl"]
    items = evaluator.load(config)
    train = [json.loads(line) for line in (EVAL / "gsm8k_train_sample.jsonl").read_text().splitlines()]
    assert len(items) == 20 and len({i["id"] for i in items}) == 20
    first = items[0]
    assert first["prompt"].endswith(f"\n\nQuestion: {first['question']}\nAnswer:")
    # Five shots, each a train question with its full worked answer after "Answer: ", then the question.
    blocks = first["prompt"].split("\n\n")
    assert len(blocks) == 6
    assert all(block in {f"Question: {t['question']}\nAnswer: {t['answer']}" for t in train} for block in blocks[:5])
    # Shots differ from question to question (one generator advancing over the file, seed 1234).
    assert len({i["prompt"].rsplit("\n\nQuestion: ", 1)[0] for i in items}) > 10
    # Loading twice gives the same items; the samples folder names the same file.
    assert evaluator.load(config) == items
    assert evaluator.load(Gsm8kOptions(path=str(EVAL))) == items


def test_gsm8k_zero_shot_needs_no_train_file(tmp_path):
    test = tmp_path / "gsm8k_test.jsonl"
    shutil.copy(GSM8K_SAMPLE, test)
    evaluator = Gsm8k()
    with pytest.raises(EvalDataError, match="fewshot_from"):
        evaluator.load(Gsm8kOptions(path=str(test)))
    items = evaluator.load(Gsm8kOptions(path=str(test), num_fewshot=0))
    assert items[0]["prompt"] == f"Question: {items[0]['question']}\nAnswer:"
    # gsm8k_train.jsonl beside gsm8k_test.jsonl is found by name, also through the folder.
    shutil.copy(EVAL / "gsm8k_train_sample.jsonl", tmp_path / "gsm8k_train.jsonl")
    assert evaluator.load(Gsm8kOptions(path=str(tmp_path), num_fewshot=2))[0]["prompt"].count("\nAnswer: ") == 2


def test_gsm8k_data_errors_name_file_line_and_field(tmp_path):
    bad = tmp_path / "gsm8k_test.jsonl"
    bad.write_text('{"question": "q", "answer": "#### 1"}\n{"question": "q2"}\n')
    with pytest.raises(EvalDataError, match=r"line 2, field 'answer'"):
        Gsm8k().load(Gsm8kOptions(path=str(bad), num_fewshot=0))
    bad.write_text("{not json\n")
    with pytest.raises(EvalDataError, match="line 1"):
        Gsm8k().load(Gsm8kOptions(path=str(bad), num_fewshot=0))


def test_gsm8k_scores_strict_and_flexible_exact_match():
    answers = {}
    for line in GSM8K_SAMPLE.read_text().splitlines():
        row = json.loads(line)
        answers[row["question"]] = row["answer"].rsplit("#### ", 1)[1]

    def answer(prompt, _):
        question = prompt.rsplit("Question: ", 1)[1][:-len("\nAnswer:")]
        gold = answers[question]
        index = list(answers).index(question)
        # Even questions: the right "#### N"; odd ones: the right number without "####" except every 4th.
        if index % 2 == 0:
            return f" Some steps.\n#### {gold}\n\n"
        return f" The result is {gold}." if index % 4 == 1 else " The result is 0."

    model = ScriptedModel(answer)
    _, samples, metrics = run(Gsm8k(), Gsm8kOptions(path=str(GSM8K_SAMPLE)), model)
    assert model.calls[0]["until"] == ["Question:", "</s>", "<|im_end|>"]
    assert model.calls[0]["max_new_tokens"] == 256 and model.calls[0]["temperature"] == 0.0
    assert metrics["exact_match_strict"]["value"] == pytest.approx(0.5) and metrics["exact_match_strict"]["n"] == 20
    assert metrics["exact_match_flexible"]["value"] == pytest.approx(0.75)
    first = samples[0]
    assert first["target"] == answers[json.loads(GSM8K_SAMPLE.read_text().splitlines()[0])["question"]]
    assert first["extracted"]["strict"] == first["target"] and first["metrics"]["exact_match_strict"] == 1.0


@pytest.mark.slow
def test_gsm8k_on_the_embedded_model():
    from studio.evaluation.models import open_model

    evaluator = Gsm8k()
    config = Gsm8kOptions(path=str(GSM8K_SAMPLE), max_gen_toks=16)
    items = evaluator.load(config)[:3]
    samples = evaluator.score(EvalContext(model=open_model("embedded"), config=config, batch_size=2), items)
    assert [s["id"] for s in samples] == [i["id"] for i in items]
    assert all(set(s["metrics"]) == {"exact_match_strict", "exact_match_flexible"} for s in samples)
    assert all("Question:" not in s["prediction"] for s in samples)


def test_gsm8k_loads_and_runs_on_the_real_test_set():
    real = realdata_file("benchmarks/gsm8k_test.jsonl")
    evaluator = Gsm8k()
    config = Gsm8kOptions(path=str(real), fewshot_from=str(EVAL / "gsm8k_train_sample.jsonl"))
    items = evaluator.load(config)
    assert len(items) == 1319 and len({i["id"] for i in items}) == 1319
    model = ScriptedModel(lambda prompt, _: " #### 18")
    samples = evaluator.score(EvalContext(model=model, config=config), items[:5])
    assert samples[0]["metrics"]["exact_match_strict"] == 1.0  # Janet's ducks: 18 dollars a day
    assert sum(s["metrics"]["exact_match_strict"] for s in samples) < 5


# --- HumanEval --------------------------------------------------------------------------------


def canonical(items):
    by_prompt = {i["prompt"]: i["canonical_solution"] for i in items}
    return lambda prompt, _: by_prompt[prompt]


def test_humaneval_is_refused_until_code_execution_is_allowed():
    evaluator = HumanEval()
    config = HumanEvalOptions(path=str(HUMANEVAL_SAMPLE))
    model = ScriptedModel(lambda p, _: "    return 0\n")
    with pytest.raises(CodeExecutionRefused, match="allow_code_execution") as refused:
        evaluator.score(EvalContext(model=model, config=config), evaluator.load(config))
    assert "\n" not in str(refused.value) and "code" in str(refused.value)
    assert model.calls == []  # refused before asking the model anything


def test_humaneval_passes_right_code_and_fails_wrong_code():
    evaluator = HumanEval()
    config = HumanEvalOptions(path=str(HUMANEVAL_SAMPLE))
    items = evaluator.load(config)
    assert len(items) == 6 and items[0]["id"] == "StudioEval/0"
    model = ScriptedModel(canonical(items))
    _, samples, metrics = run(evaluator, config, model, allow_code_execution=True)
    assert model.calls[0]["until"] == UNTIL and model.calls[0]["max_new_tokens"] == 1024
    assert metrics["pass@1"]["value"] == 1.0
    assert samples[0]["results"] == [{"status": "passed", "detail": ""}]
    _, wrong, metrics = run(evaluator, config, ScriptedModel(lambda p, _: "    return None\n"),
                            allow_code_execution=True)
    assert metrics["pass@1"]["value"] == 0.0 and all(s["passed"] == 0 for s in wrong)
    _, samples, metrics = run(evaluator, HumanEvalOptions(path=str(HUMANEVAL_SAMPLE), solutions="canonical"),
                              ScriptedModel(lambda p, _: "unused"), allow_code_execution=True)
    assert metrics["pass@1"]["value"] == 1.0


def test_humaneval_pass_at_k_from_several_samples(tmp_path):
    evaluator = HumanEval()
    items = evaluator.load(HumanEvalOptions(path=str(HUMANEVAL_SAMPLE)))
    solutions = canonical(items)
    # Problem i gets i right answers among its 5 samples (i = 0..5).
    right = {item["prompt"]: index for index, item in enumerate(items)}
    model = ScriptedModel(lambda p, j: solutions(p, j) if j < right[p] else "    return None\n")
    config = HumanEvalOptions(path=str(HUMANEVAL_SAMPLE), n=5, temperature=0.8, ks=[1, 2, 5])
    _, samples, metrics = run(evaluator, config, model, allow_code_execution=True, seed=3)
    assert model.calls[0]["n"] == 5 and model.calls[0]["temperature"] == 0.8
    assert [s["passed"] for s in samples] == [0, 1, 2, 3, 4, 5]
    for k in (1, 2, 5):
        expected = sum(pass_at_k(5, c, k) for c in range(6)) / 6
        assert metrics[f"pass@{k}"]["value"] == pytest.approx(expected)
    assert metrics["pass@1"]["value"] == pytest.approx(0.5) and metrics["pass@5"]["value"] == pytest.approx(5 / 6)
    assert len(samples[3]["completions"]) == 5


def test_humaneval_options_are_checked():
    with pytest.raises(ValueError, match="temperature"):
        HumanEvalOptions(path="x", n=4)
    with pytest.raises(ValueError, match="ks"):
        HumanEvalOptions(path="x", n=2, temperature=0.5, ks=[5])
    with pytest.raises(ValueError):
        HumanEvalOptions(path="x", budget=3)


def test_humaneval_reads_gzip_and_builds_lm_eval_s_program(tmp_path):
    packed = tmp_path / "HumanEval.jsonl.gz"
    with gzip.open(packed, "wt", encoding="utf-8") as fh:
        fh.write(HUMANEVAL_SAMPLE.read_text())
    items = HumanEval().load(HumanEvalOptions(path=str(tmp_path)))
    assert [i["id"] for i in items] == [f"StudioEval/{k}" for k in range(6)]
    text = program(items[0], "    return 1\n")
    assert text == items[0]["prompt"] + "    return 1\n" + "\n" + items[0]["test"] + "\n" + "check(count_vowels)"
    duplicate = tmp_path / "dup.jsonl"
    line = HUMANEVAL_SAMPLE.read_text().splitlines()[0]
    duplicate.write_text(line + "\n" + line + "\n")
    with pytest.raises(EvalDataError, match="line 2, field 'task_id'"):
        HumanEval().load(HumanEvalOptions(path=str(duplicate)))


def test_humaneval_loads_and_runs_on_the_real_problems():
    real = realdata_file("benchmarks/HumanEval.jsonl.gz")
    evaluator = HumanEval()
    config = HumanEvalOptions(path=str(real))
    items = evaluator.load(config)
    assert len(items) == 164 and items[0]["id"] == "HumanEval/0"
    chosen = random.Random(0).sample(items, 4)
    model = ScriptedModel(canonical(chosen))
    samples = evaluator.score(EvalContext(model=model, config=config, options={"allow_code_execution": True}),
                              chosen)
    assert [s["passed"] for s in samples] == [1, 1, 1, 1]
