"""The multiple-choice evaluators: they load the shipped samples, build lm-eval's prompts, turn planted
log-probabilities into the metrics lm-eval would report (acc, acc_norm, MC2, MMLU's size-weighted
groups), name the file, line and field of a bad row while keeping the good ones, and score a real
(tiny) model end to end."""
from __future__ import annotations

import json
import math

import pytest

from conftest import DATASETS
from studio.evaluation.base import EvalContext, EvalDataError
from studio.evaluation.models import EvalModel
from studio.evaluation.stats import pooled_stderr
from studio.plugins import get_host
from studio_eval_choice.prompts import TRUTHFULQA_PRIMER, hellaswag_query
from studio_eval_choice.scoring import choice_metrics, true_mass
from studio_eval_choice.tasks import (
    MMLU, ArcChallenge, ArcEasy, HellaSwag, TruthfulQAMC1, TruthfulQAMC2, train_file_beside,
)

EVAL = DATASETS / "eval"
NAMES = ("arc_easy", "arc_challenge", "hellaswag", "mmlu", "truthfulqa_mc1", "truthfulqa_mc2")


class PlantedModel(EvalModel):
    """Log-probabilities looked up by continuation (default -10), and a record of every call."""

    def __init__(self, table: dict[str, float] | None = None):
        super().__init__("planted")
        self.table = table or {}
        self.calls: list[list[tuple[str, str]]] = []

    def loglikelihood(self, requests, batch_size=16, progress=None):
        self.calls.append(list(requests))
        return [(self.table.get(cont, -10.0), False) for _ctx, cont in requests]


def run(evaluator, model, **options):
    config = evaluator.config_model(**options)
    items = evaluator.load(config)
    samples = evaluator.score(EvalContext(model=model, config=config, task=evaluator.name), items)
    return items, samples, evaluator.aggregate(samples, config)


def test_the_six_tasks_are_registered_plugins_with_documented_options():
    evaluators = get_host().items("evaluator")
    names = {getattr(e, "name", None) for e in (evaluators.values() if isinstance(evaluators, dict) else evaluators)}
    assert set(NAMES) <= names
    for cls in (ArcEasy, ArcChallenge, HellaSwag, MMLU, TruthfulQAMC1, TruthfulQAMC2):
        assert cls.uses == ("loglikelihood",) and cls.default_fewshot == 0
        fields = cls.config_model.model_fields
        assert "path" in fields and "num_fewshot" in fields and all(f.description for f in fields.values())
        with pytest.raises(Exception):
            cls.config_model(path="x", bogus=1)  # extra="forbid"


# --- hand-computed metrics ---------------------------------------------------------------------


def test_acc_is_the_argmax_and_acc_norm_divides_by_characters():
    # "a" -10/1 = -10 per char; "bbbbbbbbbb" -12/10 = -1.2 per char: raw picks "a", normalised the long one.
    pred, metrics = choice_metrics([-10.0, -12.0], ["a", "bbbbbbbbbb"], gold=1)
    assert pred == 0 and metrics == {"acc": 0.0, "acc_norm": 1.0}
    # Divided by the choice alone, not by the " " + choice that was scored: -2/2 < -3.9/4, but -2/3 > -3.9/5.
    assert choice_metrics([-2.0, -3.9], ["ab", "abcd"], gold=1) == (0, {"acc": 0.0, "acc_norm": 1.0})
    # A tie goes to the first choice, like numpy.argmax.
    assert choice_metrics([-3.0, -3.0], ["xx", "yy"], gold=1) == (0, {"acc": 0.0, "acc_norm": 0.0})


def test_mc2_is_the_normalised_mass_on_true_answers():
    lps = [math.log(0.2), math.log(0.1), math.log(0.3)]
    assert true_mass(lps, [1, 1, 0]) == pytest.approx(0.5)
    # Far below exp's range, where lm-eval's unshifted exp gives 0/0, the value is still right.
    assert true_mass([-2000.0, -2000.0 - math.log(3)], [1, 0]) == pytest.approx(0.75)


def test_arc_scores_with_planted_logprobs_in_one_call():
    path = EVAL / "arc_challenge_sample.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    right = {" " + next(c["text"] for c in r["question"]["choices"] if c["label"] == r["answerKey"]) for r in rows}
    model = PlantedModel({text: -1.0 for text in right})
    items, samples, metrics = run(ArcChallenge(), model, path=str(path))
    assert len(model.calls) == 1 and len(model.calls[0]) == sum(len(it["choices"]) for it in items)
    assert metrics["acc"]["value"] == 1.0 and metrics["acc"]["n"] == len(rows) == 25
    first = samples[0]
    assert first["prompt"] == "Question: " + rows[0]["question"]["stem"] + "\nAnswer:"
    assert first["target"] == first["prediction"] and first["scores"][first["target"]] == -1.0
    assert set(first) >= {"id", "prompt", "choices", "scores", "target", "prediction", "metrics"}
    assert first["id"] == rows[0]["id"]


def test_samples_do_not_depend_on_chunking():
    evaluator = ArcEasy()
    config = evaluator.config_model(path=str(EVAL / "arc_easy_digits_sample.jsonl"), num_fewshot=2)
    items = evaluator.load(config)
    model = PlantedModel({" a cork": -0.5, " spring": -2.0})
    whole = evaluator.score(EvalContext(model=model, config=config), items)
    pieces = [s for k in range(0, len(items), 3) for s in evaluator.score(EvalContext(model=model, config=config),
                                                                          items[k:k + 3])]
    assert whole == pieces
    assert [len(it["choices"]) for it in items[:2]] == [3, 5]  # digit labels, 3 and 5 choices


def test_truthfulqa_prompt_and_mc1_mc2(tmp_path):
    path = tmp_path / "tqa.json"
    path.write_text(json.dumps([{"question": "Is the sky green?",
                                 "mc1_targets": {"choices": ["No.", "Yes, always."], "labels": [1, 0]},
                                 "mc2_targets": {"choices": ["No.", "No, it is blue.", "Yes, always."],
                                                 "labels": [1, 1, 0]}}]))
    model = PlantedModel({" No.": math.log(0.2), " No, it is blue.": math.log(0.1), " Yes, always.": math.log(0.3)})
    _, samples, metrics = run(TruthfulQAMC1(), model, path=str(path))
    assert samples[0]["prompt"] == TRUTHFULQA_PRIMER + "\n\nQ: Is the sky green?\nA:"
    assert metrics["acc"]["value"] == 0.0  # "Yes, always." is likelier than "No."
    _, samples, metrics = run(TruthfulQAMC2(), model, path=str(path))
    assert metrics["acc"]["value"] == pytest.approx(0.5) and samples[0]["labels"] == [1, 1, 0]


def test_truthfulqa_reads_the_original_mc_task_json_shape(tmp_path):
    path = tmp_path / "mc_task.json"
    path.write_text(json.dumps([{"question": "Q?", "mc1_targets": {"Right.": 1, "Wrong.": 0},
                                 "mc2_targets": {"Right.": 1, "Also right.": 1, "Wrong.": 0}}]))
    items = TruthfulQAMC2().load(TruthfulQAMC2.config_model(path=str(path)))
    assert items[0]["choices"] == ["Right.", "Also right.", "Wrong."] and items[0]["labels"] == [1, 1, 0]


def test_truthfulqa_csv_builds_mc1_and_mc2(tmp_path):
    path = tmp_path / "TruthfulQA.csv"
    path.write_text("Type,Category,Question,Best Answer,Correct Answers,Incorrect Answers,Source\n"
                    "Adversarial,Myths,Do cats have nine lives?,No; cats have one life,"
                    "No; cats have one life; Cats have one life,Yes; cats have nine lives,"
                    "https://example.org\n")
    mc1 = TruthfulQAMC1().load(TruthfulQAMC1.config_model(path=str(path)))
    mc2 = TruthfulQAMC2().load(TruthfulQAMC2.config_model(path=str(path)))
    # The CSV's answer lists are ";"-separated: the best answer itself contains one, so it splits too.
    assert mc1[0]["choices"][0] == "No; cats have one life" and mc1[0]["choices"][1:] == ["Yes", "cats have nine lives"]
    assert mc2[0]["labels"] == [1, 1, 1, 0, 0]


def test_hellaswag_preprocessing_and_few_shot_from_the_train_file():
    assert hellaswag_query("Raking leaves", "[header] How to rake leaves [title] Choose a wide rake.",
                           "[step] a wide rake") == "Raking leaves: How to rake leaves. Choose a wide rake. a wide rake"
    path = EVAL / "hellaswag_sample.jsonl"
    assert train_file_beside(path) == EVAL / "hellaswag_train_sample.jsonl"
    items = HellaSwag().load(HellaSwag.config_model(path=str(path), num_fewshot=10))
    assert all(it["context"].count("\n\n") == 10 for it in items)
    train_queries = {hellaswag_query(r["activity_label"], r["ctx_a"], r["ctx_b"])
                     for r in map(json.loads, (EVAL / "hellaswag_train_sample.jsonl").read_text().splitlines())}
    assert sum(any(part.startswith(q) for q in train_queries) for part in items[0]["context"].split("\n\n")[:-1]) == 10


def test_few_shot_from_the_same_file_never_shows_an_item_its_own_answer():
    items = ArcEasy().load(ArcEasy.config_model(path=str(EVAL / "arc_easy_digits_sample.jsonl"), num_fewshot=19))
    for it in items:
        *shots, question = it["context"].split("\n\n")
        assert len(shots) == 19 and not any(shot.startswith(question + " ") for shot in shots)


# --- MMLU ---------------------------------------------------------------------------------------


def test_mmlu_prompt_subject_line_and_first_n_dev_examples():
    items = MMLU().load(MMLU.config_model(path=str(EVAL / "mmlu_sample"), num_fewshot=5))
    subjects = {it["subject"] for it in items}
    assert subjects == {"astronomy", "world_religions", "nutrition"} and len(items) == 24
    religion = next(it for it in items if it["subject"] == "world_religions")
    assert religion["context"].startswith("The following are multiple choice questions (with answers) about "
                                          "world religions.\n\nWhich city is the holiest site in Islam?\nA. Medina\n")
    assert religion["context"].count("\nAnswer:") == 6 and religion["choices"] == ["A", "B", "C", "D"]
    # One subject's CSV works on its own, with its dev file found beside the split folder.
    one = MMLU().load(MMLU.config_model(path=str(EVAL / "mmlu_sample" / "test" / "nutrition_test.csv"), num_fewshot=1))
    assert len(one) == 8 and one[0]["context"].count("\nAnswer:") == 2


def test_mmlu_groups_are_weighted_by_subject_size_with_pooled_stderr():
    samples = []
    for subject, values in {"astronomy": [1, 1, 0, 0], "world_religions": [1, 0], "nutrition": [1, 1, 1, 0, 0, 0]
                            }.items():
        samples += [{"id": f"{subject}/{i}", "subject": subject, "metrics": {"acc": float(v)}}
                    for i, v in enumerate(values)]
    out = MMLU().aggregate(samples, MMLU.config_model(path="x"))
    assert out["acc"]["value"] == pytest.approx(6 / 12) and out["acc"]["n"] == 12
    assert out["acc:stem"]["value"] == 0.5 and out["acc:humanities"]["n"] == 2 and out["acc:other"]["n"] == 6
    assert "acc:social_sciences" not in out
    se = {s: out[f"acc:{s}"]["stderr"] for s in ("astronomy", "world_religions", "nutrition")}
    assert se["astronomy"] == pytest.approx(math.sqrt((4 * 0.25) / 3) / 2)
    assert out["acc"]["stderr"] == pytest.approx(pooled_stderr([se["astronomy"], se["world_religions"],
                                                                se["nutrition"]], [4, 2, 6]))


# --- bad rows -----------------------------------------------------------------------------------


def test_a_bad_row_names_file_line_and_field_and_the_good_rows_still_load(tmp_path):
    path = tmp_path / "arc.jsonl"
    good = {"id": "q1", "question": {"stem": "S?", "choices": [{"text": "a", "label": "A"},
                                                               {"text": "b", "label": "B"}]}, "answerKey": "A"}
    bad = dict(good, id="q2", answerKey="E")
    path.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n{broken\n")
    evaluator = ArcEasy()
    items = evaluator.load(ArcEasy.config_model(path=str(path)))
    assert [it["id"] for it in items] == ["q1"]
    (first, second) = evaluator.skipped
    assert (first.path, first.line, first.field) == (str(path), 2, "answerKey")
    assert "is none of the choice labels" in str(first) and f"{path}, line 2, field 'answerKey'" in str(first)
    assert second.line == 3 and "broken JSON" in str(second)


def test_mmlu_bad_answer_and_hellaswag_missing_label(tmp_path):
    folder = tmp_path / "test"
    folder.mkdir()
    (folder / "anatomy_test.csv").write_text("Which bone?,Femur,Skull,Rib,Ulna,B\nWhich organ?,Heart,Lung,Skin,Eye,Z\n")
    evaluator = MMLU()
    assert len(evaluator.load(MMLU.config_model(path=str(tmp_path)))) == 1
    assert (evaluator.skipped[0].line, evaluator.skipped[0].field) == (2, "answer")
    hs = tmp_path / "hs.jsonl"
    hs.write_text(json.dumps({"activity_label": "x", "ctx_a": "a", "ctx_b": "b", "ctx": "a b", "endings": ["1", "2"],
                              "label": ""}) + "\n")
    with pytest.raises(EvalDataError) as err:
        HellaSwag().load(HellaSwag.config_model(path=str(hs)))
    assert err.value.line == 1 and err.value.field == "label"


def test_asking_for_more_shots_than_examples_is_a_clear_error():
    # From the evaluated file itself, lm-eval draws k + 1 and drops the item: 27 needed.
    with pytest.raises(EvalDataError, match="26-shot needs 27 examples"):
        ArcEasy().load(ArcEasy.config_model(path=str(EVAL / "arc_challenge_sample.jsonl"), num_fewshot=26,
                                            fewshot_from=str(EVAL / "arc_challenge_sample.jsonl")))


# --- a real model -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    pytest.importorskip("torch")
    from studio.evaluation.models import LocalModel
    from studio.models.embedded import build_embedded_model

    return LocalModel(str(build_embedded_model(tmp_path_factory.mktemp("embedded") / "tiny", pretrain_steps=2)))


@pytest.mark.parametrize("evaluator, options", [
    (ArcChallenge(), {"path": str(EVAL / "arc_challenge_sample.jsonl"), "num_fewshot": 1}),
    (HellaSwag(), {"path": str(EVAL / "hellaswag_sample.jsonl")}),
    (MMLU(), {"path": str(EVAL / "mmlu_sample"), "num_fewshot": 1}),
    (TruthfulQAMC1(), {"path": str(EVAL / "truthfulqa_mc_sample.json")}),
    (TruthfulQAMC2(), {"path": str(EVAL / "truthfulqa_mc_sample.json")}),
], ids=lambda v: getattr(v, "name", ""))
def test_each_task_scores_the_tiny_model_through_the_studio_scorer(tiny, evaluator, options):
    config = evaluator.config_model(**options)
    items = evaluator.load(config)[:6]
    samples = evaluator.score(EvalContext(model=tiny, config=config, batch_size=8), items)
    assert [s["id"] for s in samples] == [it["id"] for it in items]
    for s in samples:
        assert len(s["scores"]) == len(s["choices"]) and all(lp < 0 for lp in s["scores"])
        assert s["prediction"] == max(range(len(s["scores"])), key=lambda i: (s["scores"][i], -i))
        assert all(0.0 <= v <= 1.0 for v in s["metrics"].values())
    metrics = evaluator.aggregate(samples, config)
    assert metrics["acc"]["n"] == 6 and 0.0 <= metrics["acc"]["value"] <= 1.0
