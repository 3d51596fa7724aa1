"""The multiple-choice tasks build the very requests lm-evaluation-harness 0.4.13 builds on the same local
files, string for string: contexts with their few-shot examples (same sampler, same seed, same RNG
order), and continuations. lm-eval runs in its isolated venv (skipped when that is not installed),
through local task YAMLs that include the installed built-in ones, so its Python hooks (HellaSwag's
preprocessing, MMLU's template) are its own."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import textwrap
from pathlib import Path

import pytest

from conftest import DATASETS
from studio_eval_choice.prompts import requests_for
from studio_eval_choice.tasks import MMLU, ArcChallenge, ArcEasy, HellaSwag, TruthfulQAMC1, TruthfulQAMC2

VENV_PYTHON = Path("/work/main/bench/envs/lm-eval-0.4.13/bin/python")
pytestmark = pytest.mark.skipif(not VENV_PYTHON.is_file(), reason="the lm-eval 0.4.13 reference venv is not installed")
EVAL = DATASETS / "eval"

LM_EVAL_SCRIPT = """
import json, logging, sys
logging.disable(logging.WARNING)
from lm_eval.tasks import TaskManager, get_task_dict

folder, names = sys.argv[1], sys.argv[2].split(",")
tasks = get_task_dict(names, TaskManager(include_defaults=False, include_path=folder))
out = {}
for name in names:
    task = tasks[name]
    if task.get_config("num_fewshot") is None:
        task.set_config(key="num_fewshot", value=0)
    task.set_fewshot_seed(seed=1234)   # what simple_evaluate does with its default fewshot_random_seed
    task.build_all_requests(limit=None, rank=0, world_size=1)
    out[name] = [list(inst.arguments) for inst in task.instances]
print(json.dumps(out))
"""


def _installed_yaml(*parts: str) -> str:
    proc = subprocess.run([str(VENV_PYTHON), "-c", "import lm_eval, os; print(os.path.dirname(lm_eval.__file__))"],
                          capture_output=True, text=True, check=True)
    return str(Path(proc.stdout.strip(), "tasks", *parts))


def _flat_arc(source: Path, target: Path) -> Path:
    """AI2's nested ARC rows as the Hugging Face rows lm-eval's template reads."""
    with source.open() as fh, target.open("w") as out:
        for line in fh:
            row = json.loads(line)
            q = row["question"]
            out.write(json.dumps({"id": row["id"], "question": q["stem"], "answerKey": row["answerKey"],
                                  "choices": {"text": [c["text"] for c in q["choices"]],
                                              "label": [c["label"] for c in q["choices"]]}}) + "\n")
    return target


def _mmlu_jsonl(source: Path, target: Path, subject: str) -> Path:
    """A header-less MMLU CSV as cais/mmlu rows ({question, subject, choices, answer: int})."""
    with source.open(newline="") as fh, target.open("w") as out:
        for q, a, b, c, d, answer in csv.reader(fh):
            out.write(json.dumps({"question": q, "subject": subject, "choices": [a, b, c, d],
                                  "answer": "ABCD".index(answer.strip())}) + "\n")
    return target


def _yaml(folder: Path, name: str, body: dict) -> None:
    (folder / f"{name}.yaml").write_text(json.dumps(body))  # JSON is YAML


def _lm_eval_requests(folder: Path, names: list[str]) -> dict[str, list[list[str]]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHONPATH", "STUDIO_"))}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               HF_HOME=str(folder / "hf"), TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run([str(VENV_PYTHON), "-c", textwrap.dedent(LM_EVAL_SCRIPT), str(folder), ",".join(names)],
                          capture_output=True, text=True, env=env, timeout=600, cwd=folder)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _ours(evaluator, **options) -> list[list[str]]:
    items = evaluator.load(evaluator.config_model(**options))
    return [list(pair) for it in items for pair in requests_for(it["context"], it["choices"])]


def write_reference_tasks(tmp_path: Path) -> list[str]:
    """Local lm-eval task YAMLs over the shipped samples (converted to the row shapes its templates
    read where the studio reads AI2's or MMLU's own files); returns the task names."""
    data = tmp_path / "data"
    data.mkdir()
    arc_test = _flat_arc(EVAL / "arc_challenge_sample.jsonl", data / "arc_test.jsonl")
    arc_train = _flat_arc(EVAL / "arc_challenge_train_sample.jsonl", data / "arc_train.jsonl")
    arc_yaml = _installed_yaml("arc", "arc_easy.yaml")
    _yaml(tmp_path, "ref_arc_challenge", {
        "include": arc_yaml, "task": "ref_arc_challenge", "tag": [], "dataset_path": "json", "dataset_name": None,
        "dataset_kwargs": {"data_files": {"train": str(arc_train), "test": str(arc_test)}},
        "training_split": "train", "validation_split": None, "test_split": "test", "num_fewshot": 25})
    # Digit labels, 3 and 5 choices, few-shot examples from the evaluated file itself.
    _yaml(tmp_path, "ref_arc_digits", {
        "include": arc_yaml, "task": "ref_arc_digits", "tag": [], "dataset_path": "json", "dataset_name": None,
        "dataset_kwargs": {"data_files": {"test": str(EVAL / "arc_easy_digits_sample.jsonl")}},
        "training_split": None, "validation_split": None, "test_split": "test", "fewshot_split": "test",
        "num_fewshot": 3})
    _yaml(tmp_path, "ref_hellaswag", {
        "include": _installed_yaml("hellaswag", "hellaswag.yaml"), "task": "ref_hellaswag", "tag": [],
        "dataset_path": "json", "dataset_name": None,
        "dataset_kwargs": {"data_files": {"train": str(EVAL / "hellaswag_train_sample.jsonl"),
                                          "validation": str(EVAL / "hellaswag_sample.jsonl")}},
        "num_fewshot": 10})
    for variant in ("mc1", "mc2"):
        _yaml(tmp_path, f"ref_truthfulqa_{variant}", {
            "include": _installed_yaml("truthfulqa", f"truthfulqa_{variant}.yaml"), "task": f"ref_truthfulqa_{variant}",
            "tag": [], "dataset_path": "json", "dataset_name": None,
            "dataset_kwargs": {"data_files": {"validation": str(EVAL / "truthfulqa_mc_sample.json")}}})
    mmlu = EVAL / "mmlu_sample"
    subjects = sorted(p.name[:-len("_test.csv")] for p in (mmlu / "test").glob("*_test.csv"))
    for subject in subjects:
        _yaml(tmp_path, f"ref_mmlu_{subject}", {
            "include": _installed_yaml("mmlu", "default", "_default_template_yaml"), "task": f"ref_mmlu_{subject}",
            "dataset_path": "json", "dataset_name": None,
            "description": f"The following are multiple choice questions (with answers) about "
                           f"{subject.replace('_', ' ')}.\n\n",
            "dataset_kwargs": {"data_files": {
                "dev": str(_mmlu_jsonl(mmlu / "dev" / f"{subject}_dev.csv", data / f"{subject}_dev.jsonl", subject)),
                "test": str(_mmlu_jsonl(mmlu / "test" / f"{subject}_test.csv", data / f"{subject}_test.jsonl",
                                        subject))}},
            "num_fewshot": 5})
    return ["ref_arc_challenge", "ref_arc_digits", "ref_hellaswag", "ref_truthfulqa_mc1", "ref_truthfulqa_mc2",
            *[f"ref_mmlu_{s}" for s in subjects]]


def test_requests_match_lm_eval_string_for_string(tmp_path):
    names = write_reference_tasks(tmp_path)
    subjects = [n[len("ref_mmlu_"):] for n in names if n.startswith("ref_mmlu_")]
    mmlu = EVAL / "mmlu_sample"
    ref = _lm_eval_requests(tmp_path, names)

    assert _ours(ArcChallenge(), path=str(EVAL / "arc_challenge_sample.jsonl"), num_fewshot=25) \
        == ref["ref_arc_challenge"]
    assert _ours(ArcEasy(), path=str(EVAL / "arc_easy_digits_sample.jsonl"), num_fewshot=3) == ref["ref_arc_digits"]
    assert _ours(HellaSwag(), path=str(EVAL / "hellaswag_sample.jsonl"), num_fewshot=10) == ref["ref_hellaswag"]
    assert _ours(TruthfulQAMC1(), path=str(EVAL / "truthfulqa_mc_sample.json")) == ref["ref_truthfulqa_mc1"]
    assert _ours(TruthfulQAMC2(), path=str(EVAL / "truthfulqa_mc_sample.json")) == ref["ref_truthfulqa_mc2"]
    mmlu_ref = [pair for s in subjects for pair in ref[f"ref_mmlu_{s}"]]
    assert _ours(MMLU(), path=str(mmlu), num_fewshot=5) == mmlu_ref
    # The few-shot examples really are in the contexts (25 solved ARC questions before the 26th).
    assert ref["ref_arc_challenge"][0][0].count("\nAnswer:") == 26
