"""Writes the RLHF pipeline's data (recipes/rlhf.yaml): rlhf_sft.jsonl (SFT chats) and
rlhf_heldout.jsonl (prompts no step trains on).

    .venv/bin/python scripts/make_rlhf_chat.py   # deterministic: same files every time

Short everyday questions from four templates (the colour of a thing, the opposite of a word, the
day after a day, the sound an animal makes), each with a one-line answer. The SFT replies carry
the answer in three tones: mostly bare, some curt ("Fine.", "Obviously"), a few with a courtesy
("Happy to help!", "Thanks for asking."). SFT imitates that mix; only the preference pairs of
rm_style.jsonl say the courteous tone is the better one, so PPO against a reward model trained on
them should make courtesy more frequent than SFT alone. The held-out prompts are questions no
training row asks (the last entries of each table).
"""
from __future__ import annotations

import json
import random
from pathlib import Path

FOLDER = Path(__file__).resolve().parents[1] / "datasets" / "train"
SEED = 11
SFT_ROWS = 240

COLOURS = [("banana", "yellow"), ("leaf", "green"), ("sky", "blue"), ("tomato", "red"), ("snow", "white"),
           ("coal", "black"), ("plum", "purple"), ("cloud", "grey"), ("lemon", "yellow"), ("carrot", "orange"),
           ("cherry", "red"), ("frog", "green"), ("crow", "black"), ("swan", "white")]
OPPOSITES = [("hot", "cold"), ("big", "small"), ("fast", "slow"), ("up", "down"), ("open", "closed"),
             ("light", "dark"), ("early", "late"), ("full", "empty"), ("wet", "dry"), ("loud", "quiet"),
             ("hard", "soft"), ("old", "new")]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
ANIMALS = [("dog", "barks"), ("cat", "meows"), ("cow", "moos"), ("duck", "quacks"), ("lion", "roars"),
           ("owl", "hoots"), ("sheep", "bleats"), ("horse", "neighs"), ("bee", "buzzes"), ("pig", "oinks")]
# The last few of each table are held out.
HELD_OUT = {"colour": 4, "opposite": 3, "day": 2, "animal": 3}

POLITE = ["Happy to help! {}", "Thanks for asking. {}"]
CURT = ["Fine. {}", "Obviously {}"]


def questions(held_out: bool) -> list[tuple[str, str]]:
    def part(table, kind):
        cut = len(table) - HELD_OUT[kind]
        return table[cut:] if held_out else table[:cut]

    out = [(f"What colour is a {thing}?", f"A {thing} is {colour}.") for thing, colour in part(COLOURS, "colour")]
    out += [(f"What is the opposite of {a}?", f"The opposite of {a} is {b}.") for a, b in part(OPPOSITES, "opposite")]
    days = part(list(zip(DAYS, DAYS[1:] + DAYS[:1])), "day")
    out += [(f"What day comes after {a}?", f"{b} comes after {a}.") for a, b in days]
    out += [(f"What sound does a {animal} make?", f"A {animal} {sound}.") for animal, sound in part(ANIMALS, "animal")]
    return out


def reply(rng: random.Random, answer: str) -> str:
    tone = rng.random()
    if tone < 0.15:
        return rng.choice(POLITE).format(answer)
    if tone < 0.35:
        return rng.choice(CURT).format(answer[0].lower() + answer[1:] if answer.startswith(("A ", "The ")) else answer)
    return answer


def write(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")


def main() -> None:
    rng = random.Random(SEED)
    train = questions(held_out=False)
    sft = []
    for _ in range(SFT_ROWS):
        question, answer = rng.choice(train)
        sft.append({"messages": [{"role": "user", "content": question},
                                 {"role": "assistant", "content": reply(rng, answer)}]})
    write(FOLDER / "rlhf_sft.jsonl", sft)
    write(FOLDER / "rlhf_heldout.jsonl", [{"messages": [{"role": "user", "content": q},
                                                        {"role": "assistant", "content": a}]}
                                          for q, a in questions(held_out=True)])


if __name__ == "__main__":
    main()
