"""The scored format: several scored or ranked responses per prompt (Magpie, UltraFeedback,
Nectar) read as preference records, written back losslessly, detected without stealing other
formats' files. DPO training from such a file: tests/test_train_scored.py."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from conftest import DATASETS
from studio import plugins
from studio.data import containers
from studio.data.convert import read_file, write_file
from studio.data.format_kit import canonical
from studio.data.format_options import FormatOptionError, configure_formats
from studio.data.workflows import export_version, import_file
from studio.plugins import PluginHost
from studio.records import Record, Turn
from studio.store import Workspace

import studio_format_scored
from studio_format_scored import ScoredFormat, best_and_worst, pairs_of

SAMPLES = DATASETS / "train"
# file -> (shape, rows, responses per row, what scored the pair in most rows)
SHAPES = {
    "magpie_scored.jsonl": ("magpie", 52, 5, "rewards_armorm"),
    "ultrafeedback_rated.jsonl": ("ultrafeedback", 24, 4, "overall_score"),
    "nectar_ranked.jsonl": ("nectar", 24, 7, "rank"),
}


def scored_host() -> PluginHost:
    """The installed plugins plus this one (the entry point takes effect when the studio is re-installed)."""
    host = PluginHost()
    if "scored" not in host.plugins:
        host.add_plugin(studio_format_scored, "scored")
    return host


@pytest.fixture(scope="module")
def formats():
    return scored_host().formats()


def rows_of(path: Path) -> list[dict]:
    return [r.data for r in containers.read_rows(path)]


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def magpie_row(rewards, responses=None, **extra):
    responses = responses or [f"answer {i}" for i in range(len(rewards))]
    return {"uuid": "u1", "instruction": "Name a colour.", "responses": responses, "rewards_armorm": rewards, **extra}


# --- each shape ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(SHAPES))
def test_each_shape_is_detected_and_read_as_best_against_worst(name, formats):
    shape, count, per_row, by = SHAPES[name]
    result = read_file(SAMPLES / name, formats)
    d = result.detection
    assert (d.format, d.score) == ("scored", 1.0), d.candidates[:3]
    assert formats[d.format].title.split(" (")[0] == "Scored responses"
    assert shape.replace("ultrafeedback", "UltraFeedback").replace("magpie", "Magpie").replace("nectar", "Nectar") in d.reason
    assert f"{per_row} responses per row" in d.reason and "best response against the worst" in d.reason
    assert (len(result.records), result.rejects) == (count, [])
    for record, row in zip(result.records, rows_of(SAMPLES / name)):
        info = record.meta["scored_pair"]
        assert info["shape"] == shape and len(info["values"]) == per_row
        values = info["values"] if info["by"] != "rank" else [-v for v in info["values"]]
        # The planted signal: the best response is the friendliest, the worst is never polite.
        assert values[info["chosen"]] == max(values) and values[info["rejected"]] == min(values)
        assert record.chosen[0].content.endswith("I hope this helps!")
        assert not record.rejected[0].content.endswith("I hope this helps!")
        assert record.messages[-1].role == "user"
        # Every response and its score stay in the record, as the source spelt them.
        kept = {k: v for k, v in record.meta.items() if k not in ("scored_pair", "_layout")}
        prompt_key = "prompt" if shape == "nectar" or "prompt" in row else "instruction"
        # Magpie's chosen/rejected lists repeat the best and worst responses: rebuilt on writing.
        assert kept == {k: v for k, v in row.items() if k not in (prompt_key, "chosen", "rejected")}
        if shape == "magpie":
            assert row["chosen"][1]["content"] == record.chosen[0].content
            assert row["rejected"][1]["content"] == record.rejected[0].content
    by_counts = {}
    for record in result.records:
        by_counts[record.meta["scored_pair"]["by"]] = by_counts.get(record.meta["scored_pair"]["by"], 0) + 1
    assert max(by_counts, key=by_counts.get) == by


def test_magpie_rewards_may_be_score_objects_and_the_picked_pair_lists_are_kept(formats):
    row = magpie_row([{"score": 0.1}, {"score": 0.3}, {"score": -0.2}],
                     chosen=[{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "answer 1"}])
    record = formats["scored"].read(row)
    assert (record.chosen[0].content, record.rejected[0].content) == ("answer 1", "answer 2")
    assert record.meta["scored_pair"]["values"] == [0.1, 0.3, -0.2]
    assert formats["scored"].write(record).row == row


def test_nectar_multi_turn_prompt_and_spacing_survive(formats):
    row = {"prompt": "\n\nHuman: Hi\n\nAssistant: Hello.\n\nHuman:  Two spaces?\n\nAssistant: ",
           "answers": [{"answer": "b", "model": "m2", "rank": 2.0}, {"answer": "a", "model": "m1", "rank": 1.0}],
           "turns": 2, "num_responses": 2, "source": ["x"], "good_natured": True}
    record = formats["scored"].read(row)
    assert [(t.role, t.content) for t in record.messages] == [("user", "Hi"), ("assistant", "Hello."),
                                                               ("user", " Two spaces?")]
    assert (record.chosen[0].content, record.rejected[0].content) == ("a", "b")
    assert formats["scored"].write(record).row == row


@pytest.mark.parametrize("completion_fields, by, values", [
    ({"overall_score": [7, 9]}, "overall_score", [7, 9]),
    ({"overall_score": [None, 9], "fine-grained_score": [2.5, 4.0]}, "fine-grained_score", [2.5, 4.0]),
    ({}, "mean annotation rating", [2, 4.5]),
])
def test_ultrafeedback_score_is_overall_then_fine_grained_then_the_mean_rating(completion_fields, by, values, formats):
    ratings = [{"helpfulness": {"Rating": "2", "Rationale": "."}, "honesty": {"Rating": "N/A", "Rationale": "."}},
               {"helpfulness": {"Rating": "4", "Rationale": "."}, "honesty": {"Rating": "5", "Rationale": "."}}]
    completions = [{"model": f"m{i}", "response": f"r{i}", "annotations": ratings[i]} for i in range(2)]
    for key, per in completion_fields.items():
        for c, v in zip(completions, per):
            c[key] = v
    row = {"instruction": "Q?", "completions": completions}
    record = formats["scored"].read(row)
    # One source for the whole row: a row never mixes a 1-10 overall score with 1-5 ratings.
    assert record.meta["scored_pair"]["by"] == by and record.meta["scored_pair"]["values"] == values
    assert (record.chosen[0].content, record.rejected[0].content) == ("r1", "r0")
    assert formats["scored"].write(record).row == row


# --- ties and the pairing option ----------------------------------------------------------------


def test_ties_break_by_position():
    assert best_and_worst([0.5, 0.9, 0.9, 0.1, 0.1]) == (1, 4)  # first of the best, last of the worst
    assert pairs_of([0.5, 0.9, 0.9, 0.1], "best_each") == [(1, 0), (1, 3)]  # a tie with the best is no pair
    assert pairs_of([0.3, 0.3], "best_worst") == []


def test_a_row_whose_responses_all_tie_is_rejected_by_name(formats, tmp_path):
    path = write_jsonl(tmp_path / "tie.jsonl", [magpie_row([0.2, 0.2, 0.2]), magpie_row([0.1, 0.2])])
    result = read_file(path, formats)
    assert len(result.records) == 1
    [reject] = result.rejects
    assert (reject.line, reject.field) == (1, "responses")
    assert "all 3 responses have the same rewards_armorm" in reject.message


def test_best_each_makes_one_record_per_lower_scored_response(formats, tmp_path):
    configured, takers = configure_formats(formats, ["pairs=best_each"])
    assert takers == {"scored"} and configured["scored"].options.pairs == "best_each"
    assert formats["scored"].options.pairs == "best_worst"  # the registered instance is untouched
    rows = [magpie_row([0.1, 0.4, 0.4, 0.2, 0.3]), magpie_row([0.5, 0.6])]
    path = write_jsonl(tmp_path / "m.jsonl", rows)
    result = read_file(path, configured)
    assert "best response against each lower-scored one" in result.detection.reason
    pairs = [(r.chosen[0].content, r.rejected[0].content) for r in result.records]
    assert pairs == [("answer 1", "answer 0"), ("answer 1", "answer 3"), ("answer 1", "answer 4"),
                     ("answer 1", "answer 0")]
    assert [(r.meta["scored_pair"]["pair"], r.meta["scored_pair"]["pairs"]) for r in result.records] == \
        [(0, 3), (1, 3), (2, 3), (0, 1)]
    # Writing back gives each source row once.
    out = tmp_path / "back.jsonl"
    report = write_file(result.records, configured["scored"], out)
    assert (report.written, report.skipped) == (2, 2)
    assert rows_of(out) == rows


def test_format_options_are_validated(formats):
    with pytest.raises(FormatOptionError, match="pairs"):
        configure_formats(formats, ["pairs=everything"])
    with pytest.raises(FormatOptionError, match="no format takes the option 'pair'.*scored.pairs"):
        configure_formats(formats, ["pair=best_each"])
    with pytest.raises(FormatOptionError, match="no format 'sharegpt' takes the option 'pairs'"):
        configure_formats(formats, ["pairs=best_each"], only="sharegpt")
    with pytest.raises(FormatOptionError, match="KEY=VALUE"):
        configure_formats(formats, ["best_each"])
    assert configure_formats(formats, None) == (formats, set())
    # A mapping (what a recipe section would hold) works like KEY=VALUE strings.
    configured, takers = configure_formats(formats, {"pairs": "best_each"})
    assert takers == {"scored"} and configured["scored"].options.pairs == "best_each"


# --- writing back -------------------------------------------------------------------------------


@pytest.mark.parametrize("pairs", ["best_worst", "best_each"])
@pytest.mark.parametrize("name", list(SHAPES))
def test_import_then_export_gives_the_source_rows(name, pairs, formats, tmp_path):
    configured, _ = configure_formats(formats, [f"pairs={pairs}"])
    ws = Workspace.init(tmp_path / "ws")
    imported = import_file(ws, SAMPLES / name, configured, name="scored")
    assert imported.rejects == []
    out = tmp_path / name
    export_version(ws, "scored", configured["scored"], out)
    assert rows_of(out) == rows_of(SAMPLES / name)


@pytest.mark.parametrize("name", list(SHAPES))
def test_records_survive_openai_and_trl_and_come_back_the_same(name, formats, tmp_path):
    source = read_file(SAMPLES / name, formats)
    for other in ("openai", "trl_preference"):
        middle = tmp_path / f"{other}.jsonl"
        report = write_file(source.records, formats[other], middle)
        assert (report.written, report.skipped) == (len(source.records), 0)
        via = read_file(middle, formats, override=other)
        back = tmp_path / f"back-{other}.jsonl"
        write_file(via.records, formats["scored"], back)
        again = read_file(back, formats)
        assert again.detection.format == "scored" and again.rejects == []
        assert [canonical(r) for r in again.records] == [canonical(r) for r in source.records]


def test_edited_texts_are_written_in_their_places(formats):
    row = magpie_row([0.1, 0.9, 0.0], chosen=[{"role": "user", "content": "Name a colour."},
                                               {"role": "assistant", "content": "answer 1"}],
                     rejected=[{"role": "user", "content": "Name a colour."},
                               {"role": "assistant", "content": "answer 2"}])
    record = formats["scored"].read(copy.deepcopy(row))
    assert "chosen" not in record.meta and formats["scored"].write(record).row == row
    record.chosen = [Turn("assistant", "Blue, of course.")]
    record.messages = [Turn("user", "Name one colour.")]
    written = formats["scored"].write(record).row
    assert written["instruction"] == "Name one colour."
    assert written["responses"] == ["answer 0", "Blue, of course.", "answer 2"]
    # The picked-pair copies follow the edits.
    assert written["chosen"] == [{"role": "user", "content": "Name one colour."},
                                 {"role": "assistant", "content": "Blue, of course."}]
    assert written["rejected"][0]["content"] == "Name one colour."
    assert written["rewards_armorm"] == row["rewards_armorm"]


def test_pairs_without_scored_responses_are_not_given_made_up_scores(formats):
    record = Record([Turn("user", "Hi?")], [Turn("assistant", "Hello!")], [Turn("assistant", "What.")], meta={"id": 3})
    written = formats["scored"].write(record)
    assert written.row is None and "trl_preference" in written.dropped[0]
    conversation = Record([Turn("user", "Hi?"), Turn("assistant", "Hello!")])
    assert formats["scored"].write(conversation).row is None


# --- bad rows -----------------------------------------------------------------------------------


def test_bad_rows_are_reported_by_file_line_and_field_and_good_rows_kept(formats, tmp_path):
    good_uf = {"instruction": "Q?", "completions": [{"response": "a", "overall_score": 3},
                                                   {"response": "b", "overall_score": 5}]}
    bad_uf = copy.deepcopy(good_uf)
    del bad_uf["completions"][1]["overall_score"]
    nectar = {"prompt": "\n\nHuman: Q?\n\nAssistant:", "answers": [{"answer": "a", "rank": 1}, {"answer": "b"}]}
    rows = [
        magpie_row([0.1, 0.5, 0.2]),                                   # 1 good
        magpie_row([0.1, 0.5], responses=["a", "b", "c"]),             # 2 three responses, two scores
        magpie_row([0.4], responses=["only one"]),                     # 3 fewer than two responses
        magpie_row([0.1, "high", 0.3]),                                # 4 a score that is no number
        good_uf,                                                       # 5 good
        bad_uf,                                                        # 6 a completion without a score
        nectar,                                                        # 7 an answer without a rank
        magpie_row([0.3, 0.1]),                                        # 8 good
        {"instruction": "Q?", "responses": ["a", "b"]},                # 9 no rewards at all
    ]
    path = write_jsonl(tmp_path / "mixed.jsonl", rows)
    result = read_file(path, formats)
    assert result.detection.format == "scored"
    assert len(result.records) == 3
    got = [(r.file, r.line, r.field) for r in result.rejects]
    assert got == [(str(path), 2, "rewards_armorm"), (str(path), 3, "responses"), (str(path), 4, "rewards_armorm[1]"),
                   (str(path), 6, "completions[1].overall_score"), (str(path), 7, "answers[1].rank"),
                   (str(path), 9, "rewards_armorm")]
    messages = [r.message for r in result.rejects]
    assert messages[0] == "2 scores for 3 responses"
    assert messages[1] == "a preference needs 2 or more responses, got 1"
    assert messages[4] == messages[5] == "missing"


# --- detection ----------------------------------------------------------------------------------


def test_no_other_sample_changes_format_when_scored_is_installed(formats):
    without = {k: v for k, v in formats.items() if k != "scored"}
    files = [p for p in list(DATASETS.glob("*")) + list((DATASETS / "train").glob("*"))
             if p.is_file() and p.suffix != ".md" and p.name not in SHAPES]
    assert len(files) > 15
    for path in files:
        with_scored = read_file(path, formats).detection
        assert with_scored.format == read_file(path, without).detection.format, path
        assert with_scored.format != "scored"


def test_prompts_format_no_longer_claims_scored_rows(formats):
    result = read_file(SAMPLES / "ultrafeedback_rated.jsonl", formats)
    assert "prompts" not in [name for name, _, _ in result.detection.candidates]


# --- the CLI ------------------------------------------------------------------------------------


@pytest.fixture
def cli_host(monkeypatch, tmp_path):
    monkeypatch.setattr(plugins, "_host", scored_host())
    monkeypatch.setenv("STUDIO_WORKSPACE", str(tmp_path / "ws"))
    Workspace.init(tmp_path / "ws")


def test_cli_import_takes_the_pairing_option(cli_host, capsys):
    from studio.cli import main

    assert main(["data", "import", str(SAMPLES / "magpie_scored.jsonl"), "--name", "each",
                 "--option", "pairs=best_each", "--json"]) == 0
    each = json.loads(capsys.readouterr().out)
    assert main(["data", "import", str(SAMPLES / "magpie_scored.jsonl"), "--name", "one", "--json"]) == 0
    one = json.loads(capsys.readouterr().out)
    assert (each["format"], one["format"]) == ("scored", "scored")
    assert one["records"] == 52 and each["records"] > 3 * 52
    assert main(["data", "detect", str(SAMPLES / "nectar_ranked.jsonl"), "--option", "pairs=nonsense"]) != 0
    assert "pairs" in capsys.readouterr().err
    # An option the file's format does not take changes nothing, and the CLI says so.
    assert main(["data", "detect", str(DATASETS / "hh_rlhf.jsonl"), "--option", "pairs=best_each"]) == 0
    assert "was not used" in capsys.readouterr().err
