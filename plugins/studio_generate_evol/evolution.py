"""Evol-Instruct's prompts and elimination rules (Xu et al., 2023, "WizardLM: Empowering Large
Language Models to Follow Complex Instructions"), in this project's own wording.

In-depth evolution makes an instruction harder in one of five ways (add a constraint, deepen the
inquiry, make it concrete, ask for more reasoning steps, complicate its input); in-breadth evolution
("mutation") writes a new, rarer instruction in the same domain. An evolution is eliminated when:

1. the evolved instruction gives no information gain over the original (the model is asked);
2. the answer shows the model found it too hard: it says "sorry" and is short (under 80 words);
3. the answer holds only punctuation and stop words;
4. the evolved instruction copies words of the evolving prompt ("#Given Prompt#", "rewritten prompt"...).
"""
from __future__ import annotations

import re

IN_DEPTH = {
    "add_constraints": "Add exactly one more constraint or requirement to it.",
    "deepening": "If it asks about a subject, ask about that subject in more depth and more breadth.",
    "concretizing": "Replace general concepts in it with more specific ones.",
    "increase_reasoning": "If it can be solved with a few simple thinking steps, rewrite it so that it "
                          "explicitly asks for reasoning in several steps.",
    "complicate_input": "Make its input more complex: add data in a structured form it must work with, such "
                        "as a table, JSON, XML, SQL, code or a formula, that fits the task.",
}
BREADTH = "breadth"
OPERATIONS = (*IN_DEPTH, BREADTH)
DEFAULT_OPERATIONS = ("add_constraints", "deepening", "concretizing", "increase_reasoning", BREADTH)


def in_depth_prompt(instruction: str, operation: str) -> str:
    return (
        "You rewrite prompts to make them harder. Rewrite the prompt given below into a more complex version "
        "that would challenge strong AI assistants, while staying reasonable: a person must be able to "
        "understand it and answer it. Keep everything that is not plain text (tables, code) and keep any "
        "input the prompt contains.\n\n"
        f"Method: {IN_DEPTH[operation]}\n\n"
        "Do not make it wordy: add at most 10 to 20 words. Write only the rewritten prompt; do not mention "
        "these directions or use the words 'given prompt' or 'rewritten prompt'.\n\n"
        f"#Given Prompt#:\n{instruction}\n\n#Rewritten Prompt#:\n"
    )


def in_breadth_prompt(instruction: str) -> str:
    return (
        "You create prompts. Take inspiration from the prompt given below and write a brand-new prompt in the "
        "same domain but on a rarer, less common topic. Keep its length and difficulty similar. It must be "
        "reasonable: a person must be able to understand it and answer it. Write only the new prompt; do not "
        "use the words 'given prompt' or 'created prompt'.\n\n"
        f"#Given Prompt#:\n{instruction}\n\n#Created Prompt#:\n"
    )


def evolve_prompt(instruction: str, operation: str) -> str:
    return in_breadth_prompt(instruction) if operation == BREADTH else in_depth_prompt(instruction, operation)


def equality_prompt(original: str, evolved: str) -> str:
    return (
        "Two instructions were written for an AI assistant. Decide whether the second one adds nothing to the "
        "first: the same constraints and requirements, and the same depth and breadth of inquiry.\n\n"
        f"First instruction:\n{original}\n\nSecond instruction:\n{evolved}\n\n"
        "Are they equivalent? Answer Yes or No only."
    )


# --- elimination rules --------------------------------------------------------------------------

# Rule 4: words of the evolving prompt that leak into the evolved instruction.
PROMPT_WORDS = re.compile(r"#\s*(?:given|rewritten|created)\s+prompt\s*#|\b(?:given|rewritten|created)\s+prompt\b",
                          re.I)

# Rule 3: an English stop-word list (function words: articles, pronouns, auxiliaries, prepositions,
# conjunctions and the like).
STOP_WORDS = frozenset("""
a about above after again against all am an and any are aren't as at be because been before being below between
both but by can can't cannot could couldn't did didn't do does doesn't doing don't down during each few for from
further had hadn't has hasn't have haven't having he he'd he'll he's her here here's hers herself him himself his
how how's i i'd i'll i'm i've if in into is isn't it it's its itself just let's me more most mustn't my myself no
nor not now of off on once only or other ought our ours ourselves out over own same shan't she she'd she'll she's
should shouldn't so some such than that that's the their theirs them themselves then there there's these they
they'd they'll they're they've this those through to too under until up very was wasn't we we'd we'll we're we've
were weren't what what's when when's where where's which while who who's whom why why's will with won't would
wouldn't you you'd you'll you're you've your yours yourself yourselves s t d ll m o re ve y also yes ok okay
""".split())
_WORD = re.compile(r"[a-z0-9]+(?:['’][a-z]+)?")


def copies_prompt_words(evolved: str) -> bool:
    return bool(PROMPT_WORDS.search(evolved))


def is_short_apology(response: str, max_words: int) -> bool:
    return "sorry" in response.lower() and len(response.split()) < max_words


def only_stop_words(response: str) -> bool:
    tokens = [t.replace("’", "'") for t in _WORD.findall(response.lower())]
    return all(t in STOP_WORDS for t in tokens)  # also true for no words at all (punctuation, empty)


def elimination(evolved: str, response: str | None, sorry_max_words: int) -> tuple[str, str] | None:
    """``(rule, reason)`` when a rule other than the model-judged one eliminates the evolution.
    ``response`` None checks the instruction only."""
    if not evolved.strip():
        return "empty", "the evolved instruction is empty"
    if copies_prompt_words(evolved):
        return "copies_prompt", "the evolved instruction copies words of the evolving prompt (rule 4)"
    if response is None:
        return None
    if is_short_apology(response, sorry_max_words):
        return "sorry", f"the answer says sorry in under {sorry_max_words} words: too hard for the model (rule 2)"
    if only_stop_words(response):
        return "stop_words", "the answer holds only punctuation and stop words (rule 3)"
    return None
