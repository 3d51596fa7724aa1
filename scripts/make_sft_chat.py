"""Writes sft_chat.jsonl: short OpenAI-format chats with a planted, learnable answer pattern.

    .venv/bin/python scripts/make_sft_chat.py   # deterministic: same file every time

Every assistant reply follows a fixed template filled from the user's words (or a small fixed
table) and ends with the sign-off "Done." A few hundred rows of this teach the ~213k-parameter
embedded model the pattern within a few dozen CPU steps; its loss on held-out rows falls well
below that of the untrained model.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "datasets" / "train" / "sft_chat.jsonl"
SEED = 7
ROWS = 320

OPPOSITES = [("hot", "cold"), ("big", "small"), ("fast", "slow"), ("up", "down"), ("open", "closed"),
             ("light", "dark"), ("early", "late"), ("happy", "sad"), ("full", "empty"), ("old", "new"),
             ("high", "low"), ("wet", "dry"), ("hard", "soft"), ("left", "right"), ("loud", "quiet")]
COLOURS = [("banana", "yellow"), ("leaf", "green"), ("sky", "blue"), ("tomato", "red"), ("snow", "white"),
           ("coal", "black"), ("orange", "orange"), ("plum", "purple"), ("cloud", "grey"), ("grass", "green")]
NAMES = ["Ada", "Ben", "Cleo", "Dev", "Eva", "Finn", "Gus", "Hana", "Ivo", "Jade", "Kai", "Lena", "Max", "Nia"]
WORDS = ["apple", "river", "stone", "candle", "garden", "window", "pencil", "rocket", "tiger", "bridge",
         "music", "paper", "forest", "silver", "castle", "dragon"]
NUMBERS = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
SYSTEMS = ["You are a helpful assistant.", "You are a terse assistant. Answer in one line."]


def opposite(rng):
    a, b = rng.choice(OPPOSITES)
    if rng.random() < 0.5:
        a, b = b, a
    return [("user", f"What is the opposite of {a}?"), ("assistant", f"The opposite of {a} is {b}. Done.")]


def colour(rng):
    thing, col = rng.choice(COLOURS)
    return [("user", f"What colour is a {thing}?"), ("assistant", f"A {thing} is {col}. Done.")]


def count(rng):
    n = rng.randint(2, 9)
    return [("user", f"Count to {NUMBERS[n - 1]}."), ("assistant", ", ".join(NUMBERS[:n]).capitalize() + ". Done.")]


def repeat(rng):
    words = rng.sample(WORDS, 2)
    phrase = " ".join(words)
    return [("user", f"Repeat twice: {phrase}"), ("assistant", f"{phrase}, {phrase}. Done.")]


def name(rng):
    who = rng.choice(NAMES)
    return [("user", f"Hello, I am {who}."), ("assistant", f"Hello {who}! How can I help? Done."),
            ("user", "What is my name?"), ("assistant", f"Your name is {who}. Done.")]


TASKS = [opposite, colour, count, repeat, name]


def main() -> None:
    rng = random.Random(SEED)
    with OUT.open("w", encoding="utf-8") as out:
        for i in range(ROWS):
            turns = TASKS[i % len(TASKS)](rng)
            if rng.random() < 0.3:
                turns = [("system", rng.choice(SYSTEMS))] + turns
            out.write(json.dumps({"messages": [{"role": r, "content": c} for r, c in turns]}) + "\n")
    print(f"wrote {ROWS} rows to {OUT}")


if __name__ == "__main__":
    main()
