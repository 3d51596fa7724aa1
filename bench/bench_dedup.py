"""Benchmark: the studio's ``minhash_dedup`` against datasketch's MinHash + MinHashLSH used the
straightforward way, on the same records with planted near duplicates, in the same run.

    .venv/bin/python bench/bench_dedup.py [--records 100000] [--out bench/results/dedup.json]

Records: an instruction and an answer drawn Zipf-wise from the vocabulary of the project's sample
datasets (datasets/*), so word frequencies look like text. Planted, with known ground truth:
  - exact copies (case and whitespace changed),
  - near duplicates: copies with word substitutions, insertions, deletions and adjacent swaps at
    controlled levels, whose true Jaccard of word 3-gram sets (computed exactly here) is >= the
    threshold,
  - distractors: copies whose true Jaccard is below the threshold (mostly heavier edits), which
    must be kept.
A removed row is a true positive when it is a planted copy with true Jaccard >= threshold and
the row it is removed as a duplicate of belongs to the same planted family. Precision = TP /
removed; recall = TP / planted copies with Jaccard >= threshold.

Both sides use the same shingles (lower-cased word 3-grams), num_perm and threshold, verify
candidates by estimated Jaccard >= threshold, then cluster with union-find and keep the first row.
Bands x rows: datasketch picks 14 x 9 for 0.7 / 128 (equal false-positive/negative weights);
ours, because it verifies candidates, weighs false negatives 0.9 by default and picks 20 x 6.
Ours is also run with datasketch's 14 x 9 forced, to compare the same LSH.
datasketch: one ``MinHash`` per record fed by ``update`` per shingle, ``lsh.insert`` for every
record, then ``lsh.query`` for every record. It runs on one core (it has no parallel mode); ours
uses every core, as the product does, and is also timed on one core for reference.
Each contender runs in its own subprocess; peak memory is the sampled PSS of its process tree
(ours spawns worker processes; PSS shares library pages fairly between them; the JSON also has the
RSS sum).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

THRESHOLD = 0.7
NUM_PERM = 128
NGRAM = 3
WORD = re.compile(r"\w+")


# --- data -------------------------------------------------------------------------------------

# A fixed list, so that adding a sample dataset does not change the benchmark's records.
VOCABULARY_FILES = ("alpaca.json", "dolly.jsonl", "hh_rlhf.jsonl", "lima.jsonl", "openai_chat.jsonl",
                    "prompts.jsonl", "self_instruct_seeds.jsonl", "sharegpt_conversations.json",
                    "trl_preference_standard.jsonl")


def vocabulary() -> list[str]:
    """Words of the project's own sample datasets, most frequent first."""
    counts: dict[str, int] = {}
    for name in VOCABULARY_FILES:
        path = ROOT / "datasets" / name
        if not path.is_file():
            continue
        for word in WORD.findall(path.read_text(encoding="utf-8").lower()):
            if not word.isdigit() and len(word) > 1:
                counts[word] = counts.get(word, 0) + 1
    words = sorted(counts, key=lambda w: (-counts[w], w))
    return words[:4000]


def shingle_set(text: str) -> set[str]:
    words = WORD.findall(text.lower())
    if len(words) < NGRAM:
        return {" ".join(words)} if words else set()
    return {" ".join(words[i:i + NGRAM]) for i in range(len(words) - NGRAM + 1)}


def jaccard(a: str, b: str) -> float:
    sa, sb = shingle_set(a), shingle_set(b)
    return len(sa & sb) / len(sa | sb) if sa or sb else 1.0


def edit(words: list[str], edits: int, rng, vocab: list[str]) -> list[str]:
    out = list(words)
    for _ in range(edits):
        kind = rng.random()
        i = int(rng.integers(0, len(out)))
        if kind < 0.4:
            out[i] = vocab[int(rng.integers(0, len(vocab)))]
        elif kind < 0.65:
            out.insert(i, vocab[int(rng.integers(0, len(vocab)))])
        elif kind < 0.85 and len(out) > 4:
            del out[i]
        elif i + 1 < len(out):
            out[i], out[i + 1] = out[i + 1], out[i]
    return out


def make_records(n: int, seed: int = 0) -> tuple[list[tuple[str, str]], list[dict]]:
    """(instruction, answer) pairs and per-row truth {family, jaccard_to_base, kind}."""
    import numpy as np

    rng = np.random.default_rng(seed)
    vocab = vocabulary()
    ranks = np.arange(1, len(vocab) + 1)
    p = 1.0 / ranks ** 1.05
    p /= p.sum()
    rows: list[tuple[str, str]] = []
    truth: list[dict] = []
    bases: list[int] = []
    while len(rows) < n:
        r = rng.random()
        if bases and r < 0.05:  # exact copy, case and spacing changed
            b = bases[int(rng.integers(0, len(bases)))]
            ins, ans = rows[b]
            rows.append((ins.upper(), "  ".join(ans.split(" "))))
            truth.append({"family": truth[b]["family"], "kind": "exact", "jaccard": 1.0, "base": b})
        elif bases and r < 0.20:  # near duplicate or distractor (heavier edits)
            b = bases[int(rng.integers(0, len(bases)))]
            ins, ans = rows[b]
            words = ans.split(" ")
            distractor = rng.random() < 0.25
            k = int(rng.integers(max(3, len(words) // 6), max(4, len(words) // 3))) if distractor \
                else int(rng.integers(1, max(2, len(words) // 30) + 1))
            new = (ins, " ".join(edit(words, k, rng, vocab)))
            rows.append(new)
            j = jaccard(ins + "\n" + ans, new[0] + "\n" + new[1])
            # What counts is the measured Jaccard: a light edit may fall below the threshold and a
            # heavy one stay above it.
            truth.append({"family": truth[b]["family"], "kind": "near" if j >= THRESHOLD else "distractor",
                          "jaccard": round(j, 4), "base": b})
        else:
            li = int(rng.integers(6, 20))
            la = int(rng.integers(30, 140))
            ids = rng.choice(len(vocab), size=li + la, p=p)
            words = [vocab[i] for i in ids]
            rows.append((" ".join(words[:li]).capitalize() + "?", " ".join(words[li:]).capitalize() + "."))
            truth.append({"family": len(rows) - 1, "kind": "base", "jaccard": 0.0, "base": None})
            bases.append(len(rows) - 1)
    return rows, truth


def score(truth: list[dict], removed: dict[int, int]) -> dict:
    positives = {i for i, t in enumerate(truth) if t["kind"] in ("exact", "near")}
    tp = sum(1 for i, of in removed.items() if i in positives and truth[of]["family"] == truth[i]["family"])
    return {"removed": len(removed), "true_duplicates": len(positives), "true_positives": tp,
            "precision": tp / len(removed) if removed else 1.0,
            "recall": tp / len(positives) if positives else 1.0}


# --- contenders (each in its own subprocess) ---------------------------------------------------

def cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children (ours' pool workers)."""
    import resource

    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


class PeakMemory:
    """Samples the memory of this process and its children (ours spawns workers):
    the sum of PSS (proportional set size: shared library and memory-mapped file pages divided
    among the processes sharing them, so a pool of workers is not charged N times for libarrow)
    and, for reference, the sum of RSS. Every 100 ms: reading PSS costs ~1 ms per process."""

    def __init__(self):
        import psutil

        self.proc = psutil.Process()
        self.peak_pss = 0
        self.peak_rss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        import psutil

        while not self._stop.is_set():
            pss = rss = 0
            for p in [self.proc, *self.proc.children(recursive=True)]:
                try:
                    info = p.memory_full_info()
                except psutil.Error:
                    continue
                pss += getattr(info, "pss", info.rss)
                rss += info.rss
            self.peak_pss = max(self.peak_pss, pss)
            self.peak_rss = max(self.peak_rss, rss)
            self._stop.wait(0.1)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def run_ours(arrow: str, num_proc: int, bands_rows: str | None) -> dict:
    from studio.curation.op_base import OpContext, OpInput
    from studio.plugins import get_host

    op = get_host().items("curation_op")["minhash_dedup"]
    config = op.config_model(threshold=THRESHOLD, num_perm=NUM_PERM, ngram=NGRAM, shingle="word")
    if bands_rows:
        bands, rows = (int(x) for x in bands_rows.split("x"))
        config = op.config_model(**{**config.model_dump(), "bands": bands, "rows": rows})
    with PeakMemory() as memory:
        cpu = cpu_seconds()
        start = time.perf_counter()
        ctx = OpContext(num_proc=num_proc, seed=1)
        result = op.run(OpInput(Path(arrow)), config, ctx)
        seconds = time.perf_counter() - start
        if hasattr(ctx, "close"):
            ctx.close()  # joins the pool's workers, so that their CPU time is counted below
        cpu = cpu_seconds() - cpu
    removed = {i: r.duplicate_of for i, r in result.removals.items()}
    return {"seconds": seconds, "cpu_seconds": cpu, "peak_pss": memory.peak_pss, "peak_rss": memory.peak_rss, "removed": removed,
            "bands": result.report["bands"], "rows": result.report["rows_per_band"]}


def run_datasketch(arrow: str) -> dict:
    import numpy as np
    from datasketch import MinHash, MinHashLSH

    from studio.curation.op_base import OpInput
    from studio.curation.text import row_text

    with PeakMemory() as memory:
        cpu = cpu_seconds()
        start = time.perf_counter()
        texts = [row_text(row, "all") for row in OpInput(Path(arrow)).rows()]
        lsh = MinHashLSH(threshold=THRESHOLD, num_perm=NUM_PERM)
        minhashes = []
        for i, text in enumerate(texts):
            m = MinHash(num_perm=NUM_PERM, seed=1)
            for shingle in shingle_set(text):
                m.update(shingle.encode("utf-8"))
            minhashes.append(m)
            lsh.insert(i, m)
        parent = list(range(len(texts)))

        def find(x):
            while parent[x] != x:
                parent[x] = parent[parent[x]]
                x = parent[x]
            return x

        for i, m in enumerate(minhashes):
            for j in lsh.query(m):
                if j != i and m.jaccard(minhashes[j]) >= THRESHOLD:
                    a, b = find(i), find(j)
                    if a != b:
                        parent[max(a, b)] = min(a, b)
        roots = [find(i) for i in range(len(texts))]
        seconds = time.perf_counter() - start
        cpu = cpu_seconds() - cpu
    del np
    removed = {i: r for i, r in enumerate(roots) if r != i}
    return {"seconds": seconds, "cpu_seconds": cpu, "peak_pss": memory.peak_pss, "peak_rss": memory.peak_rss, "removed": removed,
            "bands": lsh.b, "rows": lsh.r}


def worker(which: str, arrow: str, out: str, num_proc: int, bands_rows: str | None) -> None:
    result = run_ours(arrow, num_proc, bands_rows) if which == "ours" else run_datasketch(arrow)
    Path(out).write_text(json.dumps({**result, "removed": {str(k): v for k, v in result["removed"].items()}}))


# --- driver -----------------------------------------------------------------------------------

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "dedup.json"))
    parser.add_argument("--skip-single-core", action="store_true", help="do not time ours on one core")
    parser.add_argument("--worker", choices=["ours", "datasketch"], help=argparse.SUPPRESS)
    parser.add_argument("--arrow", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--num-proc", type=int, default=os.cpu_count() or 1, help=argparse.SUPPRESS)
    parser.add_argument("--bands-rows", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.arrow, args.result, args.num_proc, args.bands_rows)
        return 0

    from studio.records import Record, Turn
    from studio.store import Workspace

    cores = os.cpu_count() or 1
    t0 = time.perf_counter()
    rows, truth = make_records(args.records)
    kinds = {k: sum(t["kind"] == k for t in truth) for k in ("base", "exact", "near", "distractor")}
    near_j = sorted(t["jaccard"] for t in truth if t["kind"] == "near")
    dist_j = sorted(t["jaccard"] for t in truth if t["kind"] == "distractor")
    print(f"{len(rows):,} records built in {time.perf_counter() - t0:.1f}s: {kinds}; near-duplicate Jaccard "
          f"{near_j[0]:.2f}-{near_j[-1]:.2f} (median {near_j[len(near_j) // 2]:.2f}), distractors "
          f"{dist_j[0]:.2f}-{dist_j[-1]:.2f}; threshold {THRESHOLD}, word {NGRAM}-grams, num_perm {NUM_PERM}")
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace.init(Path(tmp) / "ws")
        info = ws.write_version("bench", (Record([Turn("user", q), Turn("assistant", a)]) for q, a in rows),
                                {"name": "bench"})
        arrow = str(ws.root / "data" / "bench" / "versions" / info.id / "data.arrow")
        from datasketch.lsh import _optimal_param

        same = "{}x{}".format(*_optimal_param(THRESHOLD, NUM_PERM, 0.5, 0.5))
        plural = "s" if cores > 1 else ""
        # (label, contender, cores, bands x rows forced)
        runs = [(f"ours ({cores} core{plural})", "ours", cores, None),
                (f"ours, {same} ({cores} core{plural})", "ours", cores, same),
                ("datasketch (1 core)", "datasketch", 1, None)]
        if cores > 1 and not args.skip_single_core:
            runs.append(("ours (1 core)", "ours", 1, None))
        results = {}
        for label, which, procs, bands_rows in runs:
            out = Path(tmp) / f"run-{len(results)}.json"
            print(f"running {label} ...", flush=True)
            command = [sys.executable, __file__, "--worker", which, "--arrow", arrow, "--result", str(out),
                       "--num-proc", str(procs)] + (["--bands-rows", bands_rows] if bands_rows else [])
            load_before = os.getloadavg()[0]
            subprocess.run(command, check=True, cwd=ROOT)
            res = json.loads(out.read_text())
            # Other work on a shared machine steals cores from both contenders alike; record it.
            res["load_average"] = round((load_before + os.getloadavg()[0]) / 2, 2)
            removed = {int(k): v for k, v in res.pop("removed").items()}
            res.update(score(truth, removed), cores=procs, records_per_second=len(rows) / res["seconds"])
            results[label] = res
    ours = results[runs[0][0]]
    base = results["datasketch (1 core)"]
    ratio = ours["records_per_second"] / base["records_per_second"]
    print()
    print(f"{'contender':<26}{'records/s':>11}{'seconds':>9}{'CPU s':>8}{'peak PSS':>11}{'precision':>11}{'recall':>8}"
          f"{'removed':>9}{'bands x rows':>14}{'load':>6}")
    for label, r in results.items():
        print(f"{label:<26}{r['records_per_second']:>11,.0f}{r['seconds']:>9.1f}{r['cpu_seconds']:>8.1f}{r['peak_pss'] / 2**20:>8,.0f} MB"
              f"{r['precision']:>11.4f}{r['recall']:>8.4f}{r['removed']:>9,}{r['bands']:>8} x {r['rows']:<4}{r['load_average']:>5.1f}")
    print(f"(load: the machine's 1-minute load average during the run, {cores} cores; above {cores} other "
          f"processes were competing for them)")
    print(f"\nthroughput ratio ours ({cores} core{plural}) / datasketch (1 core; it has no parallel mode): "
          f"{ratio:.1f}x, recall {ours['recall']:.4f} vs {base['recall']:.4f}")
    ratios = {label: r["records_per_second"] / base["records_per_second"] for label, r in results.items()}
    cpu_ratio = base["cpu_seconds"] / ours["cpu_seconds"]
    print(f"CPU time ratio datasketch / ours ({cores} core{plural}): {cpu_ratio:.1f}x "
          f"(less sensitive to other load on the machine than wall time)")
    for label, value in ratios.items():
        if label not in (runs[0][0], "datasketch (1 core)"):
            print(f"  {label} / datasketch: {value:.1f}x")
    report = {"records": len(rows), "planted": kinds, "threshold": THRESHOLD, "num_perm": NUM_PERM,
              "ngram": NGRAM, "cpu_count": cores, "datasketch_cores": 1, "results": results,
              "throughput_ratio": ratio, "ratios_to_datasketch": ratios, "cpu_time_ratio": cpu_ratio,
              "recall_delta": ours["recall"] - base["recall"]}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
