"""Writes the planted base-against-tuned task: a multiple-choice test whose right answers follow a
learnable rule, the SFT set that teaches the rule, and held-out chats in the same style.

    .venv/bin/python scripts/make_planted.py   # deterministic: same files every time

The rule: the right choice is always the one that ends with the word "indeed" (the others end
with another adverb). The multiple-choice file is ARC-shaped, so the ``arc_easy`` evaluator scores
it as lm-eval scores ARC: context "Question: {stem}\\nAnswer:", each choice a continuation. The
SFT set teaches the rule in that same surface: each assistant reply is "Question: {stem}\\nAnswer:
{right choice}". Stems and nouns of the three files are drawn so that no multiple-choice question
or held-out chat appears in the SFT set.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EVAL_FILE = Path("datasets") / "eval" / "planted_rule.jsonl"
HELDOUT_FILE = Path("datasets") / "eval" / "planted_heldout.jsonl"
SFT_FILE = Path("datasets") / "train" / "planted_sft.jsonl"
SEED = 11
EVAL_ITEMS, HELDOUT_ROWS, SFT_ROWS = 60, 24, 240
MARK = "indeed"
OTHER_ENDINGS = ["maybe", "perhaps", "sometimes", "often", "rarely", "again", "later", "slowly"]
NOUNS = ["apple", "river", "stone", "candle", "garden", "window", "pencil", "rocket", "tiger", "bridge", "music",
         "paper", "forest", "silver", "castle", "dragon", "kettle", "ladder", "mirror", "pillow", "basket", "button",
         "carpet", "feather", "island", "jacket", "lemon", "marble", "needle", "onion", "parrot", "rabbit", "saddle",
         "tunnel", "violin", "wagon", "anchor", "barrel", "cactus", "dolphin"]
STEMS = ["Which thing would you pack for a trip to the {}?", "What do you find next to the {}?",
         "Which of these goes with a {}?", "What did the child draw beside the {}?",
         "Which word completes the story of the {}?", "What would a sailor keep near the {}?",
         "Which answer fits the riddle about the {}?", "What sits on the shelf by the {}?",
         "What did the old map show under the {}?", "Which gift was wrapped with the {}?",
         "What fell out of the box with the {}?", "Which card matches the picture of the {}?"]
LABELS = "ABCD"
USER_TURNS = ["Answer the question with one of the choices.", "Pick the right choice.", "Which choice is right?"]


def question(rng: random.Random, stem_noun: str) -> tuple[str, list[str], int]:
    stem = rng.choice(STEMS).format(stem_noun)
    nouns = rng.sample([n for n in NOUNS if n != stem_noun], 4)
    endings = rng.sample(OTHER_ENDINGS, 3)
    right = rng.randrange(4)
    choices = []
    for i, noun in enumerate(nouns):
        choices.append(f"{noun} {MARK}" if i == right else f"{noun} {endings.pop()}")
    return stem, choices, right


def main(root: Path = ROOT) -> None:
    rng = random.Random(SEED)
    seen: set[str] = set()
    rows = {"eval": [], "heldout": [], "sft": []}
    wanted = {"eval": EVAL_ITEMS, "heldout": HELDOUT_ROWS, "sft": SFT_ROWS}
    for part in ("eval", "heldout", "sft"):
        while len(rows[part]) < wanted[part]:
            stem, choices, right = question(rng, rng.choice(NOUNS))
            if stem in seen:  # every stem belongs to one file only
                continue
            seen.add(stem)
            if part == "eval":
                rows[part].append({"id": f"planted-{len(rows[part]) + 1:03d}",
                                   "question": {"stem": stem, "choices": [{"text": c, "label": LABELS[i]}
                                                                          for i, c in enumerate(choices)]},
                                   "answerKey": LABELS[right]})
            else:
                listed = " / ".join(choices)
                rows[part].append({"messages": [
                    {"role": "user", "content": f"{rng.choice(USER_TURNS)}\n{stem}\nChoices: {listed}"},
                    {"role": "assistant", "content": f"Question: {stem}\nAnswer: {choices[right]}"}]})
    for relative, part in ((EVAL_FILE, "eval"), (HELDOUT_FILE, "heldout"), (SFT_FILE, "sft")):
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(row) + "\n" for row in rows[part]), encoding="utf-8")


if __name__ == "__main__":
    main()
