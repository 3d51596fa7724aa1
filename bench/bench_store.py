"""Benchmark: the studio's import, paging and search against what a user would otherwise do,
measured in the same run and reported as ratios (absolute times on shared machines mean little).

    .venv/bin/python bench/bench_store.py [--records 1000000] [--out bench/results/store.json]

Baselines:
  import  : datasets.load_dataset("json", data_files=FILE) — loading a JSONL file into Arrow
            with the Hugging Face library (no validation, no format mapping). Both sides are
            timed with their modules already loaded (datasets, pandas, pyarrow.compute/json and
            the studio's own), so the figure compares the work, not who imports a module first.
  page    : reading record N of the JSONL file with json.loads line by line (what a script or
            `sed -n Np | jq` does), against VersionView.page(N, 50) on the stored version.
  search  : a Python loop over the JSONL file testing a substring, against VersionView.search.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

WORDS = ("model data prompt answer token train align reward policy gradient sample value loss "
         "batch layer adapter review filter split label chosen rejected system user").split()


def make_file(path: Path, n: int) -> None:
    rng = random.Random(0)
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(n):
            row = {"instruction": f"Task {i}: " + " ".join(rng.choices(WORDS, k=12)),
                   "input": "" if i % 3 else " ".join(rng.choices(WORDS, k=8)),
                   "output": " ".join(rng.choices(WORDS, k=40))}
            fh.write(json.dumps(row) + "\n")


def timed(fn, repeat: int = 1):
    best = float("inf")
    result = None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--out", default="bench/results/store.json")
    args = parser.parse_args()

    import datasets  # noqa: F401 - loaded before either side is timed (see the docstring)
    import pyarrow.compute  # noqa: F401
    import pyarrow.json  # noqa: F401

    from studio.data import column_kit, columnar  # noqa: F401
    from studio.data.workflows import import_file
    from studio.plugins import get_host
    from studio.store import Workspace

    tmp = Path(tempfile.mkdtemp(prefix="studio-bench-"))
    os.environ["HF_HOME"] = str(tmp / "hf")
    try:
        src = tmp / "data.jsonl"
        make_file(src, args.records)
        n = args.records
        formats = get_host().formats()
        ws = Workspace.init(tmp / "ws")

        studio_import, result = timed(lambda: import_file(ws, src, formats, name="bench"))
        assert result.version.num_records == n

        def hf_load():
            return datasets.load_dataset("json", data_files=str(src), split="train",
                                         cache_dir=str(tmp / f"hf-cache-{time.time_ns()}"))

        hf_import, ds = timed(hf_load)
        assert len(ds) == n

        view = ws.open("bench")
        offsets = [n // 2, n - 50, n // 10 * 9]

        def studio_pages():
            return [view.page(o, 50) for o in offsets]

        def jsonl_pages():
            pages = []
            for o in offsets:
                with open(src, encoding="utf-8") as fh:
                    page = []
                    for i, line in enumerate(fh):
                        if i >= o:
                            page.append(json.loads(line))
                            if len(page) == 50:
                                break
                pages.append(page)
            return pages

        studio_page, pages = timed(studio_pages, repeat=3)
        base_page, base_pages = timed(jsonl_pages, repeat=1)
        assert [p[0].messages[-1].content for p in pages] == [p[0]["output"] for p in base_pages]

        needle = f"Task {n - 7}:"

        def studio_search():
            return view.search(needle, limit=10)

        def python_search():
            hits = []
            with open(src, encoding="utf-8") as fh:
                for i, line in enumerate(fh):
                    row = json.loads(line)
                    if any(needle.lower() in str(v).lower() for v in row.values()):
                        hits.append(i)
            return hits

        studio_find, hits = timed(studio_search, repeat=3)
        base_find, base_hits = timed(python_search)
        assert hits == base_hits == [n - 7]

        rows = [
            ("import (detect+validate+store)", "datasets.load_dataset json", studio_import, hf_import),
            ("page of 50 at 3 deep offsets", "json.loads line scan", studio_page, base_page),
            ("substring search, all records", "python loop over JSONL", studio_find, base_find),
        ]
        report = {"records": n, "python": sys.version.split()[0], "columnar_rows": result.columnar_rows, "results": [
            {"task": t, "baseline": b, "studio_s": round(s, 4), "baseline_s": round(bs, 4),
             "speedup": round(bs / s, 2) if s else None} for t, b, s, bs in rows]}
        print(f"records: {n:,} ({result.columnar_rows:,} imported by columns)")
        print(f"{'task':34} {'baseline':28} {'studio s':>9} {'base s':>9} {'base/studio':>11}")
        for r in report["results"]:
            print(f"{r['task']:34} {r['baseline']:28} {r['studio_s']:9.4f} {r['baseline_s']:9.4f} {r['speedup']:11.2f}")
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2))
        print(f"wrote {out}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
