"""Benchmark: one curation recipe (exact dedup, a refusal filter, a length filter, MinHash dedup) over
1,000,000 records with the local engine and with the Ray engine (``studio curate --engine ray``), in
the same run, on the same stored version.

    .venv/bin/python bench/bench_curate_ray.py                 # 1,000,000 records, local Ray instance
    .venv/bin/python bench/bench_curate_ray.py --quick         # 20,000 records
    .venv/bin/python bench/bench_curate_ray.py --cluster       # Ray on a 2-worker local cluster

Records are instruction/answer pairs drawn Zipf-wise from the vocabulary of the project's sample
datasets, with planted rows the recipe must remove: exact copies (case and spacing changed), near
copies (one word of the answer substituted: word 3-gram Jaccard above 0.8, MinHash's threshold is 0.7),
refusals and one- or two-word answers. The records are imported once into a fresh workspace; each
engine then runs in its own subprocess (so peak memory is per engine) and writes its own output
dataset, so the two versions can be compared: the benchmark fails unless both engines wrote the
same version hash and side tables of the same size.

Memory is sampled every 0.5 s with psutil: the driver's RSS, and the summed RSS and PSS of every
other process of the engine (the local engine's worker pool; Ray's raylet, GCS, agents and
workers). RSS counts pages shared between processes (libraries, Ray's shared-memory object store)
once per process; PSS divides them among the processes, so the PSS sum is the fairer total.

``--cluster`` starts a head (``ray start --head --num-cpus 1``) and a second raylet (``ray start
--address HEAD --num-cpus 1``), each with its own temp dir, runs the Ray engine with ``--address``,
reports which nodes did work (CPU seconds of each node's processes) and stops both nodes at the end,
also on failure. It stops them by process id, not with ``ray stop``, which would end every Ray
process of this user on the machine, other people's included.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import bench_dedup  # noqa: E402

# The same vocabulary as the dedup benchmark (words of the sample datasets, most frequent first).
vocabulary = functools.lru_cache(maxsize=1)(bench_dedup.vocabulary)

RECORDS = 1_000_000
QUICK_RECORDS = 20_000
SAMPLE_SECONDS = 0.5
TAG = "STUDIO_BENCH_TAG"  # environment marker: which processes belong to which engine or node

# Shares of planted rows; the rest are unique rows the recipe keeps.
PLANTED = {"exact": 0.08, "near": 0.08, "refusal": 0.04, "short": 0.04}
SOURCE_POOL = 100_000  # copies are made of one of the last this-many unique rows
REFUSALS = ("I'm sorry, but I cannot help with that request.",
            "I apologize, but I can't assist with this.",
            "As an AI language model, I don't have personal opinions on that.",
            "I must decline to answer this question.")
SHORT_ANSWERS = ("Yes.", "No.", "Maybe.", "Not sure.", "I agree.")

STEPS = [
    {"op": "exact_dedup", "part": "all"},
    {"op": "refusal_filter"},
    {"op": "length_filter", "part": "response", "min_words": 3},
    {"op": "minhash_dedup", "part": "all", "threshold": 0.7},
]
# Which step should remove which planted kind (the report compares them).
EXPECTED = {"exact_dedup": "exact", "refusal_filter": "refusal", "length_filter": "short", "minhash_dedup": "near"}


# --- records ------------------------------------------------------------------------------------

@dataclass
class Planted:
    kind: str  # base, exact, near, refusal or short
    source: int  # for exact and near: the row it copies; else -1
    question: str
    answer: str


def planted_rows(n: int, seed: int = 0, chunk: int = 4096) -> Iterator[Planted]:
    """``n`` rows with planted duplicates and rows the filters remove, deterministic per seed (and
    the first rows do not depend on ``n``). Words are drawn a chunk at a time (one vectorised
    draw), so a million rows take about a minute."""
    import numpy as np

    rng = np.random.default_rng(seed)
    vocab = vocabulary()
    p = 1.0 / np.arange(1, len(vocab) + 1) ** 1.05
    p /= p.sum()
    kinds = list(PLANTED)
    edges = np.cumsum([PLANTED[k] for k in kinds])
    pool: list[tuple[int, str, str]] = []  # (row, question, answer) of recent unique rows, a ring
    written = 0
    while written < n:
        size = chunk  # always a whole chunk, so that the first rows do not depend on n
        words = rng.choice(len(vocab), size=(size, 110), p=p)
        q_len = rng.integers(6, 17, size=size)
        a_len = rng.integers(30, 91, size=size)
        rolls = rng.random(size)
        picks = rng.random((size, 2))
        for j in range(min(size, n - written)):
            i = written + j
            slot = int(np.searchsorted(edges, rolls[j], side="right"))
            kind = kinds[slot] if slot < len(kinds) else "base"
            if kind in ("exact", "near") and not pool:
                kind = "base"
            ids = words[j]
            question = " ".join(vocab[w] for w in ids[:q_len[j]]).capitalize() + "?"
            if kind == "exact":
                src, q, a = pool[int(picks[j, 0] * len(pool))]
                yield Planted("exact", src, "  " + q.upper(), a.replace(" ", "  "))
            elif kind == "near":
                src, q, a = pool[int(picks[j, 0] * len(pool))]
                answer = a.split(" ")
                at = int(picks[j, 1] * len(answer))
                new = vocab[int(ids[100])]
                # Never the same word in another case: that copy would be an exact duplicate.
                answer[at] = new if new.casefold() != answer[at].casefold() else new + "s"
                yield Planted("near", src, q, " ".join(answer))
            elif kind == "refusal":
                yield Planted("refusal", -1, question, REFUSALS[int(picks[j, 0] * len(REFUSALS))])
            elif kind == "short":
                yield Planted("short", -1, question, SHORT_ANSWERS[int(picks[j, 0] * len(SHORT_ANSWERS))])
            else:
                answer = " ".join(vocab[w] for w in ids[q_len[j]:q_len[j] + a_len[j]]).capitalize() + "."
                if len(pool) < SOURCE_POOL:
                    pool.append((i, question, answer))
                else:
                    pool[i % SOURCE_POOL] = (i, question, answer)
                yield Planted("base", -1, question, answer)
        written += size


def import_records(ws, n: int, seed: int = 0) -> tuple[Any, Counter]:
    """Store ``n`` planted rows as dataset ``bench``; returns its version and the planted counts."""
    from studio.records import Record, Turn

    counts: Counter = Counter()

    def records():
        for row in planted_rows(n, seed):
            counts[row.kind] += 1
            yield Record([Turn("user", row.question), Turn("assistant", row.answer)])

    info = ws.write_version("bench", records(), {"name": "bench", "planted": "bench_curate_ray"})
    return info, counts


# --- processes and memory -----------------------------------------------------------------------

class TaggedProcesses:
    """The processes that carry ``TAG`` with a value starting with ``prefix`` in their environment,
    and their descendants, grouped by that value. Descendants count because Ray's workers and
    agents rename themselves (``ray::IDLE``), which can blank what ``/proc/PID/environ`` shows;
    once seen as ours, a process stays ours after its parent dies."""

    def __init__(self, prefix: str):
        self.prefix = prefix
        self._known: dict[tuple[int, float], str | None] = {}

    def groups(self) -> dict[str, list]:
        import psutil

        procs = {p.pid: p for p in psutil.process_iter(["ppid", "create_time"])}

        def tag_of(pid: int, depth: int = 0) -> str | None:
            proc = procs.get(pid)
            if proc is None or depth > 64:
                return None
            key = (pid, proc.info["create_time"])
            if key not in self._known:
                try:
                    env = proc.environ()
                except psutil.Error:
                    env = {}
                tag = env.get(TAG, "")
                if not tag.startswith(self.prefix):
                    parent = proc.info["ppid"]
                    tag = tag_of(parent, depth + 1) if parent and parent != pid else None
                    raylet = env.get("RAY_RAYLET_PID", "")
                    if tag is None and raylet.isdigit():  # an agent its raylet started
                        tag = tag_of(int(raylet), depth + 1)
                self._known[key] = tag
            return self._known[key]

        out: dict[str, list] = {}
        for pid, proc in procs.items():
            tag = tag_of(pid)
            if tag is not None:
                out.setdefault(tag, []).append(proc)
        live = {(pid, p.info["create_time"]) for pid, p in procs.items()}
        self._known = {k: v for k, v in self._known.items() if k in live}
        return out

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM every tagged process (raylets and GCS first, so they end their workers), then
        SIGKILL what is left. Only processes this benchmark started carry the tag."""
        import psutil

        procs = [p for group in self.groups().values() for p in group]
        first = [p for p in procs if _name(p) in ("raylet", "gcs_server")]
        for batch in (first, [p for p in procs if p not in first]):
            for p in batch:
                try:
                    p.send_signal(signal.SIGTERM)
                except psutil.Error:
                    pass
            psutil.wait_procs(batch, timeout=timeout / 2)
        left = [p for group in self.groups().values() for p in group]
        for p in left:
            try:
                p.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(left, timeout=5)
        return len(procs)


def _name(proc) -> str:
    try:
        return proc.name()
    except Exception:
        return ""


class MemorySampler:
    """Every ``SAMPLE_SECONDS``: the driver's RSS and, over every other tagged process, the summed
    RSS and PSS; the peak of each, and the CPU seconds each group used while sampled (for a
    cluster: which node did the work)."""

    def __init__(self, processes: TaggedProcesses, driver_pid: int):
        self.processes, self.driver_pid = processes, driver_pid
        self.peak = {"driver_rss": 0, "others_rss": 0, "others_pss": 0, "total_pss": 0}
        self.cpu: dict[str, float] = {}
        self._cpu_first: dict[str, float] = {}
        self.others_seen: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        import psutil

        driver_rss = others_rss = others_pss = driver_pss = 0
        for tag, procs in self.processes.groups().items():
            cpu = 0.0
            for p in procs:
                try:
                    info = p.memory_full_info()
                    times = p.cpu_times()
                    name = _name(p)
                except psutil.Error:
                    continue
                cpu += times.user + times.system
                pss = getattr(info, "pss", info.rss)
                if p.pid == self.driver_pid:
                    driver_rss, driver_pss = info.rss, pss
                else:
                    others_rss += info.rss
                    others_pss += pss
                    self.others_seen.add(name)
            # A worker that exits takes its CPU seconds along: keep each group's largest sum seen.
            self._cpu_first.setdefault(tag, cpu)
            self.cpu[tag] = max(self.cpu.get(tag, 0.0), cpu - self._cpu_first[tag])
        sample = {"driver_rss": driver_rss, "others_rss": others_rss, "others_pss": others_pss,
                  "total_pss": driver_pss + others_pss}
        self.peak = {k: max(v, sample[k]) for k, v in self.peak.items()}

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(SAMPLE_SECONDS)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


# --- one engine, in its own process ---------------------------------------------------------------

def recipe_for(output: str) -> dict[str, Any]:
    return {"dataset": "bench", "output": output, "seed": 0, "steps": STEPS}


def run_engine(engine: str, workspace: str, output: str, address: str | None, result_path: str) -> None:
    """The subprocess: run the recipe on one engine; write what it did as JSON."""
    from studio.curation.pipeline import run_pipeline
    from studio.events import event_name
    from studio.plugins import get_host
    from studio.recipes import load_recipe
    from studio.store import Workspace

    ws = Workspace(Path(workspace))
    recipe = load_recipe(recipe_for(output), kind="curate")
    ops = get_host().items("curation_op")
    first_step: list[float] = []

    def emit(event: dict[str, Any]) -> None:
        if event_name(event) == "step_start" and not first_step:
            first_step.append(time.perf_counter())

    start = time.perf_counter()
    if engine == "local":
        result = run_pipeline(ws, recipe, ops, emit=emit)
    else:
        from studio.curation.ray_engine import run_on_ray

        result = run_on_ray(ws, recipe, ops, emit=emit, address=address)
    seconds = time.perf_counter() - start
    version = ws.version_info(output, result.version.id)
    Path(result_path).write_text(json.dumps({
        # Until the first step starts: for Ray, starting (or joining) the instance and loading the input.
        "seconds": seconds, "startup_seconds": first_step[0] - start if first_step else 0.0,
        "version": result.version.id, "records_out": result.version.num_records,
        "side_rows": result.side_rows, "engine": (version.operation or {}).get("engine"),
        "steps": [{k: s[k] for k in ("op", "rows_in", "removed", "rows_out", "seconds")}
                  for s in (step.to_dict() for step in result.steps)],
    }))


def measure(engine: str, ws_root: Path, output: str, address: str | None, tag: str, tmp: Path,
            cluster: LocalCluster | None = None) -> dict[str, Any]:
    """Runs one engine in a subprocess tagged ``tag`` and samples its memory and, on a cluster,
    that of the cluster's processes too (those tagged ``cluster``-something)."""
    result_path = tmp / f"{output}.json"
    env = {**os.environ, TAG: tag, "RAY_USAGE_STATS_ENABLED": "0",
           # A local Ray instance gets its own temp dir: it must not find (or be found by) another.
           "RAY_TMPDIR": str(tmp / f"ray-{output}"), **(cluster.env if cluster else {})}
    (tmp / f"ray-{output}").mkdir(exist_ok=True)
    command = [sys.executable, __file__, "--worker", engine, "--workspace", str(ws_root), "--output", output,
               "--result", str(result_path)] + (["--address", address] if address else [])
    processes = cluster.processes if cluster else TaggedProcesses(tag)
    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    log: list[str] = []
    reader = threading.Thread(target=lambda: log.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        with MemorySampler(processes, proc.pid) as memory:
            proc.wait()
        reader.join(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
        if cluster is None:
            TaggedProcesses(tag).stop()  # a local Ray instance the driver left behind
    if proc.returncode != 0:
        raise SystemExit(f"the {engine} engine failed (exit {proc.returncode}):\n{''.join(log)[-4000:]}")
    data = json.loads(result_path.read_text())
    data.update(process_seconds=time.perf_counter() - started,
                load_average=round((load_before + os.getloadavg()[0]) / 2, 2),
                peak_driver_rss_mb=round(memory.peak["driver_rss"] / 2**20),
                peak_others_rss_mb=round(memory.peak["others_rss"] / 2**20),
                peak_others_pss_mb=round(memory.peak["others_pss"] / 2**20),
                peak_total_pss_mb=round(memory.peak["total_pss"] / 2**20),
                cpu_seconds_by_group={k: round(v, 1) for k, v in sorted(memory.cpu.items())},
                other_processes=sorted(memory.others_seen))
    return data


# --- a 2-worker local cluster -----------------------------------------------------------------------

class LocalCluster:
    """``ray start --head`` plus a second raylet, each with one CPU and its own temp dir; stopped
    (by process id) on exit, also after a failure. Token authentication is on, with a token of its
    own: every node and the driver get it through ``env`` (``RAY_AUTH_MODE``,
    ``RAY_AUTH_TOKEN_PATH``), as on a real cluster."""

    def __init__(self, base: Path, tag: str):
        import secrets

        self.base, self.tag = base, tag
        self.processes = TaggedProcesses(tag)
        self.address: str | None = None
        base.mkdir(parents=True, exist_ok=True)
        token = base / "auth_token"
        token.write_text(secrets.token_hex(32))
        token.chmod(0o600)
        self.env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token), "RAY_USAGE_STATS_ENABLED": "0"}

    def _start(self, role: str, args: list[str]) -> None:
        ray = Path(sys.executable).with_name("ray")
        temp = self.base / role
        temp.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self.env, TAG: f"{self.tag}-{role}"}
        done = subprocess.run([str(ray), "start", *args, "--num-cpus", "1", "--temp-dir", str(temp),
                               "--disable-usage-stats"], env=env, capture_output=True, text=True, timeout=300)
        self.processes.groups()  # note the node's processes while they are still its raylet's children
        if done.returncode != 0:
            raise RuntimeError(f"ray start ({role}) failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")

    def __enter__(self) -> "LocalCluster":
        try:
            self._start("head", ["--head", "--port", "0", "--include-dashboard", "false"])
            self.address = (self.base / "head" / "ray_current_cluster").read_text().strip()
            self._start("node2", ["--address", self.address])
        except BaseException:
            self.processes.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        stopped = self.processes.stop()
        print(f"stopped the cluster's {stopped} processes", flush=True)


# --- driver -------------------------------------------------------------------------------------------

def side_table_summary(ws, output: str, version: str) -> list[tuple]:
    """The side table's identifying columns, sorted: two engines that agree give equal lists."""
    import pyarrow as pa

    from studio.curation.pipeline import SIDE_TABLE

    path = ws.version_dir(output, version) / SIDE_TABLE
    with pa.memory_map(str(path)) as source:
        table = pa.ipc.open_stream(source).read_all()
    cols = [table.column(c).to_pylist() for c in ("step", "op", "action", "reason", "source_index", "duplicate_of")]
    return sorted(zip(*cols))


def summarise(n: int, cores: int, planted: Counter, local: dict, ray: dict, same_side: bool,
              mode: str) -> dict[str, Any]:
    report = {"records": n, "cores": cores, "ray_mode": mode, "planted": dict(planted),
              "recipe": [s["op"] for s in STEPS], "same_version": local["version"] == ray["version"],
              "same_side_rows": local["side_rows"] == ray["side_rows"], "same_side_table": same_side,
              "overhead_ratio": round(ray["seconds"] / local["seconds"], 2)}
    for name, r in (("local", local), ("ray", ray)):
        report[name] = {**r, "seconds": round(r["seconds"], 2), "process_seconds": round(r["process_seconds"], 2),
                        "startup_seconds": round(r["startup_seconds"], 2),
                        "records_per_s": round(n / r["seconds"])}
    return report


def markdown(report: dict[str, Any]) -> str:
    n = report["records"]
    lines = [f"Curation recipe ({', '.join(report['recipe'])}) over {n:,} records, {report['cores']} cores; "
             f"Ray: {report['ray_mode']}.", "",
             "| engine | seconds | of which start-up | records/s | driver peak RSS MB "
             "| other processes peak RSS / PSS MB | total peak PSS MB | kept | version | load |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|"]
    for name in ("local", "ray"):
        r = report[name]
        lines.append(f"| {name} | {r['seconds']:.1f} | {r['startup_seconds']:.1f} | {r['records_per_s']:,} | "
                     f"{r['peak_driver_rss_mb']:,} | "
                     f"{r['peak_others_rss_mb']:,} / {r['peak_others_pss_mb']:,} | {r['peak_total_pss_mb']:,} | "
                     f"{r['records_out']:,} | {r['version']} | {r['load_average']} |")
    lines += ["", f"load: the 1-minute load average during the run ({report['cores']} cores; above that, other "
                  f"processes competed for them). Start-up: until the first step began (for Ray: starting or "
                  f"joining the instance and sending the input)."]
    lines += ["", f"Overhead ratio (ray seconds / local seconds): **{report['overhead_ratio']}**. Same version "
                  f"hash: {report['same_version']}; same side table: {report['same_side_table']} "
                  f"({report['local']['side_rows']:,} rows).", "",
              "| step | planted | removed (local) | removed (ray) | local s | ray s |", "|---|---:|---:|---:|---:|---:|"]
    for ls, rs in zip(report["local"]["steps"], report["ray"]["steps"]):
        lines.append(f"| {ls['op']} | {report['planted'].get(EXPECTED.get(ls['op']), 0):,} | {ls['removed']:,} | "
                     f"{rs['removed']:,} | {ls['seconds']:.1f} | {rs['seconds']:.1f} |")
    engine = report["ray"].get("engine") or {}
    if engine:
        lines += ["", f"Ray engine as recorded in version.json: {json.dumps(engine)}"]
    if report.get("cluster"):
        lines += ["", f"Cluster: {report['cluster']['nodes']} nodes; CPU seconds by process group: "
                      f"{json.dumps(report['ray']['cpu_seconds_by_group'])}"]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, help=f"records to generate (default {RECORDS:,})")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_RECORDS:,} records")
    parser.add_argument("--cluster", action="store_true",
                        help="run the Ray engine on a 2-worker local cluster (ray start) instead of a local instance")
    parser.add_argument("--out", help="JSON report (default bench/results/curate_ray[_cluster].json; "
                                      "a .md table is written beside it)")
    parser.add_argument("--worker", choices=["local", "ray"], help=argparse.SUPPRESS)
    parser.add_argument("--workspace", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--address", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.records is None:
        args.records = QUICK_RECORDS if args.quick else RECORDS
    if args.out is None:
        args.out = str(ROOT / "bench" / "results" / ("curate_ray_cluster.json" if args.cluster else "curate_ray.json"))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        run_engine(args.worker, args.workspace, args.output, args.address, args.result)
        return 0
    from studio.store import Workspace

    # Short paths: Ray's unix sockets live under the temp dir and their paths are limited to 107 bytes.
    tmp = Path(tempfile.mkdtemp(prefix="scr-", dir="/tmp"))
    tag = f"scr{uuid.uuid4().hex[:8]}"
    cores = os.cpu_count() or 1
    try:
        ws = Workspace.init(tmp / "ws")
        t0 = time.perf_counter()
        info, planted = import_records(ws, args.records)
        print(f"{info.num_records:,} records imported in {time.perf_counter() - t0:.1f}s "
              f"(version {info.id}); planted {dict(planted)}", flush=True)
        print("running the local engine ...", flush=True)
        local = measure("local", ws.root, "bench-local", None, f"{tag}-local", tmp)
        print(f"  {local['seconds']:.1f}s, version {local['version']}", flush=True)
        cluster_info = None
        if args.cluster:
            with LocalCluster(tmp / "c", f"{tag}-cluster") as cluster:
                print(f"running the Ray engine on a 2-worker cluster at {cluster.address} ...", flush=True)
                ray = measure("ray", ws.root, "bench-ray", cluster.address, f"{tag}-cluster-driver", tmp,
                              cluster=cluster)
                busy = {k: v for k, v in ray["cpu_seconds_by_group"].items() if not k.endswith("-driver")}
                cluster_info = {"address": cluster.address, "nodes": len(busy), "cpu_seconds_by_node": busy}
            mode = "2-worker local cluster (ray start --head --num-cpus 1 + ray start --address --num-cpus 1)"
        else:
            print("running the Ray engine on a local Ray instance ...", flush=True)
            ray = measure("ray", ws.root, "bench-ray", None, f"{tag}-ray", tmp)
            mode = "local instance started by the engine"
        print(f"  {ray['seconds']:.1f}s, version {ray['version']}", flush=True)
        same_side = side_table_summary(ws, "bench-local", local["version"]) == \
            side_table_summary(ws, "bench-ray", ray["version"])
        report = summarise(info.num_records, cores, planted, local, ray, same_side, mode)
        if cluster_info:
            report["cluster"] = cluster_info
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2))
        table = markdown(report)
        out.with_suffix(".md").write_text(table)
        print()
        print(table)
        print(f"wrote {out} and {out.with_suffix('.md')}")
        if not (report["same_version"] and report["same_side_rows"]):
            print(f"MISMATCH: local wrote {local['version']} ({local['side_rows']} side rows), ray wrote "
                  f"{ray['version']} ({ray['side_rows']} side rows)", file=sys.stderr)
            return 1
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
