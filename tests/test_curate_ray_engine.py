"""``studio curate --engine ray``: the same recipe on a local Ray instance gives the same versions,
kept rows, side table and clusters as the local engine, reads Parquet, survives a kill -9, and
says how to install Ray when it is missing."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from studio.curation.pipeline import ORIGIN_FILE, SIDE_TABLE, run_pipeline
from studio.data.workflows import import_file
from studio.plugins import get_host
from studio.recipes import load_recipe
from studio.records import arrow_schema
from studio.store import Workspace

ray = pytest.importorskip("ray")

from studio.curation.ray_engine import merge_reports, run_on_ray  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DOLLY_RECIPE = ROOT / "recipes" / "curate-dolly.yaml"


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture
def ops():
    return get_host().items("curation_op")


def workspaces(tmp_path: Path) -> tuple[Workspace, Workspace]:
    return Workspace.init(tmp_path / "local"), Workspace.init(tmp_path / "ray")


def read_arrow(path: Path) -> pa.Table:
    with pa.memory_map(str(path)) as source:
        return pa.ipc.open_stream(source).read_all()


def assert_same_version(ws_a: Workspace, ws_b: Workspace, a, b) -> None:
    """Same id (content address), rows, side table and origins; only the engine differs."""
    assert a.id == b.id and a.num_records == b.num_records
    folder_a, folder_b = ws_a.version_dir(a.dataset, a.id), ws_b.version_dir(b.dataset, b.id)
    for name in ("data.arrow", SIDE_TABLE, ORIGIN_FILE):
        assert read_arrow(folder_a / name).equals(read_arrow(folder_b / name)), name
    info_b = json.loads((folder_b / "version.json").read_text())
    assert info_b["operation"]["engine"]["name"] == "ray"
    assert info_b["operation"]["engine"]["nodes"] >= 1
    info_a = json.loads((folder_a / "version.json").read_text())
    assert info_a["operation"]["engine"]["name"] == "local"
    assert info_b["parent"] == info_a["parent"]


def assert_same_steps(local, on_ray) -> None:
    for x, y in zip(local.steps, on_ray.steps, strict=True):
        assert (x.op, x.rows_in, x.removed, x.changed, x.added, x.rows_out, x.clusters) == \
               (y.op, y.rows_in, y.removed, y.changed, y.added, y.rows_out, y.clusters), x.op
        assert x.by_reason == y.by_reason, x.op
        if x.op.endswith("dedup"):
            for key in ("rows", "kept", "removed", "clusters", "largest_cluster", "rows_in_clusters"):
                assert x.report[key] == y.report[key], (x.op, key)


def test_the_dolly_recipe_gives_the_same_versions_on_both_engines(tmp_path, local_ray, ops):
    ws_local, ws_ray = workspaces(tmp_path)
    recipe = load_recipe(DOLLY_RECIPE, kind="curate")
    local = run_pipeline(ws_local, recipe, ops, base_dir=ROOT)
    events = []
    on_ray = run_on_ray(ws_ray, recipe, ops, base_dir=ROOT, emit=events.append)
    assert set(local.outputs) == set(on_ray.outputs) == {"train", "validation", "test"}
    for name in local.outputs:
        assert_same_version(ws_local, ws_ray, local.outputs[name], on_ray.outputs[name])
    assert_same_steps(local, on_ray)
    assert on_ray.side_rows == local.side_rows > 0
    assert on_ray.engine["name"] == "ray" and on_ray.to_dict()["engine"]["cpus"] >= 1
    names = [e["event"] for e in events]
    assert names.index("engine") < names.index("step_start") and names[-1] == "done"
    assert names.count("step_done") == len(recipe.steps)
    assert "engine_note" not in names  # every step ran on the cluster, none fell back to the driver
    # A dry run writes nothing and reports the same steps.
    heads = {name: ws_ray.head(name).id for name in ws_ray.dataset_names()}
    dry = run_on_ray(ws_ray, recipe, ops, base_dir=ROOT, dry_run=True)
    assert dry.dry_run and not dry.outputs and dry.version is None
    assert_same_steps(local, dry)
    assert {name: ws_ray.head(name).id for name in ws_ray.dataset_names()} == heads


def planted_rows(n: int, seed: int = 0) -> list[dict]:
    """Conversations of random words with planted exact copies (case and spacing changed), near
    copies (a few words edited; some edited again: chains), and empty answers."""
    rng = random.Random(seed)
    vocab = [f"{a}{b}" for a in ("ka", "lo", "mi", "nu", "pe", "ra", "si", "tu", "vo", "ze")
             for b in range(300)]
    texts: list[tuple[str, str]] = []
    for i in range(n):
        r = rng.random()
        if texts and r < 0.06:
            q, a = texts[rng.randrange(len(texts))]
            texts.append((q.upper(), "  ".join(a.split(" "))))
        elif texts and r < 0.16:
            q, a = texts[rng.randrange(max(0, len(texts) - 500), len(texts))]
            words = a.split(" ")
            for _ in range(rng.randint(1, 3)):
                words[rng.randrange(len(words))] = rng.choice(vocab)
            texts.append((q, " ".join(words)))
        elif r > 0.995:
            texts.append(("", ""))
        else:
            texts.append((" ".join(rng.choices(vocab, k=8)) + "?", " ".join(rng.choices(vocab, k=60)) + "."))
    return [{"kind": "sft", "messages": [{"role": "user", "content": q, "weight": None},
                                         {"role": "assistant", "content": a, "weight": None}],
             "chosen": None, "rejected": None, "label": None, "tools": None, "meta": json.dumps({"i": i})}
            for i, (q, a) in enumerate(texts)]


PLANTED_RECIPE = """
dataset: planted
output: planted-clean
seed: 3
steps:
  - op: exact_dedup
  - op: length_filter
    min_words: 5
  - op: minhash_dedup
    part: [prompt, response]
    threshold: 0.7
"""


def test_minhash_and_exact_dedup_over_100k_planted_rows_match(tmp_path, local_ray, ops):
    ws_local, ws_ray = workspaces(tmp_path)
    rows = planted_rows(100_000)
    for ws in (ws_local, ws_ray):
        ws.write_version("planted", pa.Table.from_pylist(rows, schema=arrow_schema()), {"name": "test"})
    path = tmp_path / "planted.yaml"
    path.write_text(PLANTED_RECIPE)
    recipe = load_recipe(path, kind="curate")
    local = run_pipeline(ws_local, recipe, ops)
    on_ray = run_on_ray(ws_ray, recipe, ops)
    assert_same_version(ws_local, ws_ray, local.version, on_ray.version)
    assert_same_steps(local, on_ray)
    exact, _, minhash = local.steps
    assert exact.removed > 4000 and minhash.removed > 5000 and minhash.clusters > 1000


MIX_RECIPE = """
dataset: {input}
output: mixed
seed: 5
steps:
  - op: refusal_filter
  - op: sample
    fraction: 0.8
    stratify_by: category
  - op: mix
    sources: [{{dataset: extra, weight: 0.25}}]
    replace: true
"""


def test_parquet_input_sample_and_mix_match_the_stored_version(tmp_path, local_ray, ops):
    ws_local, ws_ray = workspaces(tmp_path)
    dolly = ROOT / "datasets" / "dolly.jsonl"
    for ws in (ws_local, ws_ray):
        import_file(ws, dolly, get_host().formats(), name="dolly")
        import_file(ws, ROOT / "datasets" / "alpaca.json", get_host().formats(), name="extra")
    table = ws_local.open("dolly")._table
    parquet = tmp_path / "shared" / "dolly.parquet"
    parquet.parent.mkdir()
    pq.write_table(table, parquet, row_group_size=7)  # several row groups: several read tasks
    local_recipe = tmp_path / "local.yaml"
    local_recipe.write_text(MIX_RECIPE.format(input="dolly"))
    ray_recipe = tmp_path / "ray.yaml"
    ray_recipe.write_text(MIX_RECIPE.format(input=str(parquet.parent / "*.parquet")))  # an absolute glob
    local = run_pipeline(ws_local, load_recipe(local_recipe, kind="curate"), ops)
    on_ray = run_on_ray(ws_ray, load_recipe(ray_recipe, kind="curate"), ops)
    assert local.version.id == on_ray.version.id and local.steps[-1].added == on_ray.steps[-1].added > 0
    side_local = read_arrow(ws_local.version_dir("mixed", local.version.id) / SIDE_TABLE)
    side_ray = read_arrow(ws_ray.version_dir("mixed", on_ray.version.id) / SIDE_TABLE)
    assert side_local.equals(side_ray)
    info = json.loads((ws_ray.version_dir("mixed", on_ray.version.id) / "version.json").read_text())
    assert info["source"] == {"parquet": [str(parquet.resolve())]} and info["parent"] is None


def test_row_local_reports_add_up_over_batches():
    merged = merge_reports([{"rows": 3, "removed": 1, "by_reason": {"refusal": 1}, "n": 13, "size": 2},
                            {"rows": 3, "removed": 1, "by_reason": {"refusal": 1, "empty": 2}, "n": 13, "size": 5}])
    assert merged == {"rows": 6, "removed": 2, "by_reason": {"refusal": 2, "empty": 2}, "n": 13, "size": 7}


def test_without_ray_the_engine_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    from studio.cli.entry import main

    monkeypatch.setitem(sys.modules, "ray", None)
    Workspace.init(tmp_path / "ws")
    monkeypatch.chdir(tmp_path / "ws")
    code = main(["curate", str(DOLLY_RECIPE), "--engine", "ray"])
    err = capsys.readouterr().err
    assert code != 0
    assert 'pip install "alignment-studio[ray]"' in err
    assert not (tmp_path / "ws" / "data" / "dolly-clean-train").exists()


def studio_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "studio", *args]


def test_a_killed_ray_run_leaves_the_previous_version_and_a_rerun_completes(tmp_path):
    ws = Workspace.init(tmp_path / "ws")
    rows = planted_rows(30_000, seed=1)
    ws.write_version("planted", pa.Table.from_pylist(rows, schema=arrow_schema()), {"name": "test"})
    first = ws.write_version("planted-clean", pa.Table.from_pylist(rows[:10], schema=arrow_schema()), {"name": "test"})
    recipe = tmp_path / "planted.yaml"
    recipe.write_text(PLANTED_RECIPE)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "plugins")])}
    proc = subprocess.Popen(studio_command("curate", str(recipe), "--engine", "ray", "--json"), cwd=ws.root,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    # Kill once Ray has started working for it (a raylet among the run's processes), mid-run.
    import psutil

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        children = psutil.Process(proc.pid).children(recursive=True)
        if any("raylet" in " ".join(c.cmdline()) for c in children if c.is_running()):
            break
        time.sleep(0.2)
    time.sleep(4)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert ws.version_info("planted-clean").id == first.id  # the head is still the previous version
    assert list((ws.root / "data" / "planted-clean" / "versions").iterdir()) != []
    done = subprocess.run(studio_command("curate", str(recipe), "--engine", "ray", "--json"), cwd=ws.root, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert result["engine"]["name"] == "ray" and result["output"]["records"] < len(rows)
    assert ws.version_info("planted-clean").id == result["output"]["version"] != first.id


def test_an_unreachable_cluster_address_fails_fast_with_the_reason():
    import socket

    from studio.curation.ray_engine import EngineUnavailable, check_reachable

    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now
    with pytest.raises(EngineUnavailable, match=f"cannot reach a Ray cluster at 127.0.0.1:{port}"):
        check_reachable(f"127.0.0.1:{port}", timeout=2)


def test_an_op_failing_on_a_worker_is_reported_in_one_line_and_nothing_is_written(tmp_path, local_ray, ops):
    ws = Workspace.init(tmp_path / "ws")
    import_file(ws, ROOT / "datasets" / "dolly.jsonl", get_host().formats(), name="dolly")
    head = ws.head("dolly").id
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("dataset: dolly\nsteps:\n  - op: decontaminate\n    benchmarks: [missing/gsm8k.jsonl]\n")
    with pytest.raises(ValueError) as failure:
        run_on_ray(ws, load_recipe(recipe, kind="curate"), ops, base_dir=tmp_path)
    assert str(failure.value) == f"benchmark file {tmp_path / 'missing' / 'gsm8k.jsonl'} does not exist"
    assert ws.head("dolly").id == head and ws.dataset_names() == ["dolly"]


def test_the_curate_screen_runs_a_pipeline_on_ray_at_80x24(tmp_path, local_ray):
    """In the terminal app, ``e`` switches Preview and Run to the Ray engine; the run writes the
    version the local engine would, recording the engine."""
    import anyio
    from textual.widgets import Input, OptionList, Select, Static

    from studio.tui.app import StudioApp
    from studio.tui.screens.curate import CurateScreen

    ws = Workspace.init(tmp_path / "ws")
    import_file(ws, ROOT / "datasets" / "dolly_noisy.jsonl", get_host().formats(), name="noisy")
    local_ws = Workspace.init(tmp_path / "local")
    import_file(local_ws, ROOT / "datasets" / "dolly_noisy.jsonl", get_host().formats(), name="noisy")
    recipe = tmp_path / "r.yaml"
    recipe.write_text("dataset: noisy\noutput: noisy-clean\nsteps:\n  - op: exact_dedup\n  - op: refusal_filter\n")
    expected = run_pipeline(local_ws, load_recipe(recipe, kind="curate"), get_host().items("curation_op"))

    async def drive():
        app = StudioApp(ws)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause()
            await pilot.press("3")
            await pilot.pause()
            screen = app.screen
            assert isinstance(screen, CurateScreen)
            screen.query_one("#input-dataset", Select).value = "noisy"
            await pilot.pause()
            ops = screen.query_one("#op-list", OptionList)
            for name in ("exact_dedup", "refusal_filter"):
                ops.focus()
                ops.highlighted = next(i for i in range(ops.option_count) if ops.get_option_at_index(i).id == name)
                await pilot.press("enter")
                await pilot.pause()
            screen.query_one("#output-name", Input).value = "noisy-clean"
            screen.query_one("#step-list").focus()
            await pilot.press("e")
            await pilot.pause()
            assert screen.engine == "ray"
            assert "ray engine" in str(screen.query_one("#curate-bar", Static).content)
            await pilot.press("r")
            for _ in range(600):  # the run happens on a worker thread; Ray's start takes seconds
                await pilot.pause(0.1)
                if "noisy-clean" in ws.dataset_names() and not screen.busy:
                    break
            await pilot.app.workers.wait_for_complete()

    anyio.run(drive)
    written = ws.head("noisy-clean")
    assert written.id == expected.version.id
    assert written.operation["engine"]["name"] == "ray"


def test_a_stored_dataset_wins_over_a_folder_of_the_same_name(tmp_path, local_ray, ops, monkeypatch):
    ws = Workspace.init(tmp_path / "ws")
    import_file(ws, ROOT / "datasets" / "dolly.jsonl", get_host().formats(), name="dolly")
    (tmp_path / "dolly").mkdir()
    pq.write_table(pa.table({"x": [1, 2]}), tmp_path / "dolly" / "other.parquet")  # not studio rows
    monkeypatch.chdir(tmp_path)
    recipe = tmp_path / "r.yaml"
    recipe.write_text("dataset: dolly\nsteps:\n  - op: refusal_filter\n")
    result = run_on_ray(ws, load_recipe(recipe, kind="curate"), ops, dry_run=True)
    assert result.input.dataset == "dolly" and result.input.id == ws.head("dolly").id


def test_ray_starts_where_stderr_has_no_file_descriptor(tmp_path):
    """The terminal app replaces stderr with an object whose fileno() is -1; ray.init enables
    faulthandler on stderr and failed there ("file.fileno() is not a valid file descriptor")."""
    script = (
        "import io, sys\n"
        "class Screen(io.TextIOBase):\n"
        "    def write(self, s): return len(s)\n"
        "    def fileno(self): return -1\n"
        "real, sys.stderr = sys.stderr, Screen()\n"
        "from studio.curation.ray_engine import ray_session\n"
        "with ray_session() as cluster:\n"
        "    print('nodes', cluster.nodes, flush=True)\n"
        "assert isinstance(sys.stderr, Screen)\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "plugins")])}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "nodes 1" in done.stdout
