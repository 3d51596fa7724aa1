"""The filter, PII, decontamination and split ops chained by a YAML recipe through the real
pipeline: configs validate from YAML, removals land in the side table, redactions in the rows,
and the split writes stratified datasets."""
from __future__ import annotations

import json
from collections import Counter

from studio.curation.pipeline import load_side_table, run_pipeline
from studio.recipes import load_recipe
from studio.data.convert import read_file
from studio.plugins import get_host
from studio.records import Record, Turn
from studio.store import Workspace

from conftest import DATASETS

QUESTION = "Which layer of the atmosphere contains most of the ozone that absorbs ultraviolet radiation from the sun?"

RECIPE = """\
# studio curate recipe.yaml
dataset: dolly
output: dolly-clean
seed: 3
steps:
  - op: response_filter
  - op: refusal_filter
    extra_phrases: ["as a chatbot"]
  - op: repetition_filter
    top_ngram_frac: {2: 0.30, 3: 0.30, 4: 0.30}
  - op: pii_redact
    placeholder: "[{KIND}]"
  - op: decontaminate
    benchmarks: [bench]
  - op: language_filter
    languages: [en]
  - op: split
    sizes: {train: 0.75, test: 0.25}
    stratify_by: category
"""


def test_recipe_chains_the_ops_through_the_pipeline(tmp_path):
    formats = get_host().formats()
    dolly = read_file(DATASETS / "dolly.jsonl", formats).records
    rows = list(dolly) * 4  # 60 clean rows, every category four times at least

    def planted(answer: str, question: str = "Tell me something.", category: str = "open_qa") -> Record:
        return Record([Turn("user", question), Turn("assistant", answer)], meta={"category": category})

    rows += [
        planted("As a chatbot, I cannot share opinions."),                          # refusal (user phrase)
        planted("   "),                                                              # empty
        planted("Buy now! " * 30),                                                   # repetition
        planted("Write to maria.lopez@example.org for the form.", "Who do I ask?"),  # PII: kept, redacted
        planted("The stratosphere.", QUESTION),                                      # benchmark overlap
        planted("Die Hauptstadt von Deutschland ist Berlin, eine große Stadt.",
                "Was ist die Hauptstadt von Deutschland?"),                           # German
    ]
    ws = Workspace.init(tmp_path / "ws")
    ws.write_version("dolly", rows, {"name": "import"})
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "mmlu.jsonl").write_text(json.dumps(
        {"question": QUESTION, "choices": ["Troposphere", "Stratosphere", "Mesosphere", "Thermosphere"], "answer": 1}) + "\n")
    recipe_path = tmp_path / "recipe.yaml"
    recipe_path.write_text(RECIPE)
    recipe = load_recipe(recipe_path)
    result = run_pipeline(ws, recipe, get_host().items("curation_op"), base_dir=tmp_path)

    by_op = {s.op: s for s in result.steps}
    assert by_op["response_filter"].by_reason == {"empty response": 1}
    assert by_op["refusal_filter"].by_reason == {"listed phrase": 1}
    assert by_op["repetition_filter"].by_reason == {"repeated n-gram": 1}  # "buy now" covers 78%
    assert by_op["pii_redact"].by_reason == {"PII redacted": 1} and by_op["pii_redact"].report["totals"] == {"email": 1}
    assert by_op["decontaminate"].by_reason == {"benchmark overlap": 1}
    assert by_op["language_filter"].by_reason == {"language not allowed": 1}
    assert by_op["split"].rows_out == 61

    # Split datasets: stratified by Dolly category, covering the 61 surviving rows once.
    train, test = result.outputs["train"], result.outputs["test"]
    assert (train.dataset, test.dataset) == ("dolly-clean-train", "dolly-clean-test")
    assert train.num_records + test.num_records == 61
    cats = {name: Counter(r.meta["category"] for r in ws.open(f"{v.dataset}@{v.id}").records())
            for name, v in result.outputs.items()}
    everything = cats["train"] + cats["test"]
    for category, total in everything.items():
        assert abs(cats["test"][category] - total * 0.25) <= 1, (category, cats)
    texts = [r.text() for v in result.outputs.values() for r in ws.open(f"{v.dataset}@{v.id}").records()]
    assert any("[EMAIL]" in t for t in texts) and not any("maria.lopez" in t for t in texts)
    assert not any(QUESTION in t for t in texts)

    # The side table keeps every removal with its op, reason and JSON detail.
    side = load_side_table(ws, f"{train.dataset}@{train.id}")
    reasons = Counter(zip(side["op"], side["reason"]))
    assert reasons[("decontaminate", "benchmark overlap")] == 1
    detail = json.loads(side["detail"][side["reason"].index("benchmark overlap")])
    assert detail["matches"][0]["benchmark"] == "mmlu.jsonl" and detail["matches"][0]["index"] == 0

    # Same recipe, same input: same versions (seeded, deterministic).
    again = run_pipeline(ws, load_recipe(recipe_path), get_host().items("curation_op"), base_dir=tmp_path)
    assert {k: v.id for k, v in again.outputs.items()} == {k: v.id for k, v in result.outputs.items()}
