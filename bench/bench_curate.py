"""Benchmark: exact dedup + heuristic filters over 1,000,000 records through the studio's
curation pipeline, against the script a user would otherwise write with Hugging Face
`datasets` (map a normalised hash, drop repeats, filter refusals and short answers), in the
same run. Each side runs in its own process; peak memory is the summed RSS of that process and
its workers, sampled every 0.1 s.

    .venv/bin/python bench/bench_curate.py [--records 1000000] [--out bench/results/curate.json]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORDS = ("model data prompt answer token train align reward policy gradient sample value loss batch "
         "layer adapter review filter split label chosen rejected system user river mountain city "
         "garden music letter window paper coffee").split()
REFUSAL = "I'm sorry, but I cannot help with that request."

STUDIO_SIDE = r"""
import json, sys, time
from pathlib import Path
from studio.curation.pipeline import run_pipeline
from studio.recipes import load_recipe
from studio.plugins import get_host
from studio.store import Workspace
ws = Workspace(Path(sys.argv[1]))
recipe = load_recipe({"dataset": "bench", "output": "bench-clean", "steps": [
    {"op": "exact_dedup", "part": "all"},
    {"op": "refusal_filter"},
    {"op": "length_filter", "part": "response", "min_words": 3},
]})
start = time.perf_counter()
result = run_pipeline(ws, recipe, get_host().items("curation_op"))
print(json.dumps({"seconds": time.perf_counter() - start, "out": result.version.num_records,
                  "steps": [s.to_dict() for s in result.steps]}))
"""

BASELINE_SIDE = r"""
import json, re, sys, time, unicodedata
import datasets, xxhash
path = sys.argv[1]
start = time.perf_counter()
ds = datasets.Dataset.from_file(path)
def key(batch):
    out = []
    for messages in batch["messages"]:
        text = "\n".join(t["content"] for t in messages)
        text = " ".join(unicodedata.normalize("NFKC", text).lower().split())
        out.append(xxhash.xxh64_hexdigest(text.encode()))
    return {"key": out}
ds = ds.map(key, batched=True, num_proc=2, cache_file_name=sys.argv[2] + "/keys.arrow")
seen = set()
first = []
for k in ds["key"]:
    first.append(k not in seen)
    seen.add(k)
ds = ds.select([i for i, f in enumerate(first) if f])
refusal = re.compile(r"I'm sorry, but I cannot|As an AI language model|I cannot fulfill", re.I)
def good(batch):
    keep = []
    for messages in batch["messages"]:
        answer = messages[-1]["content"]
        keep.append(not refusal.search(answer) and len(answer.split()) >= 3)
    return keep
ds = ds.filter(good, batched=True, num_proc=2, cache_file_name=sys.argv[2] + "/filtered.arrow")
print(json.dumps({"seconds": time.perf_counter() - start, "out": len(ds)}))
"""


def make_records(n: int):
    from studio.records import Record, Turn

    rng = random.Random(0)
    uniques = []
    for i in range(n):
        roll = rng.random()
        if roll < 0.10 and uniques:  # an exact duplicate, differing in case and spacing
            q, a = rng.choice(uniques)
            yield Record([Turn("user", "  " + q.upper()), Turn("assistant", a)])
            continue
        q = f"Question {i}: " + " ".join(rng.choices(WORDS, k=14))
        if roll < 0.12:
            a = REFUSAL
        elif roll < 0.14:
            a = "Yes."
        else:
            a = " ".join(rng.choices(WORDS, k=40))
        if len(uniques) < 50_000:
            uniques.append((q, a))
        yield Record([Turn("user", q), Turn("assistant", a)])


def measure(cmd: list[str], env: dict[str, str]) -> dict:
    import psutil

    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    ps = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        try:
            rss = ps.memory_info().rss + sum(c.memory_info().rss for c in ps.children(recursive=True))
            peak = max(peak, rss)
        except psutil.Error:
            pass
        time.sleep(0.1)
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[:3]} failed:\n{err[-3000:]}")
    data = json.loads(out.strip().splitlines()[-1])
    data["peak_rss_mb"] = round(peak / 2**20)
    return data


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--out", default="bench/results/curate.json")
    args = parser.parse_args()
    from studio.store import Workspace

    tmp = Path(tempfile.mkdtemp(prefix="studio-bench-curate-"))
    env = {**os.environ, "HF_HOME": str(tmp / "hf"), "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    try:
        ws = Workspace.init(tmp / "ws")
        t0 = time.perf_counter()
        info = ws.write_version("bench", make_records(args.records), {"name": "bench"})
        build = time.perf_counter() - t0
        arrow = ws.version_dir("bench") / "data.arrow"
        studio = measure([sys.executable, "-c", STUDIO_SIDE, str(ws.root)], env)
        (tmp / "base").mkdir()
        base = measure([sys.executable, "-c", BASELINE_SIDE, str(arrow), str(tmp / "base")], env)
        n = info.num_records
        report = {
            "records": n, "cores": os.cpu_count(), "build_seconds": round(build, 1),
            "studio": {"seconds": round(studio["seconds"], 2), "records_per_s": round(n / studio["seconds"]),
                       "peak_rss_mb": studio["peak_rss_mb"], "out": studio["out"],
                       "steps": [{k: s[k] for k in ("op", "rows_in", "removed", "rows_out", "seconds", "by_reason")}
                                 for s in studio["steps"]]},
            "baseline_datasets_script": {"seconds": round(base["seconds"], 2), "records_per_s": round(n / base["seconds"]),
                                         "peak_rss_mb": base["peak_rss_mb"], "out": base["out"]},
        }
        report["speedup"] = round(base["seconds"] / studio["seconds"], 2)
        print(f"records: {n:,} ({os.cpu_count()} cores)")
        print(f"{'':28} {'seconds':>8} {'records/s':>10} {'peak RSS MB':>12} {'kept':>9}")
        for label, r in (("studio pipeline", report["studio"]), ("datasets map/filter script", report["baseline_datasets_script"])):
            print(f"{label:28} {r['seconds']:8.2f} {r['records_per_s']:10,} {r['peak_rss_mb']:12,} {r['out']:9,}")
        print(f"baseline/studio time ratio: {report['speedup']}")
        for s in report["studio"]["steps"]:
            print(f"  {s['op']:15} in {s['rows_in']:>9,} removed {s['removed']:>8,} in {s['seconds']:.2f}s {s['by_reason']}")
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2))
        print(f"wrote {out}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
