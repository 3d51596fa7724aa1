"""GSM8K against lm-evaluation-harness 0.4.13 itself, item for item.

lm-eval runs in its isolated venv (``bench/envs/lm-eval-0.4.13``, made by ``bench/reference_env.py``;
``LM_EVAL_PYTHON`` may name another interpreter of the same version) with ``--model hf`` and a local
task YAML that includes the built-in ``gsm8k.yaml``; the studio scores the same files with the same
model. Prompts (5 shots drawn as lm-eval draws them), completions, both filters' extracted answers
and both exact-match scores must be identical. Skips when the venv is absent.
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from conftest import DATASETS, ROOT

from studio.evaluation.base import EvalContext
from studio.evaluation.models import open_model
from studio_eval_generative.gsm8k import Gsm8k, Gsm8kOptions, exact_match, flexible_answer, strict_answer

pytestmark = pytest.mark.slow
VENV = ROOT / "bench" / "envs" / "lm-eval-0.4.13"
TEST_FILE = DATASETS / "eval" / "gsm8k_sample.jsonl"
TRAIN_FILE = DATASETS / "eval" / "gsm8k_train_sample.jsonl"


def reference_python() -> Path:
    override = os.environ.get("LM_EVAL_PYTHON")
    python = Path(override) if override else VENV / "bin" / "python"
    if not python.is_file() or (not override and not (VENV / ".installed").is_file()):
        pytest.skip(f"lm-eval 0.4.13 is not installed at {VENV} (python bench/reference_env.py makes it)")
    return python


def lm_eval_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHONPATH", "STUDIO_"))}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               HF_HOME=str(tmp_path / "hf"))
    return env


def run_lm_eval(python: Path, model_dir: Path, tmp_path: Path, extra_yaml: str = "") -> dict[int, dict[str, dict]]:
    """lm-eval's logged samples: doc id -> filter name -> sample."""
    site = subprocess.run([str(python), "-c", "import lm_eval, os; print(os.path.dirname(lm_eval.__file__))"],
                          capture_output=True, text=True, check=True, env=lm_eval_env(tmp_path)).stdout.strip()
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "gsm8k_studio.yaml").write_text(
        f"include: {site}/tasks/gsm8k/gsm8k.yaml\n"
        "task: gsm8k_studio\ntag: []\ndataset_path: json\ndataset_name: null\n"
        f"dataset_kwargs:\n  data_files:\n    train: {TRAIN_FILE}\n    test: {TEST_FILE}\n" + extra_yaml)
    out = tmp_path / "out"
    proc = subprocess.run(
        [str(python), "-m", "lm_eval", "--model", "hf", "--model_args", f"pretrained={model_dir},dtype=float32",
         "--tasks", "gsm8k_studio", "--include_path", str(tasks), "--limit", "20", "--log_samples",
         "--output_path", str(out), "--batch_size", "4", "--device", "cpu"],
        capture_output=True, text=True, env=lm_eval_env(tmp_path), cwd=tmp_path, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    found: dict[int, dict[str, dict]] = {}
    for path in out.rglob("samples_gsm8k_studio_*.jsonl"):
        for line in path.read_text().splitlines():
            row = json.loads(line)
            found.setdefault(row["doc_id"], {})[row["filter"]] = row
    return found


def assert_same_as_reference(reference: dict[int, dict[str, dict]], samples: list[dict]) -> None:
    assert sorted(reference) == list(range(len(samples))) and len(samples) == 20
    for index, sample in enumerate(samples):
        strict, flexible = reference[index]["strict-match"], reference[index]["flexible-extract"]
        assert sample["prompt"] == strict["arguments"]["gen_args_0"]["arg_0"], index
        assert sample["prediction"] == strict["resps"][0][0], index
        assert sample["extracted"] == {"strict": strict["filtered_resps"][0],
                                       "flexible": flexible["filtered_resps"][0]}, index
        assert sample["metrics"] == {"exact_match_strict": strict["exact_match"],
                                     "exact_match_flexible": flexible["exact_match"]}, index


def score_with_studio(model_dir: Path, batch_size: int, **options) -> list[dict]:
    evaluator = Gsm8k()
    config = Gsm8kOptions(path=str(TEST_FILE), **options)
    items = evaluator.load(config)
    return evaluator.score(EvalContext(model=open_model(str(model_dir)), config=config, batch_size=batch_size),
                           items)


def test_gsm8k_matches_lm_eval_on_the_embedded_model(tmp_path):
    from studio.models.embedded import ensure_embedded_model

    python = reference_python()
    model_dir = ensure_embedded_model("tiny")
    reference = run_lm_eval(python, model_dir, tmp_path)
    # A different batch size from lm-eval's: left padding must not change a greedy answer.
    assert_same_as_reference(reference, score_with_studio(model_dir, batch_size=8))


def test_gsm8k_matches_lm_eval_on_long_untrained_completions(tmp_path):
    # Random weights never stop early: every answer runs to the token limit, after a prompt whose
    # five shots fill most of the context, so truncation, padding and decoding all show.
    from studio.models.embedded import build_embedded_model

    python = reference_python()
    model_dir = build_embedded_model(tmp_path / "untrained", pretrain_steps=0)
    reference = run_lm_eval(python, model_dir, tmp_path, "generation_kwargs:\n  until: ['Question:', '</s>', "
                                                         "'<|im_end|>']\n  do_sample: false\n  temperature: 0.0\n"
                                                         "  max_gen_toks: 32\n")
    samples = score_with_studio(model_dir, batch_size=3, max_gen_toks=32)
    assert all(len(s["prediction"]) > 0 for s in samples)
    assert_same_as_reference(reference, samples)


def test_answer_extraction_and_exact_match_are_lm_eval_s(tmp_path):
    """lm-eval's own filter and metric code, run in its venv on made-up completions."""
    python = reference_python()
    reference = "Two steps.\n#### 1,250"
    completions = [" 5 * 250 = 1250.\n#### 1250", " The answer is $1,250.", "#### 1,250.", "#### -3", "no number",
                   " 12 apples and 1250 pears", " 1250.00", "#### 1 250", " costs $12.50 each", "#### 1250\n#### 7",
                   " x= -17.", " .5 and 3"]
    code = """
import json, sys
from lm_eval.filters.extraction import RegexFilter
from lm_eval.api.metrics import exact_match_hf_evaluate
completions, reference = json.loads(sys.argv[1]), sys.argv[2]
strict = RegexFilter(regex_pattern=r"#### (\\-?[0-9\\.\\,]+)")
flexible = RegexFilter(regex_pattern=r"(-?[$0-9.,]{2,})|(-?[0-9]+)", group_select=-1)
ignore = [",", "\\\\$", "(?s).*#### ", "\\\\.$"]
out = []
for c in completions:
    row = {}
    for name, f in (("strict", strict), ("flexible", flexible)):
        got = list(f.apply([[c]], [None]))[0][0]
        score = exact_match_hf_evaluate([got], [reference], regexes_to_ignore=ignore, ignore_case=True)["exact_match"]
        row[name] = [got, float(score)]
    out.append(row)
print(json.dumps(out))
"""
    proc = subprocess.run([str(python), "-c", code, json.dumps(completions), reference], capture_output=True,
                          text=True, env=lm_eval_env(tmp_path), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    expected = json.loads(proc.stdout.strip().splitlines()[-1])
    ours = [{"strict": [strict_answer(c), exact_match(strict_answer(c), reference)],
             "flexible": [flexible_answer(c), exact_match(flexible_answer(c), reference)]} for c in completions]
    assert ours == expected
    assert any(row["strict"][1] == 1.0 for row in ours) and any(row["flexible"][1] == 0.0 for row in ours)
