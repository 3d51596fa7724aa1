"""Benchmark: lm-eval 0.4.13 evaluating a model through `studio serve` agrees with the studio's own evaluation.

In the same run, on the same ARC-shaped multiple-choice file and the same model (the embedded tiny
model by default):

- **studio**: the studio's ``arc_challenge`` evaluator, scoring in this process;
- **lm-eval via studio serve**: lm-eval's ``local-completions`` model (its isolated venv,
  ``bench/reference_env.py``) talking to a ``studio serve`` subprocess on 127.0.0.1: prompts as
  token ids, ``echo: true, logprobs: 1, max_tokens: 1``, log-likelihoods read from the echoed
  ``token_logprobs``;
- **lm-eval hf**: lm-eval's own ``hf`` back-end on the same model folder (the usual reference).

lm-eval reads the file through a local task YAML that includes its installed ``arc_easy.yaml``
(its prompt, choices and metrics) and only swaps the data. ``local-completions`` gets
``add_bos_token=True``: lm-eval's API models leave the BOS token out by default, while its ``hf``
back-end (and the studio) use the tokenizer's own rule, which adds it for this model.

It also checks that lm-eval's ``tokenizer_backend=auto`` finds the server's tokenizer endpoints
(``/tokenizer_info``, ``/tokenize``, ``/detokenize``) and that they encode and decode the questions
as the model folder's tokenizer does.

It prints one row per item (gold answer, each side's prediction, whether acc and acc_norm agree,
the largest log-likelihood difference) and the totals, and writes bench/results/eval_serve.json.

    .venv/bin/python bench/bench_eval_serve.py [--fewshot 0] [--limit N] [--batch-size 8] [--model embedded]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "plugins")]

from bench.reference_env import lm_eval_python  # noqa: E402
from studio.evaluation.base import EvalContext  # noqa: E402
from studio.evaluation.models import open_model  # noqa: E402
from studio.models.embedded import ensure_embedded_model  # noqa: E402
from studio.models.loading import embedded_size, resolve_model_ref  # noqa: E402
from studio.serving.launch import start_background_server  # noqa: E402
from studio_eval_choice.tasks import ArcChallenge  # noqa: E402

SAMPLE = ROOT / "datasets" / "eval" / "arc_challenge_sample.jsonl"
TASK = "serve_arc"
AGREE = 1e-4  # log-likelihoods of one choice, studio vs lm-eval through the server

# Runs inside lm-eval's venv: one simple_evaluate per model, per-document results out as JSON.
LM_EVAL_SCRIPT = """
import json, logging, sys, time
logging.disable(logging.WARNING)
from lm_eval import simple_evaluate
from lm_eval.tasks import TaskManager

job = json.loads(sys.argv[1])
manager = TaskManager(include_defaults=False, include_path=job["folder"])
out = {}
for label, model, args in job["runs"]:
    started = time.perf_counter()
    result = simple_evaluate(model=model, model_args=args, tasks=[job["task"]], task_manager=manager,
                             num_fewshot=job["fewshot"], limit=job["limit"], batch_size=job["batch_size"],
                             device="cpu", bootstrap_iters=0, log_samples=True)
    seconds = time.perf_counter() - started
    samples = result["samples"][job["task"]]
    out[label] = {"seconds": seconds, "items": [
        {"id": s["doc"]["id"], "gold": int(s["target"]), "loglikelihoods": [float(r[0]) for r in s["filtered_resps"]],
         "acc": float(s["acc"]), "acc_norm": float(s["acc_norm"])} for s in samples]}

# tokenizer_backend=auto (local-completions' default) picks the server's tokenizer when it answers.
from lm_eval.utils import RemoteTokenizer, check_remote_tokenizer_support
from transformers import AutoTokenizer
detected = check_remote_tokenizer_support(job["base_url"])
remote, local = RemoteTokenizer(job["base_url"]), AutoTokenizer.from_pretrained(job["tokenizer"])
texts = job["texts"]
same = sum(remote.encode(t) == local(t, add_special_tokens=False)["input_ids"] and remote.decode(remote.encode(t)) == t
           for t in texts)
out["remote_tokenizer"] = {"detected": detected, "texts": len(texts), "encoded_and_decoded_alike": same}
print("RESULT " + json.dumps(out))
"""


def flat_arc(source: Path, target: Path) -> Path:
    """AI2's nested ARC rows -> the Hugging Face rows lm-eval's ARC template reads (the studio reads both)."""
    with source.open(encoding="utf-8") as rows, target.open("w", encoding="utf-8") as out:
        for line in rows:
            if not line.strip():
                continue
            row = json.loads(line)
            choices = row["question"]["choices"]
            out.write(json.dumps({"id": row["id"], "question": row["question"]["stem"], "answerKey": row["answerKey"],
                                  "choices": {"text": [c["text"] for c in choices],
                                              "label": [c["label"] for c in choices]}}) + "\n")
    return target


def task_yaml(folder: Path, python: Path, data: Path, fewshot: int) -> None:
    installed = subprocess.run([str(python), "-c", "import lm_eval, os; print(os.path.dirname(lm_eval.__file__))"],
                               capture_output=True, text=True, check=True).stdout.strip()
    body = {"include": str(Path(installed, "tasks", "arc", "arc_easy.yaml")), "task": TASK, "tag": [],
            "dataset_path": "json", "dataset_name": None, "dataset_kwargs": {"data_files": {"test": str(data)}},
            "training_split": None, "validation_split": None, "test_split": "test"}
    if fewshot:
        body["fewshot_split"] = "test"  # examples from the file itself, each item left out of its own
    (folder / f"{TASK}.yaml").write_text(json.dumps(body))  # JSON is YAML


def studio_eval(model_dir: str, data: Path, fewshot: int, limit: int | None, batch_size: int) -> dict:
    evaluator = ArcChallenge()
    config = evaluator.config_model(path=str(data), num_fewshot=fewshot, fewshot_from=str(data) if fewshot else None)
    items = evaluator.load(config)[:limit]
    started = time.perf_counter()
    samples = evaluator.score(EvalContext(model=open_model(model_dir), config=config, batch_size=batch_size,
                                          task=evaluator.name), items)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "items": [
        {"id": s["id"], "gold": s["target"], "loglikelihoods": s["scores"], **s["metrics"]} for s in samples]}


def lm_eval_env(folder: Path, extra_path: Path | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHONPATH", "STUDIO_"))}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               HF_HOME=str(folder / "hf"), TRANSFORMERS_VERBOSITY="error")
    if extra_path is not None:
        env["PYTHONPATH"] = str(extra_path)
    return env


def check_api_extra(python: Path, env: dict[str, str]) -> None:
    # lm-eval's API models need its "api" extra; a venv made with "lm-eval[hf]" alone lacks tenacity.
    probe = subprocess.run([str(python), "-c", "import aiohttp, requests, tenacity, tqdm"], capture_output=True,
                           text=True, env=env)
    if probe.returncode != 0:
        sys.exit(f"{python} cannot run lm-eval's local-completions: {probe.stderr.strip().splitlines()[-1]}\n"
                 "install lm-eval's api extra there (lm-eval[hf,api]==0.4.13), or put the missing packages in a "
                 "folder (pip install --target DIR tenacity) and pass --lm-eval-extra-path DIR")


def lm_eval_runs(python: Path, env: dict[str, str], folder: Path, runs: list, fewshot: int, limit: int | None,
                 batch_size: int, base_url: str, tokenizer: str, texts: list[str]) -> dict:
    job = {"folder": str(folder), "task": TASK, "runs": runs, "fewshot": fewshot, "limit": limit,
           "batch_size": batch_size, "base_url": base_url, "tokenizer": tokenizer, "texts": texts}
    proc = subprocess.run([str(python), "-c", textwrap.dedent(LM_EVAL_SCRIPT), json.dumps(job)], capture_output=True,
                          text=True, env=env, cwd=folder, timeout=1800)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        sys.exit(f"lm-eval failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(lines[-1].removeprefix("RESULT "))


def argmax(values: list[float]) -> int:
    return max(range(len(values)), key=lambda i: (values[i], -i))  # the first of equals, like numpy


def mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def compare(sides: dict[str, dict]) -> tuple[list[dict], dict]:
    by_id = {name: {item["id"]: item for item in side["items"]} for name, side in sides.items()}
    studio = by_id["studio"]
    rows = []
    for item_id, ours in studio.items():
        row = {"id": item_id, "gold": ours["gold"]}
        for name, items in by_id.items():
            theirs = items.get(item_id)
            if theirs is None:
                sys.exit(f"{name} has no result for item {item_id}")
            row[name] = {"prediction": argmax(theirs["loglikelihoods"]), "acc": theirs["acc"],
                         "acc_norm": theirs["acc_norm"], "loglikelihoods": theirs["loglikelihoods"]}
            if name != "studio":
                row[name]["max_abs_diff"] = max(abs(a - b) for a, b in zip(theirs["loglikelihoods"],
                                                                           ours["loglikelihoods"]))
                row[name]["agrees"] = (row[name]["prediction"] == row["studio"]["prediction"]
                                       and theirs["acc"] == ours["acc"] and theirs["acc_norm"] == ours["acc_norm"]
                                       and row[name]["max_abs_diff"] < AGREE)
        rows.append(row)
    summary = {}
    for name, side in sides.items():
        summary[name] = {"acc": mean([r[name]["acc"] for r in rows]),
                         "acc_norm": mean([r[name]["acc_norm"] for r in rows]), "seconds": round(side["seconds"], 2)}
        if name != "studio":
            summary[name]["items_agreeing"] = sum(r[name]["agrees"] for r in rows)
            summary[name]["max_abs_loglikelihood_diff"] = max(r[name]["max_abs_diff"] for r in rows)
    return rows, summary


def print_table(rows: list[dict], summary: dict, names: list[str]) -> None:
    short = {"studio": "studio", "lm_eval_serve": "serve", "lm_eval_hf": "hf"}
    header = f"{'item':<18} {'gold':>4} " + " ".join(f"{short[n] + ' pred':>11}" for n in names)
    header += " " + " ".join(f"{short[n] + ' |dll|':>12} {'agree':>5}" for n in names[1:])
    print(header)
    print("-" * len(header))
    for row in rows:
        line = f"{row['id']:<18} {row['gold']:>4} " + " ".join(f"{row[n]['prediction']:>11}" for n in names)
        line += " " + " ".join(f"{row[n]['max_abs_diff']:>12.2e} {'yes' if row[n]['agrees'] else 'NO':>5}"
                               for n in names[1:])
        print(line)
    print()
    print(f"{'':<26}{'acc':>8}{'acc_norm':>10}{'agreeing':>10}{'max |dll|':>11}{'seconds':>9}  (seconds: scoring, "
          "model load included)")
    for name in names:
        s = summary[name]
        agreeing = f"{s['items_agreeing']}/{len(rows)}" if "items_agreeing" in s else "-"
        diff = f"{s['max_abs_loglikelihood_diff']:.1e}" if "max_abs_loglikelihood_diff" in s else "-"
        print(f"{name:<26}{s['acc']:>8.3f}{s['acc_norm']:>10.3f}{agreeing:>10}{diff:>11}{s['seconds']:>9.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="embedded", help="a model the studio resolves (default: the embedded tiny)")
    parser.add_argument("--data", type=Path, default=SAMPLE, help="ARC JSONL (AI2's nested rows)")
    parser.add_argument("--fewshot", type=int, default=0, help="solved examples before each question")
    parser.add_argument("--limit", type=int, default=None, help="score only the first N items")
    parser.add_argument("--batch-size", type=int, default=8, help="lm-eval's batch size (prompts per request)")
    parser.add_argument("--no-hf", action="store_true", help="leave out lm-eval's own hf back-end")
    parser.add_argument("--lm-eval-extra-path", type=Path, default=None,
                        help="a folder put on lm-eval's sys.path, for packages its venv lacks")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "eval_serve.json")
    args = parser.parse_args()

    size = embedded_size(args.model)
    model_dir = str(ensure_embedded_model(size) if size else resolve_model_ref(args.model))
    config = json.loads(Path(model_dir, "config.json").read_text())
    window = int(config.get("max_position_embeddings") or 2048)
    python = lm_eval_python()
    with tempfile.TemporaryDirectory(prefix="bench-eval-serve-") as tmp:
        folder = Path(tmp)
        data = flat_arc(args.data, folder / "arc_test.jsonl")
        task_yaml(folder, python, data, args.fewshot)
        env = lm_eval_env(folder, args.lm_eval_extra_path)
        check_api_extra(python, env)
        print(f"model {model_dir}\ndata {args.data} ({args.fewshot}-shot)\n")
        sides = {"studio": studio_eval(model_dir, data, args.fewshot, args.limit, args.batch_size)}
        with start_background_server(model_dir) as server:
            runs = [["lm_eval_serve", "local-completions", {
                "base_url": f"{server.base_url}/completions", "model": server.model_name, "tokenizer": model_dir,
                "tokenizer_backend": "huggingface", "tokenized_requests": True, "add_bos_token": True,
                "max_length": window, "num_concurrent": 1, "max_retries": 1}]]
            if not args.no_hf:
                runs.append(["lm_eval_hf", "hf", {"pretrained": model_dir, "dtype": "float32"}])
            texts = [row["question"] for row in map(json.loads, data.read_text().splitlines())][:args.limit]
            sides.update(lm_eval_runs(python, env, folder, runs, args.fewshot, args.limit, args.batch_size,
                                      runs[0][2]["base_url"], model_dir, texts))
            remote = sides.pop("remote_tokenizer")
            answered = [float(ms) for ms in re.findall(r"POST /v1/completions 200 (\d+)ms", server.logs())]
    requests_served, server_seconds = len(answered), sum(answered) / 1000
    names = list(sides)
    rows, summary = compare(sides)
    print_table(rows, summary, names)
    print(f"\nstudio serve answered {requests_served} /v1/completions requests in {server_seconds:.2f} s")
    print(f"lm-eval's tokenizer_backend=auto finds the server's tokenizer: {'yes' if remote['detected'] else 'NO'}; "
          f"it encodes and decodes {remote['encoded_and_decoded_alike']}/{remote['texts']} questions as the "
          f"model folder's tokenizer does")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"model": model_dir, "data": str(args.data), "fewshot": args.fewshot,
                                    "batch_size": args.batch_size, "tolerance": AGREE,
                                    "requests_served": requests_served,
                                    "server_seconds": round(server_seconds, 2), "remote_tokenizer": remote,
                                    "summary": summary, "items": rows}, indent=2))
    print(f"wrote {args.out}")
    agreeing = all(summary[n]["items_agreeing"] == len(rows) for n in names if n != "studio")
    remote_ok = remote["detected"] and remote["encoded_and_decoded_alike"] == remote["texts"]
    return 0 if agreeing and remote_ok else 1


if __name__ == "__main__":
    sys.exit(main())
