"""Benchmark decontamination (studio_curate_decontam): questions of the real GSM8K, HumanEval,
TruthfulQA and MT-Bench files (../shared/realdata, skipped when absent) planted into training rows,
copied and lightly edited, among clean rows and near misses; precision and recall measured. Small
MMLU- and ARC-shaped files written here cover the format-agnostic extraction."""
from __future__ import annotations

import csv
import json
import random
import re
from pathlib import Path

import pytest

from studio.curation.op_base import OpContext, OpInput
from studio.data.convert import read_file
from studio.plugins import get_host
from studio.records import Record, Turn
from studio.store import Workspace

from conftest import DATASETS, REALDATA, realdata_file

BENCH = REALDATA / "benchmarks"


def make_input(tmp_path: Path, records: list[Record]) -> OpInput:
    ws = Workspace.init(tmp_path / "ws")
    info = ws.write_version("t", records, {"name": "t"})
    return OpInput(ws.root / "data" / "t" / "versions" / info.id / "data.arrow")


def run_decontam(data: OpInput, ctx: OpContext | None = None, **config):
    op = get_host().items("curation_op")["decontaminate"]
    return op.run(data, op.config_model(**config), ctx or OpContext())


def load(path: Path) -> list[Record]:
    return read_file(path, get_host().formats()).records


def light_edit(text: str, rnd: random.Random) -> str:
    """What copying a question into a dataset does to it: case, punctuation and spacing change,
    a word in the middle is swapped (long texts only), a preamble is added."""
    words = text.split()
    if len(words) >= 30:
        mid = len(words) // 2
        words[mid] = rnd.choice(["several", "exactly", "roughly"])
    out = " ".join(words)
    out = rnd.choice([out.lower(), out.upper(), re.sub(r"[,.;:?!]", "", out), out.replace(" ", "  ")])
    return rnd.choice(["", "Please help with this: ", "Q: ", "Homework question.\n"]) + out


def conv(user: str, assistant: str) -> Record:
    return Record([Turn("user", user), Turn("assistant", assistant)])


# --- real benchmarks -------------------------------------------------------------------------


def planted_dataset(rnd: random.Random, per_benchmark: int = 15):
    """(records, positives {row index: (benchmark file, item index)}, near misses)."""
    clean = load(realdata_file("alpaca/llamafactory_alpaca_en_demo.json"))
    gsm = load(BENCH / "gsm8k_test.jsonl")
    humaneval = load(BENCH / "HumanEval.jsonl.gz")
    truthful = load(BENCH / "TruthfulQA.csv")
    mt = load(BENCH / "mt_bench_question.jsonl")
    planted: list[tuple[Record, str, int]] = []
    for i in rnd.sample(range(len(gsm)), per_benchmark):
        planted.append((conv(light_edit(gsm[i].messages[0].content, rnd), "Let me work it out step by step."),
                        "gsm8k_test.jsonl", i))
    for i in rnd.sample(range(len(humaneval)), per_benchmark):
        prompt = humaneval[i].messages[0].content
        planted.append((conv("Complete this function:\n```python\n" + prompt + "\n```", "Here you go."),
                        "HumanEval.jsonl.gz", i))
    long_tqa = [i for i, r in enumerate(truthful) if len(r.messages[0].content.split()) >= 8]
    for i in rnd.sample(long_tqa, per_benchmark):
        question = truthful[i].messages[0].content
        planted.append((conv(rnd.choice([question, question.lower(), question.rstrip("?")]), "Good question."),
                        "TruthfulQA.csv", i))
    for i in rnd.sample(range(len(mt)), per_benchmark):
        planted.append((conv(light_edit(mt[i].messages[0].content, rnd), "Sure."), "mt_bench_question.jsonl", i))
    # Near misses: a 10-word fragment of a long GSM8K question (shorter than 13), the first six words
    # of a TruthfulQA question, a HumanEval function name in a different function.
    near = []
    for i in rnd.sample(range(len(gsm)), 10):
        words = gsm[i].messages[0].content.split()
        near.append(conv("Similar topic: " + " ".join(words[5:15]) + " but with other numbers entirely.", "ok"))
    for i in rnd.sample(long_tqa, 10):
        near.append(conv(" ".join(truthful[i].messages[0].content.split()[:6]) + " is a phrase I once heard.", "ok"))
    for r in humaneval[:10]:
        name = r.meta["entry_point"]
        near.append(conv(f"Write {name} in Rust, please, with unit tests.", f"fn {name}() {{}}"))
    records = list(clean)
    positives = {}
    order = list(range(len(planted) + len(near)))
    rnd.shuffle(order)
    extras = planted + [(r, None, None) for r in near]
    for j in order:
        record, bench, item = extras[j]
        if bench is not None:
            positives[len(records)] = (bench, item)
        records.append(record)
    return records, positives


def test_decontaminate_real_benchmarks_precision_recall(tmp_path):
    for name in ("gsm8k_test.jsonl", "HumanEval.jsonl.gz", "TruthfulQA.csv", "mt_bench_question.jsonl"):
        realdata_file(f"benchmarks/{name}")
    records, positives = planted_dataset(random.Random(11))
    data = make_input(tmp_path, records)
    result = run_decontam(data, benchmarks=[str(BENCH)])
    removed = set(result.removals)
    tp = len(removed & positives.keys())
    precision = tp / len(removed)
    recall = tp / len(positives)
    print(f"\ndecontaminate (13-gram): {len(records)} rows, {len(positives)} planted; precision {precision:.3f} "
          f"recall {recall:.3f}; report {[(b['name'], b['read_as'], b['items'], b['rows_removed']) for b in result.report['benchmarks']]}")
    assert precision == 1.0
    assert recall >= 0.95
    # Each removal names the planted benchmark item, with a shared n-gram.
    for i in removed & positives.keys():
        bench, item = positives[i]
        matches = result.removals[i].detail["matches"]
        assert any(m["benchmark"] == bench and m["index"] == item for m in matches), (i, bench, item, matches)
        assert all(len(m["ngram"].split()) >= 8 for m in matches)
    by_name = {b["name"]: b for b in result.report["benchmarks"]}
    assert by_name["gsm8k_test.jsonl"]["read_as"] == "gsm8k" and by_name["gsm8k_test.jsonl"]["items"] == 1319
    assert by_name["HumanEval.jsonl.gz"]["read_as"] == "humaneval"
    assert by_name["TruthfulQA.csv"]["read_as"] == "truthfulqa"
    assert by_name["mt_bench_question.jsonl"]["read_as"] == "mt_bench"
    assert sum(b["rows_removed"] for b in by_name.values()) >= tp
    humaneval_hit = [r.detail["matches"][0]["item"] for i, r in result.removals.items()
                     if r.detail["matches"][0]["benchmark"] == "HumanEval.jsonl.gz"]
    assert humaneval_hit and all(item.startswith("HumanEval/") for item in humaneval_hit)


def test_decontaminate_thresholds_and_short_items(tmp_path):
    path = realdata_file("benchmarks/gsm8k_test.jsonl")
    gsm = load(path)
    question = gsm[0].messages[0].content  # Janet's ducks, 50+ words
    words = question.split()
    fragment = "Intro. " + " ".join(words[:14]) + " and so on."
    rows = [conv(question, "18"), conv(fragment, "?")]
    data = make_input(tmp_path, rows)
    any_overlap = run_decontam(data, benchmarks=[str(path)], include_answers=False)
    assert set(any_overlap.removals) == {0, 1}
    detail = any_overlap.removals[1].detail
    # Brute-force oracle: the fragment's normalised 13-grams that occur in the question.
    norm = lambda t: re.findall(r"[^\W_]+", t.lower())  # noqa: E731
    q, f = " ".join(norm(question)), norm(fragment + "\n?")
    shared = {" ".join(f[i:i + 13]) for i in range(len(f) - 12) if " " + " ".join(f[i:i + 13]) + " " in f" {q} "}
    assert len(shared) >= 2
    assert detail["value"] == len(shared) and detail["matches"][0]["item"] == "#0" and detail["matches"][0]["index"] == 0
    assert detail["matches"][0]["ngram"] == " ".join(norm(question)[:13])  # the first shared gram
    # The fragment covers a small share of the item; the full copy covers all of it.
    strict = run_decontam(data, benchmarks=[str(path)], include_answers=False, min_fraction=0.5)
    assert set(strict.removals) == {0}
    assert strict.removals[0].detail["matches"][0]["fraction"] == 1.0
    generic = run_decontam(data, benchmarks=[str(path)], formats={str(path): "generic"})
    assert generic.report["benchmarks"][0]["read_as"] == "generic" and set(generic.removals) == {0, 1}
    assert set(run_decontam(data, benchmarks=[str(path)], include_answers=False,
                                 min_matches=len(shared) + 1).removals) == {0}


def test_decontaminate_parallel_workers_share_the_index(tmp_path, monkeypatch):
    from studio.curation import op_base

    path = realdata_file("benchmarks/gsm8k_test.jsonl")
    gsm = load(path)
    rows = [conv(f"Tell me about topic number {i}, in a few sentences please.", "Sure.") for i in range(60)]
    for k in (5, 17, 42):
        rows[k] = conv(gsm[k].messages[0].content, "ok")
    data = make_input(tmp_path, rows)
    monkeypatch.setattr(op_base, "PARALLEL_MIN_ROWS", 10)
    monkeypatch.setattr(op_base, "CHUNK_ROWS", 20)
    result = run_decontam(data, OpContext(num_proc=2), benchmarks=[str(path)])
    assert set(result.removals) == {5, 17, 42}
    assert [result.removals[k].detail["matches"][0]["index"] for k in (5, 17, 42)] == [5, 17, 42]


# --- MMLU / ARC shapes written here -------------------------------------------------------------

MMLU = [
    ("Which layer of the atmosphere contains most of the ozone that absorbs ultraviolet radiation from the sun?",
     ["Troposphere", "Stratosphere", "Mesosphere", "Thermosphere"], 1),
    ("A company issues bonds at a premium. How does the premium affect the interest expense reported over the bond term?",
     ["It increases it", "It reduces it", "No effect", "It doubles it"], 1),
    ("What is the time complexity of binary search on a sorted array of n elements?",
     ["O(n)", "O(log n)", "O(n log n)", "O(1)"], 1),
    ("Which enzyme unwinds the double helix during DNA replication?", ["Ligase", "Helicase", "Primase", "Polymerase"], 1),
]
ARC = [
    ("Mercury_0001", "A student puts a metal spoon in hot soup and the handle gets warm. Which process moved the heat?",
     ["conduction", "convection", "radiation", "evaporation"], "A"),
    ("Mercury_0002", "Which property of a mineral can be determined just by looking at it without any tools?",
     ["hardness", "luster", "density", "streak"], "B"),
    ("Mercury_0003", "Why do the planets in our solar system keep orbiting around the sun instead of drifting away?",
     ["gravity", "magnetism", "friction", "inertia only"], "A"),
]


def write_choice_benchmarks(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = {
        "mmlu_hf": folder / "mmlu_test.jsonl",
        "mmlu_csv": folder / "astronomy_test.csv",
        "arc_jsonl": folder / "ARC-Challenge-Test.jsonl",
        "arc_hf": folder / "arc_easy.json",
    }
    with open(paths["mmlu_hf"], "w") as fh:
        for q, choices, answer in MMLU:
            fh.write(json.dumps({"question": q, "subject": "misc", "choices": choices, "answer": answer}) + "\n")
    with open(paths["mmlu_csv"], "w", newline="") as fh:  # MMLU's own CSVs: no header row
        writer = csv.writer(fh)
        for q, choices, answer in MMLU:
            writer.writerow([q, *choices, "ABCD"[answer]])
    with open(paths["arc_jsonl"], "w") as fh:
        for qid, stem, choices, key in ARC:
            fh.write(json.dumps({"id": qid, "question": {"stem": stem, "choices": [
                {"text": c, "label": "ABCD"[i]} for i, c in enumerate(choices)]}, "answerKey": key}) + "\n")
    with open(paths["arc_hf"], "w") as fh:
        json.dump([{"id": qid, "question": stem, "choices": {"text": choices, "label": list("ABCD")},
                    "answerKey": key} for qid, stem, choices, key in ARC], fh)
    return paths


def test_mmlu_and_arc_shaped_files(tmp_path):
    from studio_curate_decontam.benchmarks import read_benchmark

    paths = write_choice_benchmarks(tmp_path / "bench")
    formats = get_host().formats()
    how, items = read_benchmark(paths["mmlu_csv"], formats, True)
    assert how.startswith("generic") and len(items) == 4  # the first row is data, not a header
    how, items = read_benchmark(paths["arc_jsonl"], formats, True)
    assert how == "generic" and [i.id for i in items] == ["Mercury_0001", "Mercury_0002", "Mercury_0003"]
    assert items[1].texts[0] == ARC[1][1] and "luster" in items[1].texts[1]
    how, items = read_benchmark(paths["arc_hf"], formats, True)
    assert how == "generic" and "gravity" in items[2].texts[1]
    how, items = read_benchmark(paths["mmlu_hf"], formats, True)
    assert how == "generic" and "Helicase" in items[3].texts[1]

    rnd = random.Random(3)
    rows = [
        conv("Quiz: " + MMLU[0][0].lower() + " A) Troposphere B) Stratosphere", "B"),          # 0 MMLU, 17 words
        conv(MMLU[2][0], "O(log n)"),                                                         # 1 short (13 words)
        conv(MMLU[3][0].upper(), "Helicase"),                                                 # 2 10 words: whole
        conv(light_edit(ARC[0][1], rnd), "conduction"),                                       # 3 ARC
        conv(ARC[1][1].replace("?", ""), "luster"),                                           # 4 ARC, 16 words
        conv("Which enzyme joins DNA fragments together?", "Ligase"),                         # 5 near miss
        conv("The ozone layer absorbs ultraviolet radiation.", "Yes"),                        # 6 near miss
        conv("Binary search is fast on sorted arrays.", "Yes, O(log n)."),                    # 7 near miss
    ]
    data = make_input(tmp_path, rows)
    result = run_decontam(data, benchmarks=[str(tmp_path / "bench")])
    assert set(result.removals) == {0, 1, 2, 3, 4}
    matched = {i: {m["benchmark"] for m in r.detail["matches"]} for i, r in result.removals.items()}
    assert matched[0] == {"mmlu_test.jsonl", "astronomy_test.csv"}
    assert matched[3] == {"ARC-Challenge-Test.jsonl", "arc_easy.json"}
    arc_ids = {m["item"] for m in result.removals[4].detail["matches"]}
    assert arc_ids == {"Mercury_0002"}
    report = {b["name"]: b for b in result.report["benchmarks"]}
    assert report["mmlu_test.jsonl"]["rows_removed"] == 3 and report["mmlu_test.jsonl"]["items_leaked"] == 3
    assert report["arc_easy.json"]["rows_removed"] == 2
    # Without short-item matching, the 10-word question (row 2) no longer matches.
    assert 2 not in run_decontam(data, benchmarks=[str(tmp_path / "bench")], short_items=False).removals


def test_decontaminate_keeps_the_project_samples_and_explains_bad_config(tmp_path):
    paths = write_choice_benchmarks(tmp_path / "bench")
    records = []
    for name in ("dolly.jsonl", "openai_chat.jsonl", "alpaca.json", "lima.jsonl"):
        records += load(DATASETS / name)
    data = make_input(tmp_path, records)
    result = run_decontam(data, OpContext(base_dir=tmp_path), benchmarks=["bench"])  # relative to base_dir
    assert result.removals == {} and result.report["ngrams_indexed"] > 0
    with pytest.raises(FileNotFoundError):
        run_decontam(data, benchmarks=[str(tmp_path / "missing.jsonl")])
    with pytest.raises(ValueError, match="at least one benchmark"):
        run_decontam(data)
    assert paths  # written
