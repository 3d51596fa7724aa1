"""The studio's evaluators against lm-evaluation-harness 0.4.13, on the same model folders and files.

    .venv/bin/python bench/bench_eval.py [--quick] [--out bench/results/eval.json] [--batch-size 16]

Parity: the multiple-choice tasks (ARC-Challenge 25-shot, HellaSwag 10-shot, MMLU 0- and 5-shot,
TruthfulQA MC1 and MC2) on the samples in ``datasets/eval``, for the embedded tiny model and a tuned
one (a short LoRA SFT run on it, exported merged so lm-eval loads a plain folder). lm-eval runs
``simple_evaluate`` with ``HFLM(dtype=float32, device=cpu)`` on local task YAMLs that include the
installed built-in ones (their Python hooks apply; only the data changes). Reported: per-item
agreement of predictions and metrics, the largest log-likelihood difference, and the aggregates.

Speed: the embedded small model, the same batch size, on generated ARC-, HellaSwag- and MMLU-shaped
items (25-, 10- and 5-shot): whole-process wall time of each side's run of one task, and scoring time
(lm-eval: inside ``HFLM.loglikelihood``; the studio: inside ``score_requests``), as ratios.

Each side runs in its own process: lm-eval in its isolated venv (``bench/reference_env.py``), this
same file with ``--lm-eval-child``; the studio with ``--studio-child``. Nothing from lm-eval is a
dependency of the studio.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import random
import re
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "datasets" / "eval"
LETTERS = "ABCD"
MMLU_DESCRIPTION = "The following are multiple choice questions (with answers) about {}.\n\n"


# ---------------------------------------------------------------------------------------------------
# lm-eval's side (runs in the reference venv: standard library and lm_eval only)

def lm_eval_child(spec_path: str, out_path: str) -> None:
    import logging

    logging.disable(logging.WARNING)
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    spec = json.loads(Path(spec_path).read_text())
    scoring = {"seconds": 0.0, "cpu_seconds": 0.0, "requests": 0}
    original = HFLM.loglikelihood

    def timed(self, requests, disable_tqdm=False):
        start, cpu = time.perf_counter(), time.process_time()
        try:
            return original(self, requests, disable_tqdm=True)
        finally:
            scoring["seconds"] += time.perf_counter() - start
            scoring["cpu_seconds"] += time.process_time() - cpu
            scoring["requests"] += len(requests)

    HFLM.loglikelihood = timed
    lm = HFLM(pretrained=spec["model"], dtype="float32", device="cpu", batch_size=spec["batch_size"])
    names = [task["lm_eval_task"] for task in spec["tasks"]]
    out = lm_eval.simple_evaluate(model=lm, tasks=names, log_samples=True, bootstrap_iters=1000,
                                  task_manager=TaskManager(include_defaults=False, include_path=spec["yaml_dir"]))
    tasks = {}
    for name in names:
        by_doc: dict[int, dict] = {}
        for s in out["samples"][name]:
            entry = by_doc.setdefault(s["doc_id"], {"doc_id": s["doc_id"], "metrics": {}})
            first = s["resps"][0][0]
            if isinstance(first, str):  # generated text: one logged sample per filter
                entry["completion"] = first
                entry.setdefault("extracted", {})[s["filter"]] = s["filtered_resps"][0]
                entry["metrics"][f"exact_match,{s['filter']}"] = float(s["exact_match"])
            else:
                entry["lls"] = [float(r[0][0] if isinstance(r[0], (list, tuple)) else r[0]) for r in s["resps"]]
                entry["metrics"] = {k: float(s[k]) for k in ("acc", "acc_norm") if k in s}
        metrics = {}
        for key, value in out["results"][name].items():
            metric, _, filter_name = key.partition(",")
            if filter_name and isinstance(value, (int, float)):
                metrics[metric if filter_name == "none" else key] = value
        tasks[name] = {"samples": [by_doc[d] for d in sorted(by_doc)], "metrics": metrics}
    Path(out_path).write_text(json.dumps({"tasks": tasks, "scoring": scoring}))


# ---------------------------------------------------------------------------------------------------
# The studio's side

def studio_child(spec_path: str, out_path: str) -> None:
    from studio.evaluation import loglikelihood
    from studio.evaluation.base import EvalContext
    from studio.evaluation.models import open_model
    from studio.plugins import PluginHost

    spec = json.loads(Path(spec_path).read_text())
    scoring = {"seconds": 0.0, "cpu_seconds": 0.0, "requests": 0}
    original = loglikelihood.score_requests

    def timed(model, tokenizer, requests, batch_size=16, progress=None):
        start, cpu = time.perf_counter(), time.process_time()
        try:
            return original(model, tokenizer, requests, batch_size=batch_size, progress=progress)
        finally:
            scoring["seconds"] += time.perf_counter() - start
            scoring["cpu_seconds"] += time.process_time() - cpu
            scoring["requests"] += len(requests)

    loglikelihood.score_requests = timed  # LocalModel looks it up on the module at each call
    evaluators = PluginHost().items("evaluator")
    model = open_model(spec["model"])
    model.model  # load now: the scoring time below is scoring only
    tasks = {}
    for task in spec["tasks"]:
        evaluator = evaluators[task["studio_task"]]
        config = evaluator.config_model(**task["options"])
        items = evaluator.load(config)
        start = time.perf_counter()
        samples = evaluator.score(EvalContext(model=model, config=config, batch_size=spec["batch_size"],
                                              task=evaluator.name), items)
        seconds = time.perf_counter() - start
        metrics = evaluator.aggregate(samples, config)
        tasks[task["lm_eval_task"]] = {
            "samples": [{"id": s["id"], "scores": s.get("scores"), "prediction": s["prediction"],
                         "extracted": s.get("extracted"), "metrics": s["metrics"]} for s in samples],
            "metrics": {name: m["value"] for name, m in metrics.items()},
            "stderr": {name: m.get("stderr") for name, m in metrics.items()},
            "score_seconds": seconds}
    Path(out_path).write_text(json.dumps({"tasks": tasks, "scoring": scoring}))


# ---------------------------------------------------------------------------------------------------
# Files both sides read

def write_jsonl(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
    return path


def flat_arc_rows(path: Path) -> list[dict]:
    """ARC rows in the Hugging Face shape lm-eval's template reads (the studio reads both shapes)."""
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        if isinstance(row.get("question"), dict):
            q = row["question"]
            row = {"id": row["id"], "question": q["stem"], "answerKey": row["answerKey"],
                   "choices": {"text": [c["text"] for c in q["choices"]], "label": [c["label"] for c in q["choices"]]}}
        rows.append(row)
    return rows


def mmlu_rows(path: Path, subject: str) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as fh:
        return [{"question": q, "subject": subject, "choices": [a, b, c, d], "answer": LETTERS.index(ans.strip())}
                for q, a, b, c, d, ans in csv.reader(fh)]


class Words:
    """Deterministic text from the words of the shipped samples, so token lengths look like English."""

    def __init__(self, seed: int):
        text = " ".join(p.read_text(encoding="utf-8") for p in sorted(SAMPLES.rglob("*")) if p.is_file())
        self.words = sorted(set(re.findall(r"[A-Za-z]{2,}", text)))
        self.rnd = random.Random(seed)

    def text(self, low: int, high: int) -> str:
        return " ".join(self.rnd.choice(self.words) for _ in range(self.rnd.randint(low, high)))

    def sentence(self, low: int, high: int) -> str:
        body = self.text(low, high)
        return body[0].upper() + body[1:]


def generated_arc(words: Words, n: int, prefix: str) -> list[dict]:
    # Short enough that 25 solved questions fit the embedded small model's 1024-token window, as real
    # ARC does in the 2k-4k windows it is usually run with (a cut context is a different context for
    # each choice length, so nothing could be shared).
    return [{"id": f"{prefix}-{i}", "question": words.sentence(5, 9) + "?", "answerKey": words.rnd.choice(LETTERS),
             "choices": {"text": [words.text(1, 3) for _ in LETTERS], "label": list(LETTERS)}} for i in range(n)]


def generated_hellaswag(words: Words, n: int, start: int) -> list[dict]:
    rows = []
    for i in range(n):
        # Short enough that 10 solved examples fit the small model's 1024-token window (see ARC's note).
        ctx_a, ctx_b = words.sentence(8, 16) + ".", words.text(1, 3)
        rows.append({"ind": start + i, "activity_label": words.sentence(1, 3), "ctx_a": ctx_a, "ctx_b": ctx_b,
                     "ctx": f"{ctx_a} {ctx_b}", "endings": [words.text(6, 12) + "." for _ in range(4)],
                     "source_id": f"bench~{start + i}", "split": "val", "split_type": "indomain",
                     "label": words.rnd.randrange(4)})
    return rows


def generated_mmlu(words: Words, n: int) -> list[list[str]]:
    return [[words.sentence(10, 25) + "?", *[words.text(1, 6) for _ in LETTERS], words.rnd.choice(LETTERS)]
            for _ in range(n)]


def yaml_file(folder: Path, name: str, body: dict) -> None:
    (folder / f"{name}.yaml").write_text(json.dumps(body))  # JSON is YAML


def installed_tasks_dir(lm_python: Path) -> Path:
    proc = subprocess.run([str(lm_python), "-c", "import lm_eval, os; print(os.path.dirname(lm_eval.__file__))"],
                          capture_output=True, text=True, check=True, env=child_env())
    return Path(proc.stdout.strip()) / "tasks"


def arc_task(yaml_dir: Path, tasks_dir: Path, name: str, test: Path, train: Path, shots: int) -> dict:
    yaml_file(yaml_dir, name, {
        "include": str(tasks_dir / "arc" / "arc_easy.yaml"), "task": name, "tag": [], "dataset_path": "json",
        "dataset_name": None, "dataset_kwargs": {"data_files": {"train": str(train), "test": str(test)}},
        "training_split": "train", "validation_split": None, "test_split": "test", "num_fewshot": shots})
    return {"lm_eval_task": name, "studio_task": "arc_challenge", "shots": shots,
            "options": {"path": str(test), "fewshot_from": str(train), "num_fewshot": shots}}


def hellaswag_task(yaml_dir: Path, tasks_dir: Path, name: str, val: Path, train: Path, shots: int) -> dict:
    yaml_file(yaml_dir, name, {
        "include": str(tasks_dir / "hellaswag" / "hellaswag.yaml"), "task": name, "tag": [], "dataset_path": "json",
        "dataset_name": None, "dataset_kwargs": {"data_files": {"train": str(train), "validation": str(val)}},
        "num_fewshot": shots})
    return {"lm_eval_task": name, "studio_task": "hellaswag", "shots": shots,
            "options": {"path": str(val), "fewshot_from": str(train), "num_fewshot": shots}}


def truthfulqa_task(yaml_dir: Path, tasks_dir: Path, name: str, variant: str, path: Path) -> dict:
    yaml_file(yaml_dir, name, {
        "include": str(tasks_dir / "truthfulqa" / f"truthfulqa_{variant}.yaml"), "task": name, "tag": [],
        "dataset_path": "json", "dataset_name": None, "dataset_kwargs": {"data_files": {"validation": str(path)}}})
    return {"lm_eval_task": name, "studio_task": f"truthfulqa_{variant}", "shots": 0, "options": {"path": str(path)}}


def gsm8k_task(yaml_dir: Path, tasks_dir: Path, name: str, test: Path, train: Path, shots: int) -> dict:
    yaml_file(yaml_dir, name, {
        "include": str(tasks_dir / "gsm8k" / "gsm8k.yaml"), "task": name, "tag": [], "dataset_path": "json",
        "dataset_name": None, "dataset_kwargs": {"data_files": {"train": str(train), "test": str(test)}},
        "num_fewshot": shots})
    return {"lm_eval_task": name, "studio_task": "gsm8k", "shots": shots, "generated": True,
            "options": {"path": str(test), "fewshot_from": str(train), "num_fewshot": shots},
            "metric_names": {"exact_match,strict-match": "exact_match_strict",
                             "exact_match,flexible-extract": "exact_match_flexible"}}


def mmlu_tasks(yaml_dir: Path, tasks_dir: Path, name: str, folder: Path, shots: int) -> tuple[list[dict], dict]:
    """One lm-eval task per subject (as lm-eval's mmlu group has), one studio task over the folder."""
    names = []
    for test in sorted((folder / "test").glob("*_test.csv")):
        subject = test.name[:-len("_test.csv")]
        data = yaml_dir / "data"
        dev = write_jsonl(data / f"{name}_{subject}_dev.jsonl", mmlu_rows(folder / "dev" / f"{subject}_dev.csv", subject))
        rows = write_jsonl(data / f"{name}_{subject}_test.jsonl", mmlu_rows(test, subject))
        task = f"{name}_{subject}"
        yaml_file(yaml_dir, task, {
            "include": str(tasks_dir / "mmlu" / "default" / "_default_template_yaml"), "task": task,
            "dataset_path": "json", "dataset_name": None,
            "description": MMLU_DESCRIPTION.format(subject.replace("_", " ")),
            "dataset_kwargs": {"data_files": {"dev": str(dev), "test": str(rows)}}, "num_fewshot": shots})
        names.append(task)
    studio = {"lm_eval_task": name, "studio_task": "mmlu", "shots": shots,
              "options": {"path": str(folder), "num_fewshot": shots}}
    return [{"lm_eval_task": n} for n in names], studio


def parity_tasks(work: Path, tasks_dir: Path) -> tuple[Path, list[dict], dict[str, list[str]]]:
    """YAMLs and studio options over the shipped samples. Returns the lm-eval subtasks of each task."""
    yaml_dir = work / "parity-tasks"
    data = yaml_dir / "data"
    data.mkdir(parents=True, exist_ok=True)
    arc_test = write_jsonl(data / "arc_challenge_test.jsonl", flat_arc_rows(SAMPLES / "arc_challenge_sample.jsonl"))
    arc_train = write_jsonl(data / "arc_challenge_train.jsonl",
                            flat_arc_rows(SAMPLES / "arc_challenge_train_sample.jsonl"))
    tasks = [arc_task(yaml_dir, tasks_dir, "p_arc_challenge_25", arc_test, arc_train, 25),
             hellaswag_task(yaml_dir, tasks_dir, "p_hellaswag_10", SAMPLES / "hellaswag_sample.jsonl",
                            SAMPLES / "hellaswag_train_sample.jsonl", 10)]
    parts = {}
    for shots in (0, 5):
        subtasks, studio = mmlu_tasks(yaml_dir, tasks_dir, f"p_mmlu_{shots}", SAMPLES / "mmlu_sample", shots)
        parts[studio["lm_eval_task"]] = [t["lm_eval_task"] for t in subtasks]
        tasks.append(studio)
    for variant in ("mc1", "mc2"):
        tasks.append(truthfulqa_task(yaml_dir, tasks_dir, f"p_truthfulqa_{variant}", variant,
                                     SAMPLES / "truthfulqa_mc_sample.json"))
    tasks.append(gsm8k_task(yaml_dir, tasks_dir, "p_gsm8k_5", SAMPLES / "gsm8k_sample.jsonl",
                            SAMPLES / "gsm8k_train_sample.jsonl", 5))
    return yaml_dir, tasks, parts


def speed_tasks(work: Path, tasks_dir: Path, items: int) -> tuple[Path, list[dict], dict[str, list[str]]]:
    yaml_dir = work / "speed-tasks"
    data = yaml_dir / "data"
    data.mkdir(parents=True, exist_ok=True)
    words = Words(seed=2024)
    arc_test = write_jsonl(data / "arc_test.jsonl", generated_arc(words, items, "t"))
    arc_train = write_jsonl(data / "arc_train.jsonl", generated_arc(words, 60, "tr"))
    hs_val = write_jsonl(data / "hellaswag_val.jsonl", generated_hellaswag(words, items, 0))
    hs_train = write_jsonl(data / "hellaswag_train.jsonl", generated_hellaswag(words, 40, 10_000))
    mmlu = data / "mmlu"
    for subject in ("astronomy", "world_religions"):
        for split, n in (("test", items // 2), ("dev", 5)):
            (mmlu / split).mkdir(parents=True, exist_ok=True)
            with (mmlu / split / f"{subject}_{split}.csv").open("w", newline="", encoding="utf-8") as fh:
                csv.writer(fh).writerows(generated_mmlu(words, n))
    tasks = [arc_task(yaml_dir, tasks_dir, "s_arc_challenge_25", arc_test, arc_train, 25),
             hellaswag_task(yaml_dir, tasks_dir, "s_hellaswag_10", hs_val, hs_train, 10)]
    subtasks, studio = mmlu_tasks(yaml_dir, tasks_dir, "s_mmlu_5", mmlu, 5)
    tasks.append(studio)
    return yaml_dir, tasks, {"s_mmlu_5": [t["lm_eval_task"] for t in subtasks]}


# ---------------------------------------------------------------------------------------------------
# Models

def tuned_model(work: Path, steps: int, log) -> Path:
    """A LoRA SFT run on the embedded tiny model, merged into a plain folder lm-eval can load."""
    out = work / "tuned-merged"
    if (out / "config.json").is_file():
        return out
    workspace = work / "workspace"
    studio = [sys.executable, "-m", "studio"]
    env = {**os.environ, "STUDIO_WORKSPACE": str(workspace)}
    if not (workspace / "studio.yaml").is_file():
        subprocess.run([*studio, "init", str(workspace)], check=True, env=env, capture_output=True)
    log(f"training the tuned model: recipes/train-sft-lora.yaml, {steps} steps ...")
    # Few steps do not meet the recipe's learning checks; the bench needs a changed model, not a good one.
    proc = subprocess.run([*studio, "run", str(ROOT / "recipes" / "train-sft-lora.yaml"), f"training.max_steps={steps}",
                           f"training.save_steps={steps}", "expect=[]", "--quiet"],
                          env=env, capture_output=True, text=True, cwd=ROOT)
    final = re.search(r"model: (\S+)", proc.stdout)
    if proc.returncode != 0 or not final:
        raise SystemExit(f"the tuning run failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    subprocess.run([*studio, "model", "export", final.group(1), str(out)], check=True, env=env, capture_output=True)
    return out


# ---------------------------------------------------------------------------------------------------
# Running and comparing

def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               TRANSFORMERS_VERBOSITY="error", HF_HUB_DISABLE_PROGRESS_BARS="1")
    return env


def run_child(python: Path | str, flag: str, spec: dict, work: Path, tag: str, threads: int = 0) -> tuple[dict, dict]:
    """Runs one side in its own process: (its output, {"wall_s", "cpu_s"} of the whole process)."""
    spec_path, out_path = work / f"{tag}.spec.json", work / f"{tag}.out.json"
    spec_path.write_text(json.dumps(spec))
    env = child_env()
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    if flag == "--studio-child":
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "plugins")])
    else:
        env["HF_HOME"] = str(work / "hf")  # lm-eval's datasets cache, away from the user's
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run([str(python), str(Path(__file__).resolve()), flag, str(spec_path), str(out_path)],
                          env=env, capture_output=True, text=True, cwd=work)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{tag} failed:\n{proc.stderr[-4000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return json.loads(out_path.read_text()), {"wall_s": wall, "cpu_s": cpu}


def lm_eval_spec(model: Path, yaml_dir: Path, tasks: list[dict], parts: dict[str, list[str]], batch: int) -> dict:
    names = [{"lm_eval_task": n} for t in tasks for n in parts.get(t["lm_eval_task"], [t["lm_eval_task"]])]
    return {"model": str(model), "yaml_dir": str(yaml_dir), "tasks": names, "batch_size": batch}


def merged_reference(ref: dict, task: dict, parts: dict[str, list[str]]) -> dict:
    """lm-eval's samples of a task, its subject tasks concatenated in the studio's order (sorted subjects)."""
    names = parts.get(task["lm_eval_task"], [task["lm_eval_task"]])
    samples = [s for n in names for s in ref["tasks"][n]["samples"]]
    if len(names) == 1:
        return {"samples": samples, "metrics": ref["tasks"][names[0]]["metrics"]}
    # lm-eval's mmlu group: subject means weighted by subject size, i.e. the mean over all questions.
    acc = sum(s["metrics"]["acc"] for s in samples) / len(samples)
    return {"samples": samples, "metrics": {"acc": acc}}


def compare(task: dict, ours: dict, ref: dict) -> dict:
    """Per-item agreement (same prediction, same per-item metrics) and the aggregates side by side."""
    mine, theirs = ours["samples"], ref["samples"]
    if len(mine) != len(theirs):
        return {"task": task["lm_eval_task"], "error": f"{len(mine)} studio items vs {len(theirs)} lm-eval docs"}
    names = task.get("metric_names", {})
    agree, worst = 0, 0.0
    for a, b in zip(mine, theirs):
        if task.get("generated"):
            same_prediction = a["prediction"] == b["completion"] and \
                [a["extracted"]["strict"], a["extracted"]["flexible"]] == \
                [b["extracted"]["strict-match"], b["extracted"]["flexible-extract"]]
        else:
            lls = b["lls"]
            worst = max(worst, max(abs(x - y) for x, y in zip(a["scores"], lls)))
            same_prediction = a["prediction"] == lls.index(max(lls))
        same_metrics = all(abs(a["metrics"][names.get(k, k)] - v) <= 1e-4 for k, v in b["metrics"].items())
        agree += same_prediction and same_metrics
    metrics = {}
    for name, value in ref["metrics"].items():
        ours_name = names.get(name, name)
        if name.endswith("_stderr") or ours_name not in ours["metrics"]:
            continue
        metrics[ours_name] = {"studio": round(ours["metrics"][ours_name], 6), "lm_eval": round(value, 6),
                              "equal_4dp": round(ours["metrics"][ours_name], 4) == round(value, 4)}
    row = {"task": task["lm_eval_task"], "studio_task": task["studio_task"], "shots": task["shots"],
           "items": len(mine), "agreement": agree / len(mine), "metrics": metrics}
    if not task.get("generated"):
        row["max_abs_loglik_diff"] = worst
    return row


def run_parity(work: Path, lm_python: Path, tasks_dir: Path, models: dict[str, Path], batch: int, log) -> list[dict]:
    yaml_dir, tasks, parts = parity_tasks(work, tasks_dir)
    rows = []
    for label, model in models.items():
        log(f"parity on {label}: lm-eval ...")
        ref, _ = run_child(lm_python, "--lm-eval-child", lm_eval_spec(model, yaml_dir, tasks, parts, batch),
                           work, f"parity-{label}-lm-eval")
        log(f"parity on {label}: studio ...")
        ours, _ = run_child(sys.executable, "--studio-child",
                            {"model": str(model), "tasks": tasks, "batch_size": batch}, work, f"parity-{label}-studio")
        for task in tasks:
            row = compare(task, ours["tasks"][task["lm_eval_task"]], merged_reference(ref, task, parts))
            rows.append({"model": label, **row})
    return rows


def run_speed(work: Path, lm_python: Path, tasks_dir: Path, model: Path, items: int, batch: int, rounds: int,
              threads: int, log) -> list[dict]:
    """Each task run by each side in turn, ``rounds`` times; the fastest round of each side counts (the
    machine is shared, so the minimum is the least disturbed measurement)."""
    yaml_dir, tasks, parts = speed_tasks(work, tasks_dir, items)
    rows = []
    for task in tasks:
        name = task["lm_eval_task"]
        runs: dict[str, list[dict]] = {"lm_eval": [], "studio": []}
        for round_ in range(rounds):
            log(f"speed {name} (round {round_ + 1}/{rounds}): lm-eval ...")
            ref, ref_process = run_child(lm_python, "--lm-eval-child", lm_eval_spec(model, yaml_dir, [task], parts, batch),
                                         work, f"speed-{name}-lm-eval", threads)
            runs["lm_eval"].append({**ref_process, "scoring_s": ref["scoring"]["seconds"],
                                    "scoring_cpu_s": ref["scoring"]["cpu_seconds"]})
            log(f"speed {name} (round {round_ + 1}/{rounds}): studio ...")
            ours, our_process = run_child(sys.executable, "--studio-child",
                                          {"model": str(model), "tasks": [task], "batch_size": batch}, work,
                                          f"speed-{name}-studio", threads)
            runs["studio"].append({**our_process, "scoring_s": ours["scoring"]["seconds"],
                                   "scoring_cpu_s": ours["scoring"]["cpu_seconds"]})
        parity = compare(task, ours["tasks"][name], merged_reference(ref, task, parts))
        best = {side: {key: round(min(r[key] for r in side_runs), 2) for key in side_runs[0]}
                for side, side_runs in runs.items()}
        rows.append({
            "task": name, "shots": task["shots"], "items": parity.get("items"), "requests": ours["scoring"]["requests"],
            "lm_eval": best["lm_eval"], "studio": best["studio"], "rounds": runs,
            "ratios": {key: round(best["lm_eval"][key] / best["studio"][key], 2) for key in best["studio"]},
            "agreement": parity.get("agreement"), "max_abs_loglik_diff": parity.get("max_abs_loglik_diff")})
    return rows


def print_tables(result: dict) -> None:
    print("\nparity (studio vs lm-eval 0.4.13)")
    print(f"{'model':8} {'task':22} {'items':>5} {'agree':>6} {'max|dll|':>9}  metrics (studio / lm-eval)")
    for row in result["parity"]:
        if "error" in row:
            print(f"{row['model']:8} {row['task']:22} ERROR {row['error']}")
            continue
        shown = "  ".join(f"{k} {v['studio']:.4f}/{v['lm_eval']:.4f}{'' if v['equal_4dp'] else ' !'}"
                          for k, v in row["metrics"].items())
        worst = f"{row['max_abs_loglik_diff']:9.1e}" if "max_abs_loglik_diff" in row else f"{'-':>9}"
        print(f"{row['model']:8} {row['task']:22} {row['items']:5d} {row['agreement']:6.1%} {worst}  {shown}")
    print(f"\nspeed (embedded small, batch {result['batch_size']}, {result['machine']['cpus']} CPUs, threads per side: "
          f"{result['threads']}; best of {result['rounds']} round(s); ratio = lm-eval / studio)")
    print(f"{'task':20} {'reqs':>5} {'':>6} {'lm-eval':>9} {'studio':>9} {'ratio':>6}")
    for row in result["speed"]:
        for key, label in (("wall_s", "wall"), ("cpu_s", "cpu"), ("scoring_s", "score"),
                           ("scoring_cpu_s", "scorecpu")):
            head = f"{row['task']:20} {row['requests']:5d}" if key == "wall_s" else " " * 26
            print(f"{head} {label:>8} {row['lm_eval'][key]:8.1f}s {row['studio'][key]:8.1f}s {row['ratios'][key]:6.2f}")
        print(f"{'':26} agreement {row['agreement']:.1%}, max |dll| {row['max_abs_loglik_diff']:.1e}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer items and training steps: a few minutes")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "eval.json"))
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=None, help="timing rounds per side (default: 1 quick, 2 full)")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads of each side in the timing runs (0: torch's default). One keeps a shared "
                             "machine's numbers steady: threads waiting on descheduled siblings burn time")
    parser.add_argument("--work", default=None, help="working folder (default: a fresh one beside --out)")
    parser.add_argument("--skip", choices=("parity", "speed"), action="append", default=[])
    parser.add_argument("--lm-eval-python", default=None,
                        help="python of an installed lm-eval 0.4.13 venv (default: bench/envs, made on first use)")
    args = parser.parse_args(argv)

    from studio.models.embedded import ensure_embedded_model

    sys.path.insert(0, str(ROOT / "bench"))
    from reference_env import lm_eval_python

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    out = Path(args.out)
    work = Path(args.work) if args.work else out.parent / "eval-work"
    if not args.work and work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    lm_python = Path(args.lm_eval_python) if args.lm_eval_python else lm_eval_python(log=log)
    tasks_dir = installed_tasks_dir(lm_python)
    result: dict = {"quick": args.quick, "batch_size": args.batch_size, "parity": [], "speed": [],
                    "rounds": args.rounds or (1 if args.quick else 2), "threads": args.threads or "torch default",
                    "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                "python": platform.python_version()},
                    "command": " ".join([Path(sys.executable).name, *sys.argv])}
    if "parity" not in args.skip:
        tiny = ensure_embedded_model("tiny")
        tuned = tuned_model(work, 8 if args.quick else 40, log)
        result["tuned_model"] = "LoRA SFT on embedded tiny (recipes/train-sft-lora.yaml), merged by `studio model export`"
        result["parity"] = run_parity(work, lm_python, tasks_dir, {"tiny": tiny, "tuned": tuned}, args.batch_size, log)
    if "speed" not in args.skip:
        small = ensure_embedded_model("small")
        result["speed"] = run_speed(work, lm_python, tasks_dir, small, 24 if args.quick else 100, args.batch_size,
                                    result["rounds"], args.threads, log)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print_tables(result)
    print(f"\nwritten: {out}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--lm-eval-child":
        lm_eval_child(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 4 and sys.argv[1] == "--studio-child":
        studio_child(sys.argv[2], sys.argv[3])
    else:
        sys.exit(main())
