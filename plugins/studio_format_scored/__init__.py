"""Several scored responses to one prompt, read as preference pairs: the Magpie, UltraFeedback
and Nectar shapes (see :mod:`studio_format_scored.shapes`).

Each row becomes a preference record: the best response against the worst one (option
``pairs=best_worst``, the default) or against each response scored below it (``pairs=best_each``,
one record per pair). Ties break by position, deterministically: among equal best scores the
first listed response is chosen, among equal worst scores the last listed one is rejected, and
in ``best_each`` a response that ties with the best makes no pair. A row whose responses all
score the same holds no preference and is rejected.

Every response and its score stay in the record: the source row's fields other than the prompt
are kept in ``meta`` (``responses`` and ``rewards_armorm``, ``completions``, ``answers``, ...),
and ``meta["scored_pair"]`` says what was compared: the shape, which score (``by``: the reward
column, ``overall_score``, ``fine-grained_score``, ``mean annotation rating`` or ``rank``), every
response's value and the chosen and rejected positions. Writing back rebuilds the source row from
those fields, with edited prompt and response texts put in their places, so an unedited record
gives the same row. In ``best_each`` the row is written once, from its first pair.
"""
from __future__ import annotations

import copy
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from studio.data.format_kit import (
    DatasetFormat, Record, RecordError, Turn, Written, dict_rows, extra_fields, extra_keys_note,
    layout_of, make_meta, match_or_none, pct, source_meta, unheld, without_system,
)
from studio.hookspecs import hookimpl
from studio_format_scored.shapes import SHAPES, Magpie, Nectar, Scored, Shape, shape_of

NAME = "scored"
PAIR_KEY = "scored_pair"
BY_NAME = {s.name: s for s in SHAPES}
# The field that holds each shape's responses: where a "no preference" reject points.
RESPONSES_FIELD = {"magpie": "responses", "ultrafeedback": "completions", "nectar": "answers"}


class ScoredOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pairs: Literal["best_worst", "best_each"] = Field(
        "best_worst", description="best_worst: one pair per row, the best response against the worst; "
                                  "best_each: the best against each lower-scored response, one record per pair")


def best_and_worst(scores: list[float]) -> tuple[int, int]:
    """Positions of the best and worst scores: the first of equal best, the last of equal worst."""
    top, bottom = max(scores), min(scores)
    return scores.index(top), len(scores) - 1 - scores[::-1].index(bottom)


def pairs_of(scores: list[float], mode: str) -> list[tuple[int, int]]:
    """(chosen, rejected) positions, in the order of the rejected responses for ``best_each``."""
    best, worst = best_and_worst(scores)
    if scores[best] == scores[worst]:
        return []
    if mode == "best_worst":
        return [(best, worst)]
    return [(best, j) for j in range(len(scores)) if scores[j] < scores[best]]


def _source_values(parsed: Scored) -> list[float | int]:
    values = [-s if parsed.by == "rank" else s for s in parsed.scores]
    return [int(v) if float(v).is_integer() else v for v in values]


class ScoredFormat(DatasetFormat):
    name = NAME
    title = "Scored responses (Magpie / UltraFeedback / Nectar)"
    summary = ("several responses per prompt with scores or ranks; best against worst "
               "(option pairs=best_each: best against each other)")
    config_model = ScoredOptions
    default_extension = ".jsonl"
    # Above TRL (Magpie dumps also carry chosen/rejected lists) and prompts (instruction + lists).
    specificity = 30

    def match(self, rows):
        shapes = [shape_of(r) if isinstance(r, dict) else None for r in rows]
        hits = [s for s in shapes if s is not None]
        if not hits:
            return None
        main = max(set(hits), key=hits.count)
        counts = []
        for row, shape in zip(rows, shapes):
            if shape is main:
                items = row.get(RESPONSES_FIELD[main.name])
                counts.append(len(items))
        score = len(hits) / len(rows)
        spread = f"{min(counts)}" if min(counts) == max(counts) else f"{min(counts)}-{max(counts)}"
        reason = (f"{pct(score)} of sampled rows hold several scored responses to one prompt, most in the "
                  f"{main.title} shape, {spread} responses per row; each row becomes "
                  f"{'the best response against each lower-scored one' if self.options.pairs == 'best_each' else 'the best response against the worst'}")
        known = {"instruction", "prompt", "responses", "completions", "answers"}
        if main.name == "magpie":
            known |= {k for r in dict_rows(rows) for k in r if k.startswith("rewards_")}
        return match_or_none(score, reason + extra_keys_note(rows, known))

    # --- reading ---------------------------------------------------------------------------

    def read(self, row):
        shape = shape_of(row)
        if shape is None and isinstance(row.get("responses"), list):
            shape = BY_NAME["magpie"]  # responses without a rewards_* column: rejected as missing scores
        if shape is None:
            raise RecordError("responses", "missing: expected instruction + responses + rewards_* (Magpie), "
                                           "instruction + completions (UltraFeedback) or prompt + answers (Nectar)")
        parsed = shape.parse(row)
        pairs = pairs_of(parsed.scores, self.options.pairs)
        if not pairs:
            raise RecordError(RESPONSES_FIELD[shape.name],
                              f"all {len(parsed.responses)} responses have the same {parsed.by}: no preference")
        source = extra_fields(row, {parsed.prompt_key, PAIR_KEY})
        hint = {"prompt_key": parsed.prompt_key if parsed.prompt_key != "instruction" else None,
                "prompt": parsed.prompt_raw}
        picked = _picked_lists(row, parsed)
        if picked:
            # Magpie's chosen/rejected lists only repeat the best and worst responses: the writer
            # rebuilds them, so they never disagree with an edited record (or a TRL row's own).
            del source["chosen"], source["rejected"]
            hint["picked"] = picked
        records = []
        for k, (chosen, rejected) in enumerate(pairs):
            info = {"shape": shape.name, "by": parsed.by, "values": _source_values(parsed),
                    "chosen": chosen, "rejected": rejected}
            if self.options.pairs == "best_each":
                info.update(pair=k, pairs=len(pairs))
            meta = make_meta({**source, PAIR_KEY: info}, NAME, hint)
            records.append(Record(list(parsed.prompt), [Turn("assistant", parsed.responses[chosen])],
                                  [Turn("assistant", parsed.responses[rejected])], meta=meta))
        return records if self.options.pairs == "best_each" else records[0]

    # --- writing ---------------------------------------------------------------------------

    def write(self, record):
        if record.kind != "preference":
            return Written(None, [f"{record.kind} records (scored rows hold responses to compare)"])
        sides = (record.chosen or [], record.rejected or [])
        if any(len(side) != 1 or side[0].role != "assistant" for side in sides):
            return Written(None, ["pairs whose chosen or rejected side is not one assistant reply"])
        prompt, dropped = without_system(record)
        source = source_meta(record)
        info = source.pop(PAIR_KEY, None)
        info = info if isinstance(info, dict) else {}
        shape = BY_NAME.get(info.get("shape")) or _shape_of_fields(source)
        if shape is None:
            # Inventing scores for a plain pair would put made-up numbers in the data.
            return Written(None, ["preference pairs without their scored responses (write them as trl_preference)"])
        if isinstance(info.get("pair"), int) and info["pair"] > 0:
            return Written(None, ["further pairs of a scored row (a row is written once, from its first pair)"])
        hint = layout_of(record, NAME)
        row = copy.deepcopy(source)
        key = {"nectar": "prompt", "ultrafeedback": hint.get("prompt_key") or "instruction"}.get(shape.name, "instruction")
        try:
            # The source prompt first: parse tells where each response sits and what it said.
            original = shape.parse({key: _placeholder_prompt(shape, hint), **row})
        except RecordError as exc:
            return Written(None, [f"scored records whose kept responses no longer read ({exc})"])
        row = {key: None, **row}
        why = shape.put_prompt(row, prompt, key, hint.get("prompt"))
        if why:
            return Written(None, [why])
        positions = [info.get("chosen"), info.get("rejected")]
        n = len(original.responses)
        if not all(isinstance(p, int) and 0 <= p < n for p in positions) or positions[0] == positions[1]:
            positions = list(best_and_worst(original.scores))
        for position, side in zip(positions, sides):
            if original.responses[position] != side[0].content:
                shape.put_response(row, position, side[0].content)
        picked = hint.get("picked")
        if isinstance(shape, Magpie) and isinstance(picked, dict) and "chosen" not in row and "rejected" not in row:
            # Rebuilt from the written row, so an edited prompt or response shows in them too.
            scores = shape.parse(row).scores
            best, worst = best_and_worst(scores)
            for key, position in (("chosen", best), ("rejected", worst)):
                row[key] = [_message(picked["order"], "user", row["instruction"]),
                            _message(picked["order"], "assistant", row["responses"][position])]
        return Written(row, dropped + unheld(record))


def _shape_of_fields(source: dict) -> Shape | None:
    """The shape of a record's kept fields when the pair summary is gone."""
    if "responses" in source and any(k.startswith("rewards_") for k in source):
        return BY_NAME["magpie"]
    if "completions" in source:
        return BY_NAME["ultrafeedback"]
    if "answers" in source:
        return BY_NAME["nectar"]
    return None


def _placeholder_prompt(shape: Shape, hint: dict) -> str:
    if isinstance(shape, Nectar):
        return hint.get("prompt") or "\n\nHuman: ?\n\nAssistant:"
    return "?"


def _message(order: list[str], role: str, content: str) -> dict:
    values = {"role": role, "content": content}
    return {k: values[k] for k in order}


def _picked_lists(row: dict, parsed: Scored) -> dict | None:
    """``{"order": [...]}`` when the row's chosen/rejected message lists are exactly
    [prompt, best response] and [prompt, worst response] (the public Magpie DPO files), else None."""
    chosen, rejected = row.get("chosen"), row.get("rejected")
    if not (isinstance(chosen, list) and isinstance(rejected, list) and chosen and isinstance(chosen[0], dict)):
        return None
    order = list(chosen[0])
    if sorted(order) != ["content", "role"] or parsed.prompt_key != "instruction":
        return None
    best, worst = best_and_worst(parsed.scores)
    prompt = parsed.prompt[0].content
    expected = [[_message(order, "user", prompt), _message(order, "assistant", parsed.responses[i])]
                for i in (best, worst)]
    if [chosen, rejected] != expected or any(list(m) != order for m in chosen + rejected):
        return None
    return {"order": order}


@hookimpl
def register_formats(register):
    register(ScoredFormat())
