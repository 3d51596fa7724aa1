"""Benchmark: generation throughput against a loopback OpenAI-compatible server with a fixed
latency and a concurrency cap (capacity = cap / latency requests per second; requests beyond
the cap get 429 with Retry-After, like a real provider's limit).

In the same run, the same prompts go through:
- a plain sequential client (``openai.OpenAI``, one request after another);
- a batch ``asyncio.gather`` client (``openai.AsyncOpenAI``, every request at once, the client's
  own retries handling the 429s);
- the same client under an ``asyncio.Semaphore`` of the cap (a careful hand-written script, with
  no journal, no records and no storage);
- the studio's ``responses`` generator through ``run_generation`` (journal, records, storage
  included), told the cap (concurrency = cap), and not told it (concurrency 4x the cap, so the
  limiter's slow start has to find it).

Each reports requests/second as a fraction of the server's capacity and the 429s it caused.
Goals: the studio at >= 95% of capacity when told the cap, >= 85% when not. The fractions are
against the server's own capacity in the same run, but a loaded machine lowers every client's
(the server shares its CPUs): ``--rounds`` repeats the studio sides and reports each run.

    .venv/bin/python bench/bench_generate.py [--requests 600] [--latency 0.2] [--cap 16] [--rounds 1]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def start_server(latency: float, cap: int, log: Path) -> tuple[subprocess.Popen, str]:
    # A separate process, so the server's threads don't share a GIL with the client measured.
    # It also stops when its stdin closes, which works even where signals are ignored.
    proc = subprocess.Popen([sys.executable, "-m", "studio.serving.scripted", "--latency", str(latency),
                             "--max-concurrency", str(cap), "--retry-after", str(latency), "--log", str(log),
                             "--exit-with-stdin"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    line = proc.stdout.readline()
    if " at " not in line:
        stop_server(proc, log)
        raise RuntimeError(f"the scripted server did not start (exit status {proc.returncode})")
    return proc, line.rsplit(" at ", 1)[1].strip()


def stop_server(proc: subprocess.Popen, log: Path) -> list[dict]:
    """Stop the server (stdin closed, then SIGINT, SIGTERM, SIGKILL, each waited on for a bounded
    time), reap it, and read the request log it writes on the way out."""
    from studio.serving.processes import stop_process

    how = stop_process(proc, before=proc.stdin.close, wait=10.0)
    if how not in ("exited", "SIGINT"):
        print(f"warning: the scripted server needed {how} to stop; its log may be missing", file=sys.stderr)
    proc.stdout.close()
    return [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []


def prompts(n: int, tag: str) -> list[str]:
    return [f"{tag} question {i}: explain item {i} briefly" for i in range(n)]


def sequential(url: str, items: list[str]) -> dict:
    from openai import OpenAI

    client = OpenAI(base_url=url, api_key="bench")
    start = time.perf_counter()
    for p in items:
        client.chat.completions.create(model="m", max_tokens=32, messages=[{"role": "user", "content": p}])
    return {"seconds": time.perf_counter() - start, "done": len(items)}


def gather_all(url: str, items: list[str]) -> dict:
    from openai import AsyncOpenAI

    async def main():
        client = AsyncOpenAI(base_url=url, api_key="bench")
        start = time.perf_counter()
        results = await asyncio.gather(*(client.chat.completions.create(
            model="m", max_tokens=32, messages=[{"role": "user", "content": p}]) for p in items),
            return_exceptions=True)
        seconds = time.perf_counter() - start
        await client.close()
        failed = [r for r in results if isinstance(r, Exception)]
        return {"seconds": seconds, "done": len(items) - len(failed), "failed": len(failed)}

    return asyncio.run(main())


def bounded(url: str, items: list[str], limit: int) -> dict:
    """What a careful hand-written script does: AsyncOpenAI under a semaphore of the cap."""
    from openai import AsyncOpenAI

    async def main():
        client = AsyncOpenAI(base_url=url, api_key="bench")
        gate = asyncio.Semaphore(limit)

        async def one(p):
            async with gate:
                return await client.chat.completions.create(model="m", max_tokens=32,
                                                            messages=[{"role": "user", "content": p}])

        start = time.perf_counter()
        results = await asyncio.gather(*(one(p) for p in items), return_exceptions=True)
        seconds = time.perf_counter() - start
        await client.close()
        failed = [r for r in results if isinstance(r, Exception)]
        return {"seconds": seconds, "done": len(items) - len(failed), "failed": len(failed)}

    return asyncio.run(main())


def studio(url: str, items: list[str], concurrency: int, work: Path) -> dict:
    from studio.generation.runner import run_generation
    from studio.recipes.generate import GenerationRecipe
    from studio.records import Record, Turn
    from studio.store import Workspace

    ws = Workspace.init(work / f"ws-{concurrency}")  # a fresh journal: every request is sent
    ws.write_version("prompts", [Record([Turn("user", p)]) for p in items], operation={"op": "bench"})
    recipe = GenerationRecipe(generator="responses", seed_dataset="prompts", output="answers",
                              provider={"name": "bench", "base_url": url, "model": "m", "concurrency": concurrency},
                              config={"max_tokens": 32})
    start = time.perf_counter()
    summary = run_generation(ws, recipe)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "done": summary.rows, "failed": summary.failed_rows, "status": summary.status,
            "startup_excluded": False}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument("--sequential-requests", type=int, default=40, help="the sequential client is slow; fewer")
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--cap", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=1, help="runs of each studio side (the machine's load varies)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "generate.json"))
    args = parser.parse_args()
    capacity = args.cap / args.latency
    from studio.plugins import get_host

    get_host().items("generator")  # load plugins once, outside every measurement
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        sides = [
            ("sequential openai client", lambda url, items: sequential(url, items), args.sequential_requests),
            ("asyncio.gather, all at once", lambda url, items: gather_all(url, items), args.requests),
            (f"asyncio + semaphore({args.cap})", lambda url, items: bounded(url, items, args.cap), args.requests),
        ]
        for r in range(args.rounds):
            sides += [
                (f"studio, concurrency {args.cap} (cap known)",
                 lambda url, items, r=r: studio(url, items, args.cap, work / f"round-{r}"), args.requests),
                (f"studio, concurrency {args.cap * 4} (cap unknown)",
                 lambda url, items, r=r: studio(url, items, args.cap * 4, work / f"round-{r}"), args.requests),
            ]
        for i, (name, fn, n) in enumerate(sides):
            log = work / f"log-{i}.jsonl"
            proc, url = start_server(args.latency, args.cap, log)
            try:
                result = fn(url, prompts(n, f"side{i}"))
            finally:
                entries = stop_server(proc, log)
            throttled = sum(1 for e in entries if e["status"] == 429)
            # Achieved rate while requests flowed (first arrival to last answer at the server), so
            # one-off start-up (imports, plugin loading, storing the dataset) doesn't count.
            span = max(e["end"] for e in entries) - min(e["time"] for e in entries)
            rps = result["done"] / span
            # Busy share of the server's slots: time spent serving answered requests over
            # cap x span. Unlike rps / nominal capacity it doesn't charge the client for the
            # server's own per-request overhead beyond the fixed latency.
            busy = sum(e["end"] - e["time"] for e in entries if e["status"] == 200)
            utilisation = busy / (args.cap * span)
            rows.append({"client": name, "requests": n, "done": result["done"], "failed": result.get("failed", 0),
                         "seconds": round(result["seconds"], 3), "serving_seconds": round(span, 3), "requests_per_s": round(rps, 2),
                         "fraction_of_capacity": round(rps / capacity, 3), "slot_utilisation": round(utilisation, 3), "http_429": throttled,
                         "http_requests": len(entries)})
    print(f"server: latency {args.latency:g} s, cap {args.cap} concurrent -> capacity {capacity:g} req/s")
    print(f"{'client':<34} {'done':>6} {'req/s':>8} {'of capacity':>12} {'slots busy':>11} {'429s':>6} {'HTTP requests':>14}")
    for r in rows:
        print(f"{r['client']:<34} {r['done']:>6} {r['requests_per_s']:>8.1f} {r['fraction_of_capacity']:>11.1%} "
              f"{r['slot_utilisation']:>10.1%} {r['http_429']:>6} {r['http_requests']:>14}")
    for name, goal in ((f"studio, concurrency {args.cap} (cap known)", 0.95),
                       (f"studio, concurrency {args.cap * 4} (cap unknown)", 0.85)):
        runs = [r for r in rows if r["client"] == name]
        fractions = ", ".join(f"{r['fraction_of_capacity']:.1%}" for r in runs)
        throttled = ", ".join(str(r["http_429"]) for r in runs)
        print(f"{name}: {fractions} of capacity (goal {goal:.0%}); 429s: {throttled}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"latency": args.latency, "cap": args.cap, "capacity": capacity, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
