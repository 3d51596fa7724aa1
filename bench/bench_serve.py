"""Benchmark: `studio serve` answering 16 chat requests at once against the same 16 one at a time.

In one run, against one `studio serve` subprocess on 127.0.0.1 (the embedded *small* model by
default), over real HTTP:

- **one at a time**: each request is sent when the previous answer is back (every generation runs
  alone, a batch of one);
- **concurrent**: all requests are sent together, from one thread each; the server batches them.

Both use greedy decoding (temperature 0) on the same prompts (questions of different lengths), so
their answers should be identical: the benchmark counts the ones that differ (goal 0). It reports
each mode's throughput (completion tokens per second of wall time), the concurrent/one-at-a-time
ratio (goal >= 5x), p50 and p95 request latency, and the server's /metrics after the run, and
writes bench/results/serve.json.

The machine may be shared: absolute figures move with its load, the ratio much less (both modes
run in the same minute on the same server); report the ratio and say what else was running.

    .venv/bin/python bench/bench_serve.py [--model embedded:small] [--requests 16] [--max-tokens 64]
                                          [--threads N] [--max-batch 16]
"""
from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "plugins")]

from studio.serving.launch import start_background_server  # noqa: E402

QUESTIONS = [
    "Hi.",
    "What is two plus two?",
    "Name a fruit that is yellow.",
    "Give me three colours.",
    "Write a short greeting for a friend who has just moved to a new city.",
    "What does a tokenizer do?",
    "How do I make tea? Explain each step, from boiling the water to adding milk or lemon.",
    "Is the sun a star?",
    "Summarise: The cat sat on the mat all afternoon, watching the birds in the garden outside.",
    "Translate 'thank you' into French.",
    "List two uses of a dataset.",
    "What can the studio do with a dataset of conversations, and how would I start?",
    "Tell me a story about a robot who learns to paint.",
    "Why is the sky blue?",
    "Describe a rainy day in a few words.",
    "What is a language model, and what is it trained on? Answer in two sentences.",
]


def chat(base_url: str, model: str, question: str, max_tokens: int) -> dict:
    """One chat request over a fresh HTTP connection: its answer, token count and latency."""
    url = urlsplit(base_url)
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": question}],
                       "temperature": 0, "max_tokens": max_tokens})
    started = time.perf_counter()
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=600)
    try:
        connection.request("POST", url.path + "/chat/completions", body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        data = json.loads(response.read())
    finally:
        connection.close()
    if response.status != 200:
        raise RuntimeError(f"HTTP {response.status}: {data}")
    return {"text": data["choices"][0]["message"]["content"], "finish_reason": data["choices"][0]["finish_reason"],
            "tokens": data["usage"]["completion_tokens"], "seconds": time.perf_counter() - started}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def summary(answers: list[dict], wall: float) -> dict:
    tokens = sum(a["tokens"] for a in answers)
    latencies = [a["seconds"] for a in answers]
    return {"wall_s": round(wall, 3), "completion_tokens": tokens, "tokens_per_s": round(tokens / wall, 2),
            "p50_latency_s": round(statistics.median(latencies), 3),
            "p95_latency_s": round(percentile(latencies, 0.95), 3)}


def one_at_a_time(base_url: str, model: str, questions: list[str], max_tokens: int) -> tuple[list[dict], float]:
    started = time.perf_counter()
    answers = [chat(base_url, model, q, max_tokens) for q in questions]
    return answers, time.perf_counter() - started


def concurrent(base_url: str, model: str, questions: list[str], max_tokens: int) -> tuple[list[dict], float]:
    answers: list[dict | None] = [None] * len(questions)
    errors: list[BaseException] = []
    gate = threading.Barrier(len(questions) + 1)

    def worker(i: int) -> None:
        gate.wait()
        try:
            answers[i] = chat(base_url, model, questions[i], max_tokens)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(questions))]
    for thread in threads:
        thread.start()
    gate.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    if errors:
        raise RuntimeError(f"{len(errors)} concurrent requests failed; first: {errors[0]}")
    return answers, wall


def metrics(base_url: str) -> dict[str, float]:
    url = urlsplit(base_url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    try:
        connection.request("GET", "/metrics")
        text = connection.getresponse().read().decode()
    finally:
        connection.close()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="embedded:small",
                        help="what `studio serve` serves (default: embedded:small)")
    parser.add_argument("--requests", type=int, default=16, help="requests per mode (prompts repeat past 16)")
    parser.add_argument("--max-tokens", type=int, default=64, help="completion tokens per request, at most")
    parser.add_argument("--threads", type=int, default=None, help="the server's torch threads (default: its own)")
    parser.add_argument("--max-batch", type=int, default=None, help="the server's --max-batch (default: its own)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "serve.json")
    args = parser.parse_args()

    questions = [QUESTIONS[i % len(QUESTIONS)] for i in range(args.requests)]
    options = []
    if args.threads:
        options += ["--threads", str(args.threads)]
    if args.max_batch:
        options += ["--max-batch", str(args.max_batch)]
    with start_background_server(args.model, options=options, timeout=900) as server:
        chat(server.base_url, server.model_name, "Warm up.", 4)  # first-use costs stay out of both timings
        alone, alone_wall = one_at_a_time(server.base_url, server.model_name, questions, args.max_tokens)
        together, together_wall = concurrent(server.base_url, server.model_name, questions, args.max_tokens)
        after = metrics(server.base_url)
    differ = [i for i, (a, b) in enumerate(zip(alone, together))
              if (a["text"], a["tokens"]) != (b["text"], b["tokens"])]
    rows = {"one_at_a_time": summary(alone, alone_wall), "concurrent": summary(together, together_wall)}
    ratio = rows["concurrent"]["tokens_per_s"] / rows["one_at_a_time"]["tokens_per_s"]
    result = {"model": args.model, "requests": args.requests, "max_tokens": args.max_tokens,
              "server_options": options, **rows, "throughput_ratio": round(ratio, 2),
              "outputs_differing": len(differ), "differing_requests": differ,
              "finish_reasons": sorted({a["finish_reason"] for a in alone}), "server_metrics": after}
    print(f"{'mode':<14} {'wall s':>8} {'tokens':>7} {'tok/s':>8} {'p50 s':>7} {'p95 s':>7}")
    for mode, row in rows.items():
        print(f"{mode:<14} {row['wall_s']:>8} {row['completion_tokens']:>7} {row['tokens_per_s']:>8} "
              f"{row['p50_latency_s']:>7} {row['p95_latency_s']:>7}")
    print(f"throughput, concurrent / one at a time: {ratio:.2f}x (goal >= 5x)")
    print(f"outputs differing between the modes: {len(differ)} of {args.requests} (goal 0)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
