"""Dedup ops (plugin studio_curate_dedup): exact, MinHash LSH and semantic, measured against
planted duplicates with known ground truth on real text (the project's samples in datasets/ and,
when present, ../shared/realdata)."""
from __future__ import annotations

import os
import random
import re
import subprocess
import sys
import unicodedata
from pathlib import Path

import numpy as np
import pytest

from conftest import DATASETS, REALDATA, realdata_file
from studio.curation import op_base
from studio.curation.op_base import OpContext, OpInput
from studio.curation.text import row_text
from studio.data.convert import read_file
from studio.plugins import get_host
from studio.records import Record, Turn
from studio.store import Workspace

WORD = re.compile(r"\w+")


# --- helpers ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ops():
    return get_host().items("curation_op")


@pytest.fixture
def ws(tmp_path):
    return Workspace.init(tmp_path / "ws")


def as_input(ws: Workspace, records: list[Record], name: str = "t") -> OpInput:
    info = ws.write_version(name, records, {"name": "t"})
    return OpInput(ws.root / "data" / name / "versions" / info.id / "data.arrow")


def run(ops, name: str, data: OpInput, ctx: OpContext | None = None, **config):
    op = ops[name]
    return op.run(data, op.config_model(**config), ctx or OpContext(num_proc=1))


def chat(user: str, assistant: str) -> Record:
    return Record([Turn("user", user), Turn("assistant", assistant)])


def shingles(text: str, n: int = 3) -> set[str]:
    words = WORD.findall(unicodedata.normalize("NFKC", text).lower())
    if len(words) < n:
        return {" ".join(words)} if words else set()
    return {" ".join(words[i:i + n]) for i in range(len(words) - n + 1)}


def jaccard(a: str, b: str, n: int = 3) -> float:
    sa, sb = shingles(a, n), shingles(b, n)
    return len(sa & sb) / len(sa | sb) if sa | sb else 1.0


def read_records(path: Path) -> list[Record]:
    return read_file(path, get_host().formats()).records


def sample_pairs(paths: list[Path]) -> list[tuple[str, str]]:
    """(prompt, response) texts of the records in these files."""
    out = []
    for path in paths:
        for record in read_records(path):
            row = record.to_row()
            prompt, response = row_text(row, "prompt"), row_text(row, "response")
            if prompt and response:
                out.append((prompt, response))
    return out


def project_samples() -> list[Path]:
    return sorted(p for p in DATASETS.iterdir() if p.suffix in (".json", ".jsonl") or p.name.endswith(".gz"))


def distinct_bases(pairs: list[tuple[str, str]], min_words: int = 25, max_overlap: float = 0.2) -> list[tuple[str, str]]:
    """Records long enough to edit at controlled Jaccard levels and mutually dissimilar (every pair
    of kept bases has Jaccard < max_overlap), so the only duplicates are the planted ones."""
    kept: list[tuple[str, str]] = []
    sets: list[set[str]] = []
    index: dict[str, list[int]] = {}
    for prompt, response in pairs:
        text = prompt + "\n" + response
        if len(WORD.findall(text)) < min_words:
            continue
        s = shingles(text)
        others = {j for sh in s for j in index.get(sh, ())}
        if any(len(s & sets[j]) / len(s | sets[j]) >= max_overlap for j in others):
            continue
        for sh in s:
            index.setdefault(sh, []).append(len(kept))
        kept.append((prompt, response))
        sets.append(s)
    return kept


def edit_to(prompt: str, response: str, lo: float, hi: float, rng: random.Random, vocab: list[str]
            ) -> tuple[str, float] | None:
    """Edit the response word by word (substitute, insert, delete, swap neighbours) until the
    record's word-3-gram Jaccard with the original lies in [lo, hi]: edits that would fall below
    lo are tried again differently. None when no sequence of edits lands in the band."""
    original = prompt + "\n" + response
    target = rng.uniform(lo, hi)
    words, j = response.split(), 1.0
    for _ in range(400):
        trial = list(words)
        i = rng.randrange(len(trial))
        kind = rng.random()
        if kind < 0.4:
            trial[i] = rng.choice(vocab)
        elif kind < 0.65:
            trial.insert(i, rng.choice(vocab))
        elif kind < 0.85 and len(trial) > 5:
            del trial[i]
        elif i + 1 < len(trial):
            trial[i], trial[i + 1] = trial[i + 1], trial[i]
        new_j = jaccard(original, prompt + "\n" + " ".join(trial))
        if new_j < lo:
            continue  # overshoots the band: try another edit
        words, j = trial, new_j
        if j <= target:
            break
    return (" ".join(words), j) if lo <= j <= hi else None


def plant(bases: list[tuple[str, str]], seed: int, near=(0.75, 0.95), far=(0.3, 0.55), exact_share=0.2,
          near_share=0.35, far_share=0.15):
    """Records (bases first, then copies) and truth: for each copy the base index, its kind and its
    measured Jaccard with the base."""
    rng = random.Random(seed)
    vocab = sorted({w for p, r in bases for w in WORD.findall(r.lower())})
    records = [chat(p, r) for p, r in bases]
    truth: dict[int, dict] = {}
    order = list(range(len(bases)))
    rng.shuffle(order)
    cut1 = int(len(order) * exact_share)
    cut2 = cut1 + int(len(order) * near_share)
    cut3 = cut2 + int(len(order) * far_share)
    for pos, b in enumerate(order[:cut3]):
        prompt, response = bases[b]
        if pos < cut1:
            kind, j = "exact", 1.0
            new_prompt = "  " + prompt.upper() + "\n"
            new_response = re.sub(r" ", lambda m: rng.choice([" ", "  ", "\t", " \n "]), response)
        else:
            kind = "near" if pos < cut2 else "far"
            edited = edit_to(prompt, response, *(near if kind == "near" else far), rng, vocab)
            if edited is None:
                continue
            new_prompt, (new_response, j) = prompt, edited
        truth[len(records)] = {"base": b, "kind": kind, "jaccard": j}
        records.append(chat(new_prompt, new_response))
    return records, truth


def measure(result, truth: dict[int, dict], positive_kinds: set[str]) -> dict:
    """Row-level precision and recall of removals: a removal is right when the row is a planted
    copy of a positive kind and it is removed as a duplicate of its own base."""
    removed = result.removals
    positives = {i for i, t in truth.items() if t["kind"] in positive_kinds}
    tp = sum(1 for i, r in removed.items() if i in positives and r.duplicate_of == truth[i]["base"])
    return {"precision": tp / len(removed) if removed else 1.0, "recall": tp / len(positives),
            "removed": len(removed), "positives": len(positives), "tp": tp}


def realdata_sources() -> list[Path]:
    return [realdata_file("alpaca/alpaca_data_first200.json"), realdata_file("alpaca/llamafactory_alpaca_en_demo.json")]


# --- registration and contract ------------------------------------------------------------------

def test_the_three_ops_are_registered_as_dedup_with_documented_configs(ops):
    for name in ("exact_dedup", "minhash_dedup", "semantic_dedup"):
        op = ops[name]
        assert op.category == "dedup" and op.title and op.summary
        for field, info in op.config_model.model_fields.items():
            assert info.description, f"{name}.{field} has no description"
    assert get_host().owner("curation_op", "minhash_dedup") == "dedup"


def test_part_accepts_a_name_a_list_or_comma_separated_names(ops):
    model = ops["exact_dedup"].config_model
    assert model(part="prompt").part == "prompt"
    assert model(part=["prompt", "response"]).part == ["prompt", "response"]
    assert model(part="prompt,response").part == ["prompt", "response"]
    with pytest.raises(ValueError):
        model(part="everything")


# --- exact ----------------------------------------------------------------------------------------

def test_exact_catches_case_whitespace_and_unicode_variants_only(ws, ops):
    records = [
        chat("What is the capital of France?", "Paris is the capital."),
        chat("what is   the capital of FRANCE?", " Paris is the capital.\n"),        # case + spaces
        chat("Ｗhat is the capital of France?", "Paris is the capital."),             # full-width W (NFKC)
        chat("What is the capital of France?", "Paris is the capital!"),             # punctuation differs
        chat("What is the capital of Spain?", "Madrid is the capital."),
        chat("What is the capital of Spain?", "Madrid is the capital."),
    ]
    result = run(ops, "exact_dedup", as_input(ws, records))
    assert result.keep == [True, False, False, True, True, False]
    assert {i: r.duplicate_of for i, r in result.removals.items()} == {1: 0, 2: 0, 5: 4}
    assert result.clusters == [[0, 1, 2], [4, 5]]
    assert result.report["clusters"] == 2 and result.report["largest_cluster"] == 3
    strict = run(ops, "exact_dedup", as_input(ws, records), lowercase=False, collapse_whitespace=False,
                 unicode_nfkc=False)
    assert set(strict.removals) == {5}
    loose = run(ops, "exact_dedup", as_input(ws, records), strip_punctuation=True)
    assert set(loose.removals) == {1, 2, 3, 5}


def test_exact_compares_only_the_chosen_parts(ws, ops):
    records = [chat("Name a colour.", "Blue."), chat("Name a colour.", "Green."), chat("Name a fruit.", "Blue.")]
    data = as_input(ws, records)
    assert set(run(ops, "exact_dedup", data, part="all").removals) == set()
    assert {i: r.duplicate_of for i, r in run(ops, "exact_dedup", data, part="prompt").removals.items()} == {1: 0}
    assert {i: r.duplicate_of for i, r in run(ops, "exact_dedup", data, part="response").removals.items()} == {2: 0}
    assert set(run(ops, "exact_dedup", data, part=["prompt", "response"]).removals) == set()
    # "a b" + "c" is not "a" + "b c": parts do not bleed into each other
    tricky = as_input(ws, [chat("a b", "c"), chat("a", "b c")], "tricky")
    assert run(ops, "exact_dedup", tricky, part=["prompt", "response"]).removals == {}


def test_exact_never_groups_empty_texts(ws, ops):
    records = [Record([Turn("user", "hi")]), Record([Turn("user", "hello")]), Record([Turn("user", "hey")])]
    data = as_input(ws, records)
    assert run(ops, "exact_dedup", data, part="response").removals == {}
    assert len(run(ops, "exact_dedup", data, part="response", skip_empty=False).removals) == 2


def test_exact_on_planted_copies_of_the_project_samples(ws, ops):
    bases = distinct_bases(sample_pairs(project_samples()), min_words=8)
    assert len(bases) >= 40
    records, truth = plant(bases, seed=1)
    result = run(ops, "exact_dedup", as_input(ws, records))
    m = measure(result, truth, {"exact"})
    assert m["positives"] >= 8
    assert m["precision"] == 1.0 and m["recall"] == 1.0, m


def test_exact_on_real_conversations_matches_an_independent_count(ws, ops):
    # FastChat's dummy conversations differ as wholes but repeat their user turns a lot.
    records = read_records(realdata_file("sharegpt/fastchat_dummy_conversation.json"))
    result = run(ops, "exact_dedup", as_input(ws, records), part="user")
    assert run(ops, "exact_dedup", as_input(ws, records), part="all").removals == {}
    seen: dict[str, int] = {}
    expected = {}
    for i, record in enumerate(records):
        text = "\n".join(t.content for t in record.messages if t.role == "user")
        key = " ".join(unicodedata.normalize("NFKC", text).casefold().split())
        if key in seen:
            expected[i] = seen[key]
        else:
            seen[key] = i
    assert len(expected) > 100
    assert {i: r.duplicate_of for i, r in result.removals.items()} == expected
    assert sum(result.keep) == len(seen)


# --- minhash: parameters and estimator --------------------------------------------------------

def test_bands_and_rows_match_datasketch_optimal_param():
    lsh = pytest.importorskip("datasketch.lsh", reason="datasketch (a dev extra) is the reference")
    from studio_curate_dedup.minhash import optimal_bands_rows

    for num_perm in (32, 128, 256):
        for threshold in (0.5, 0.6, 0.7, 0.8, 0.9):
            for weights in ((0.5, 0.5), (0.2, 0.8)):
                assert optimal_bands_rows(threshold, num_perm, *weights) == \
                    lsh._optimal_param(threshold, num_perm, *weights), (threshold, num_perm, weights)


def test_error_masses_agree_with_numerical_integration():
    from studio_curate_dedup.minhash import lsh_error_probabilities

    bands, rows, fp, fn = lsh_error_probabilities(0.7, 64)
    low, high = np.linspace(0, 0.7, 100_001), np.linspace(0.7, 1, 100_001)
    for k in (0, 17, len(bands) // 2, len(bands) - 1):
        collide = lambda s: 1 - (1 - s ** rows[k]) ** bands[k]  # noqa: E731
        assert fp[k] == pytest.approx(np.trapezoid(collide(low), low), abs=1e-7)
        assert fn[k] == pytest.approx(np.trapezoid(1 - collide(high), high), abs=1e-7)


def test_signatures_estimate_jaccard_without_bias():
    from studio_curate_dedup.minhash import signatures_of_texts

    rng = random.Random(3)
    vocab = [f"w{i}" for i in range(5000)]
    errors = []
    for _ in range(200):
        base = [rng.choice(vocab) for _ in range(120)]
        copy = list(base)
        for _ in range(rng.randrange(1, 40)):
            copy[rng.randrange(len(copy))] = rng.choice(vocab)
        a, b = " ".join(base), " ".join(copy)
        sig, _ = signatures_of_texts([a, b], "word", 3, 256, seed=7)
        errors.append(float((sig[0] == sig[1]).mean()) - jaccard(a, b))
    errors = np.array(errors)
    assert abs(errors.mean()) < 0.01  # unbiased
    assert errors.std() < 0.04  # about sqrt(J(1-J)/256)


def test_word_shingles_of_short_texts_and_chunks_agree_with_single_rows():
    from studio_curate_dedup.minhash import signatures_of_texts

    texts = ["", "one", "one two", "one two three four", "x y z", "ÉCOLE école", "Ａ b c"]
    together, counts = signatures_of_texts(texts, "word", 3, 64, seed=1)
    assert counts.tolist() == [0, 1, 1, 2, 1, 1, 1]
    for i, text in enumerate(texts):
        alone, _ = signatures_of_texts([text], "word", 3, 64, seed=1)
        assert (alone[0] == together[i]).all()
    assert (together[0] == 0xFFFFFFFF).all()
    assert (together[5] == signatures_of_texts(["école ÉCOLE"], "word", 3, 64, seed=1)[0][0]).all()


def test_config_rejects_half_or_oversized_band_settings(ops):
    model = ops["minhash_dedup"].config_model
    with pytest.raises(ValueError):
        model(bands=10)
    with pytest.raises(ValueError):
        model(bands=20, rows=10, num_perm=128)
    assert model(bands=16, rows=8).bands == 16
    assert model().weights() == (0.1, 0.9) and model(verify=False).weights() == (0.5, 0.5)
    assert model(false_positive_weight=0.3).weights() == (0.3, 0.9)


# --- minhash: planted near duplicates ---------------------------------------------------------

def check_minhash_planted(ws, ops, bases, seed):
    records, truth = plant(bases, seed=seed)
    data = as_input(ws, records)
    result = run(ops, "minhash_dedup", data, threshold=0.7)
    m = measure(result, truth, {"exact", "near"})
    near = [t["jaccard"] for t in truth.values() if t["kind"] == "near"]
    far = [t["jaccard"] for t in truth.values() if t["kind"] == "far"]
    assert min(near) >= 0.75 and max(far) <= 0.55  # the planting hit its bands
    assert m["recall"] >= 0.9 and m["precision"] >= 0.95, m
    # far copies (Jaccard <= 0.6) survive
    assert sum(result.keep[i] for i, t in truth.items() if t["kind"] == "far") >= 0.95 * len(far)
    for i, removal in result.removals.items():
        assert result.keep[removal.duplicate_of] and removal.duplicate_of < i
        assert 0.0 < removal.similarity <= 1.0
    for cluster in result.clusters:
        assert result.keep[cluster[0]] and not any(result.keep[i] for i in cluster[1:])
    report = result.report
    # verified candidates: bands/rows chosen for recall (datasketch's equal weights give 14 x 9)
    assert (report["bands"], report["rows_per_band"]) == (20, 6)
    assert report["candidate_probability_at_threshold"] > 0.9
    assert report["removed"] == len(result.removals) and report["clusters"] == len(result.clusters)
    return m, result, data


def test_minhash_on_planted_near_duplicates_of_the_project_samples(ws, ops):
    bases = distinct_bases(sample_pairs(project_samples()))
    assert len(bases) >= 30
    m, *_ = check_minhash_planted(ws, ops, bases, seed=5)
    assert m["positives"] >= 15


def test_minhash_on_planted_near_duplicates_of_real_alpaca_data(ws, ops):
    bases = distinct_bases(sample_pairs(realdata_sources()))
    assert len(bases) >= 500
    m, result, data = check_minhash_planted(ws, ops, bases, seed=11)
    assert m["positives"] >= 250
    # deterministic: the same input and config give the same answer
    again = run(ops, "minhash_dedup", data, threshold=0.7)
    assert again.keep == result.keep and again.clusters == result.clusters
    assert {i: (r.duplicate_of, r.similarity) for i, r in again.removals.items()} == \
        {i: (r.duplicate_of, r.similarity) for i, r in result.removals.items()}


def test_minhash_verification_and_explicit_bands(ws, ops):
    bases = distinct_bases(sample_pairs(project_samples()))
    records, truth = plant(bases, seed=2)
    data = as_input(ws, records)
    # Few wide bands: only near-identical rows share a bucket, recall drops.
    strict = run(ops, "minhash_dedup", data, threshold=0.7, bands=4, rows=32)
    assert strict.report["bands"] == 4 and strict.report["rows_per_band"] == 32
    default = run(ops, "minhash_dedup", data, threshold=0.7)
    assert measure(strict, truth, {"exact", "near"})["recall"] < measure(default, truth, {"exact", "near"})["recall"]
    # Many narrow bands without verification: every weak candidate is merged, precision drops.
    loose = run(ops, "minhash_dedup", data, threshold=0.7, bands=64, rows=2, verify=False)
    assert loose.report["verified_pairs"] is None
    verified = run(ops, "minhash_dedup", data, threshold=0.7, bands=64, rows=2)
    assert len(loose.removals) > len(verified.removals)
    assert measure(verified, truth, {"exact", "near"})["precision"] >= 0.95


def test_minhash_char_shingles_catch_edits_in_text_without_spaces(ws, ops):
    base = "我们今天去公园散步，天气非常好，阳光明媚，孩子们在草地上玩耍，老人们在树下下棋聊天。"
    edited = base.replace("非常好", "很好")
    other = "明天公司开会讨论新产品的发布计划，请大家提前准备好材料并准时参加。"
    data = as_input(ws, [chat("记录", base), chat("记录", edited), chat("通知", other)])
    words = run(ops, "minhash_dedup", data, shingle="word", threshold=0.6)
    chars = run(ops, "minhash_dedup", data, shingle="char", ngram=3, threshold=0.6)
    assert words.removals == {}  # one "word" per clause: a one-character edit changes it
    assert {i: r.duplicate_of for i, r in chars.removals.items()} == {1: 0}


def test_minhash_parallel_workers_give_the_in_process_answer(ws, ops, monkeypatch):
    bases = distinct_bases(sample_pairs(project_samples()))
    records, _ = plant(bases, seed=4)
    data = as_input(ws, records * 3)  # repeats: exact duplicates across chunks too
    single = run(ops, "minhash_dedup", data, OpContext(num_proc=1))
    monkeypatch.setattr(op_base, "PARALLEL_MIN_ROWS", 10)
    monkeypatch.setattr(op_base, "CHUNK_ROWS", 37)
    events = []
    ctx = OpContext(num_proc=2, emit=events.append)
    try:
        pooled = run(ops, "minhash_dedup", data, ctx)
        again = run(ops, "minhash_dedup", data, ctx)  # a second step on the same (kept) pool
    finally:
        ctx.close()
    assert again.keep == pooled.keep
    assert pooled.keep == single.keep and pooled.clusters == single.clusters
    assert {i: r.duplicate_of for i, r in pooled.removals.items()} == \
        {i: r.duplicate_of for i, r in single.removals.items()}
    assert not any(single.keep[len(records):])  # every repeat goes
    signature_events = [e for e in events if e["what"] == "minhash signatures"]
    assert signature_events[-1]["done"] == len(records) * 3 and len(signature_events) > 3


def test_minhash_seed_changes_permutations_not_the_outcome_on_clear_cases(ws, ops):
    records = [chat("Describe a cat.", "A cat is a small furry animal that likes to sleep in the sun all day long."),
               chat("Describe a cat.", "A cat is a small furry animal that likes to nap in the sun all day long."),
               chat("Describe a dog.", "Dogs are loyal companions that enjoy long walks and playing fetch outside.")]
    data = as_input(ws, records)
    for seed in (0, 1, 99):
        result = run(ops, "minhash_dedup", data, threshold=0.5, seed=seed)
        assert {i: r.duplicate_of for i, r in result.removals.items()} == {1: 0}
        assert result.report["seed"] == seed


# --- shared machinery -------------------------------------------------------------------------

def test_columnar_texts_equal_row_text_on_every_sample_and_real_file():
    import pyarrow as pa

    from studio.records import arrow_schema
    from studio_curate_dedup.common import part_texts

    paths = project_samples() + (sorted(p for p in REALDATA.rglob("*.json*")) if REALDATA.is_dir() else [])
    checked = 0
    for path in paths:
        rows = [r.to_row() for r in read_records(path)]
        table = pa.Table.from_pylist(rows, schema=arrow_schema())
        for part in ("all", "prompt", "response", "user", "assistant", "chosen", "rejected"):
            for piece in (table, table.slice(len(rows) // 3, 5), table.slice(0, 0)):
                assert part_texts(piece, part) == [row_text(r, part) for r in piece.to_pylist()], (path, part)
                checked += 1
    assert checked >= 7 * 3 * 10


def test_exact_parallel_workers_give_the_in_process_answer(ws, ops, monkeypatch):
    bases = distinct_bases(sample_pairs(project_samples()), min_words=8)
    records, _ = plant(bases, seed=8)
    data = as_input(ws, records * 2)
    single = run(ops, "exact_dedup", data, OpContext(num_proc=1))
    monkeypatch.setattr(op_base, "PARALLEL_MIN_ROWS", 10)
    monkeypatch.setattr(op_base, "CHUNK_ROWS", 29)
    ctx = OpContext(num_proc=2)
    try:
        pooled = run(ops, "exact_dedup", data, ctx)
    finally:
        ctx.close()
    assert pooled.keep == single.keep and pooled.clusters == single.clusters
    assert {i: r.duplicate_of for i, r in pooled.removals.items()} == \
        {i: r.duplicate_of for i, r in single.removals.items()}
    assert {i: r.duplicate_of for i, r in single.removals.items() if i >= len(records)} == \
        {i: single.removals[i - len(records)].duplicate_of if i - len(records) in single.removals
         else i - len(records) for i in range(len(records), 2 * len(records))}


def test_components_match_a_plain_union_find():
    from studio_curate_dedup.common import components

    rng = np.random.default_rng(0)
    for n, m in ((1, 0), (10, 5), (500, 400), (2000, 3000)):
        u = rng.integers(0, n, m)
        v = rng.integers(0, n, m)
        parent = list(range(n))

        def find(x):
            while parent[x] != x:
                x = parent[x]
            return x

        for a, b in zip(u.tolist(), v.tolist()):
            ra, rb = find(a), find(b)
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
        assert components(n, u, v).tolist() == [find(x) for x in range(n)]


@pytest.mark.parametrize("name", ["exact_dedup", "minhash_dedup", "semantic_dedup"])
def test_ops_accept_an_empty_dataset_and_rows_without_text(ws, ops, name):
    empty = run(ops, name, as_input(ws, [], "empty"))
    assert empty.keep == [] and empty.removals == {} and empty.clusters == []
    blank = run(ops, name, as_input(ws, [Record([Turn("user", "")]), Record([Turn("user", " ")])], "blank"))
    assert blank.keep == [True, True] and blank.report["removed"] == 0


@pytest.mark.parametrize("name", ["exact_dedup", "minhash_dedup", "semantic_dedup"])
def test_ops_stop_when_cancelled_and_report_progress(ws, ops, name, request):
    if name == "semantic_dedup":
        request.getfixturevalue("encoder")  # load the model once per module
    data = as_input(ws, [chat(f"question {i}", f"answer number {i} here") for i in range(50)])
    with pytest.raises(InterruptedError):
        run(ops, name, data, OpContext(num_proc=1, cancelled=lambda: True))
    events = []
    run(ops, name, data, OpContext(num_proc=1, emit=events.append))
    assert events and events[-1]["done"] == events[-1]["total"]


# --- semantic ---------------------------------------------------------------------------------

# Written for these tests: rewordings that share (almost) no word 3-gram, and questions on the same
# topics that ask something else.
PARAPHRASES = [
    ("How do I reverse a list in Python?", "In Python, how can a list be reversed?"),
    ("What is the capital city of France?", "Which city serves as France's capital?"),
    ("Give me three tips for sleeping better at night.", "Share a few tips to sleep better at night, please."),
    ("Explain how photosynthesis works.", "Can you explain the way photosynthesis works?"),
    ("Translate 'good morning' into Spanish.", "How would you say 'good morning' in Spanish?"),
    ("Write a short poem about the ocean.", "Compose a brief poem about the sea."),
    ("What are the health benefits of drinking water?", "What are the benefits of drinking water for health?"),
    ("How can I make my resume stand out to employers?", "What can I do so my resume stands out for employers?"),
    ("Summarize the causes of the First World War.", "Give a summary of what caused World War One."),
    ("What is the difference between a virus and a bacterium?", "How do viruses differ from bacteria?"),
    ("Recommend a good book for learning to cook.", "Can you suggest a good cookbook for learning to cook?"),
    ("How many legs does a spider have?", "What is the number of legs on a spider?"),
    ("Convert 100 degrees Fahrenheit to Celsius.", "What is 100 degrees Fahrenheit in Celsius?"),
    ("Why is the sky blue?", "What makes the sky appear blue?"),
    ("List some ways to reduce stress at work.", "What are ways of reducing stress in the workplace?"),
    ("How do I change a flat tire on my car?", "What are the steps for changing a car's flat tire?"),
]
SAME_TOPIC_OTHER_QUESTION = [
    "How do I sort a dictionary by value in Python?", "What is the population of Paris?",
    "Why do cats sleep so much during the day?", "Explain how a combustion engine works.",
    "Translate 'good night' into German.", "Write a long essay about mountains.",
    "What are the risks of drinking too much coffee?", "How should I prepare for a job interview?",
    "Summarize the outcome of the Second World War.", "How do vaccines train the immune system?",
    "What kitchen knives does a beginner need?", "How many eyes does a spider have?",
    "Convert 5 kilometres to miles.", "Why are sunsets red?",
    "List some ways to stay productive when working from home.", "How do I check the oil level in my car?",
]


@pytest.fixture(scope="module")
def encoder():
    """Loads the bundled MiniLM once for the module; semantic_dedup reuses the cached encoder."""
    from studio_curate_dedup.embeddings import clear_encoder_cache, load_encoder

    yield load_encoder(None, "auto", False, None)
    clear_encoder_cache()


@pytest.fixture
def paraphrase_input(ws):
    records = [Record([Turn("user", a)]) for a, _ in PARAPHRASES]
    records += [Record([Turn("user", t)]) for t in SAME_TOPIC_OTHER_QUESTION]
    records += [Record([Turn("user", b)]) for _, b in PARAPHRASES]
    n = len(PARAPHRASES)
    truth = {2 * n + k: {"base": k, "kind": "paraphrase"} for k in range(n)}
    return as_input(ws, records, "paraphrases"), truth


@pytest.mark.slow
def test_semantic_catches_paraphrases_that_minhash_misses(ops, encoder, paraphrase_input):
    data, truth = paraphrase_input
    assert max(jaccard(a, b) for a, b in PARAPHRASES) <= 0.3  # no n-gram overlap to speak of
    semantic = run(ops, "semantic_dedup", data, threshold=0.8)
    m = measure(semantic, truth, {"paraphrase"})
    assert m["recall"] >= 0.9 and m["precision"] >= 0.95, m
    assert all(0.8 <= r.similarity <= 1.0 for r in semantic.removals.values())
    minhash = run(ops, "minhash_dedup", data, threshold=0.5)
    assert measure(minhash, truth, {"paraphrase"})["recall"] <= 0.1
    # same topic, different question: kept by both
    n = len(PARAPHRASES)
    assert all(semantic.keep[n:2 * n]) and all(minhash.keep[n:2 * n])
    assert semantic.report["pooling"] == "mean" and semantic.report["similar_pairs"] >= m["tp"]


@pytest.mark.slow
def test_semantic_is_deterministic(ops, encoder, paraphrase_input):
    data, _ = paraphrase_input
    first = run(ops, "semantic_dedup", data, threshold=0.8)
    second = run(ops, "semantic_dedup", data, threshold=0.8)
    assert first.keep == second.keep and first.clusters == second.clusters
    assert {i: (r.duplicate_of, r.similarity) for i, r in first.removals.items()} == \
        {i: (r.duplicate_of, r.similarity) for i, r in second.removals.items()}


@pytest.mark.slow
@pytest.mark.parametrize("source", ["samples", "alpaca"])
def test_semantic_on_planted_copies_of_real_records(ws, ops, encoder, source):
    paths = project_samples() if source == "samples" else [realdata_file("alpaca/alpaca_data_first200.json")]
    bases = distinct_bases(sample_pairs(paths))[:60]  # CPU embedding: keep it to ~100 rows
    records, truth = plant(bases, seed=3)
    result = run(ops, "semantic_dedup", as_input(ws, records), max_length=128)
    # Word edits keep the meaning, so every planted copy is a semantic duplicate, the heavily
    # edited ones (word Jaccard 0.3-0.55) included; no two distinct bases may be merged.
    m = measure(result, truth, {"exact", "near", "far"})
    assert m["precision"] == 1.0, m
    assert m["recall"] >= 0.85, m
    assert measure(result, truth, {"exact", "near"})["recall"] >= 0.95


@pytest.mark.slow
def test_encoder_pooling_matches_sentence_transformers(encoder):
    st = pytest.importorskip("sentence_transformers", reason="reference implementation of the pooling")
    from studio_curate_dedup.embeddings import default_model_path

    texts = ["A cat sat on the mat.", "Quarterly revenue rose by four percent.", "short", "Ünïcödé text"]
    ours = encoder.encode(texts)
    reference = st.SentenceTransformer(default_model_path(), device="cpu").encode(texts, normalize_embeddings=True)
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    assert (ours * reference).sum(axis=1).min() > 0.9999


def test_cluster_builder_folding_keeps_the_components_and_nearest_neighbours(monkeypatch):
    from studio_curate_dedup import embeddings
    from studio_curate_dedup.common import components

    rng = np.random.default_rng(1)
    n = 400
    batches = []
    for _ in range(30):
        u = rng.integers(0, n, 40)
        v = rng.integers(0, n, 40)
        keep = u != v
        batches.append((u[keep], v[keep], rng.random(keep.sum())))
    monkeypatch.setattr(embeddings, "MAX_PENDING_PAIRS", 50)  # fold every couple of batches
    builder = embeddings.ClusterBuilder(n)
    for b in batches:
        builder.add(*b)
    u, v, s = (np.concatenate(x) for x in zip(*batches))
    assert builder.roots().tolist() == components(n, u, v).tolist()
    assert len(builder.forest_u) < n and builder.pairs == len(u)
    from studio_curate_dedup.minhash import strongest_edge

    nearest, best = strongest_edge(n, u, v, s)
    assert builder.nearest.tolist() == nearest.tolist()
    linked = nearest >= 0
    assert np.allclose(builder.nearest_sim[linked], best[linked])


def test_blockwise_neighbours_equal_the_full_matrix():
    from studio_curate_dedup.embeddings import similar_pairs

    rng = np.random.default_rng(0)
    emb = rng.normal(size=(300, 16)).astype(np.float32)
    emb[150:200] = emb[:50] + 0.05 * rng.normal(size=(50, 16))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    u, v, s = similar_pairs(emb, 0.9, block=64)
    full = emb @ emb.T
    i, j = np.nonzero(np.triu(full >= 0.9, k=1))
    assert sorted(zip(u.tolist(), v.tolist())) == sorted(zip(i.tolist(), j.tolist()))
    assert np.allclose(s, full[u, v])
    assert len(u) >= 50


def test_similarity_tiles_do_not_depend_on_blas_threads(tmp_path):
    """A one-thread engine worker and a many-thread local run compute the same tile values."""
    code = ("import sys, numpy as np; from studio_curate_dedup.embeddings import tile_pairs; "
            "e = np.random.default_rng(0).normal(size=(256, 384)).astype(np.float32); "
            "e /= np.linalg.norm(e, axis=1, keepdims=True); np.save(sys.argv[1], tile_pairs(e, e, 0, 0, -1.0)[2])")
    values = []
    for threads in ("1", "2"):
        env = {**os.environ, "OPENBLAS_NUM_THREADS": threads, "OMP_NUM_THREADS": threads}
        subprocess.run([sys.executable, "-c", code, str(tmp_path / f"{threads}.npy")], env=env, check=True)
        values.append(np.load(tmp_path / f"{threads}.npy"))
    assert len(values[0]) == 256 * 255 // 2 and np.array_equal(values[0], values[1])


@pytest.mark.slow
def test_semantic_model_option_and_errors(ws, ops, encoder):
    from studio_curate_dedup.embeddings import default_model_path

    data = as_input(ws, [Record([Turn("user", a)]) for a, _ in PARAPHRASES[:4]])
    explicit = run(ops, "semantic_dedup", data, model=default_model_path())
    assert explicit.report["model"] == default_model_path() and explicit.keep == [True] * 4
    with pytest.raises(ValueError, match="cannot load embedding model"):
        run(ops, "semantic_dedup", data, model="no-such-org/no-such-model")
    with pytest.raises(InterruptedError):
        run(ops, "semantic_dedup", data, OpContext(num_proc=1, cancelled=lambda: True))


def test_dedup_steps_in_a_recipe_record_duplicates_by_source_row(ws, ops):
    from studio.curation.pipeline import load_side_table, run_pipeline
    from studio.recipes import load_recipe

    answer = "Use reversed() or slicing with [::-1] to get a reversed copy of the list."
    ws.write_version("d", [chat("How do I reverse a list in Python?", answer),
                           chat("Tell me a joke.", "Why did the chicken cross the road? To get to the other side."),
                           chat("how do I reverse a list in python?", answer),
                           chat("How do I reverse a list in Python?", answer.replace("the list", "that list"))],
                     {"name": "t"})
    recipe = load_recipe({"dataset": "d", "steps": [{"op": "exact_dedup"},
                                                    {"op": "minhash_dedup", "threshold": 0.6}]})
    result = run_pipeline(ws, recipe, ops)
    assert [s.removed for s in result.steps] == [1, 1]
    side = {(r["op"], r["source_index"]): r for r in load_side_table(ws, "d")}
    assert side[("exact_dedup", 2)]["duplicate_of"] == 0
    # the minhash step ran on 3 rows; its removal still names source rows
    assert side[("minhash_dedup", 3)]["duplicate_of"] == 0
    assert 0.6 <= side[("minhash_dedup", 3)]["similarity"] < 1.0
