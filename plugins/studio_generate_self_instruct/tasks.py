"""Self-Instruct's text handling: the prompts, parsing numbered task lists and instance answers,
and the filters a new instruction must pass before it joins the pool.

The prompts are this project's own wording of the method in Wang et al. (2022), "Self-Instruct:
Aligning Language Models with Self-Generated Instructions": show a few tasks from the pool, ask
for more in a numbered list, then make one instance per task (output first for classification
tasks so that labels are not skewed towards one class, input first otherwise).
"""
from __future__ import annotations

import re
import string
from dataclasses import dataclass

# The published blacklist (tasks a text-only model cannot do), plus the media words Alpaca added.
DEFAULT_BLACKLIST = ("image", "images", "graph", "graphs", "picture", "pictures", "file", "files", "map", "maps",
                     "draw", "plot", "go to", "video", "audio", "music", "flowchart", "diagram")


# --- prompts -------------------------------------------------------------------------------------


def brainstorm_prompt(examples: list[str], new_count: int) -> str:
    k = len(examples)
    lines = [
        "Below is a numbered list of tasks that people give to an AI assistant.",
        f"Extend the list with {new_count} new tasks, numbered {k + 1} to {k + new_count}.",
        "Every new task must differ from the listed ones and from each other: vary the kind of task (writing, "
        "rewriting, classification, question answering, advice, reasoning, coding, extraction...), the topic and "
        "the wording. Each task is one self-contained instruction that can be done with text alone.",
        "Answer with the new numbered tasks only, one per line.",
        "",
    ]
    lines += [f"{i}. {one_line(text)}" for i, text in enumerate(examples, start=1)]
    return "\n".join(lines)


def classification_prompt(instruction: str) -> str:
    return (
        "Decide whether a task is a classification task: one whose answer is a label picked from a small, "
        "fixed set (such as positive/negative, yes/no, or one of a few categories).\n\n"
        "Task: Tell whether this movie review is positive or negative.\nClassification: Yes\n\n"
        "Task: Write a short poem about autumn.\nClassification: No\n\n"
        "Task: Which of these animals is a mammal: shark, dolphin, trout?\nClassification: Yes\n\n"
        "Task: Summarise the paragraph in one sentence.\nClassification: No\n\n"
        f"Task: {one_line(instruction)}\nClassification (answer Yes or No):"
    )


def input_first_prompt(instruction: str) -> str:
    return (
        "Make one worked example of the task below. First write the input the task works on; if the task "
        "needs no input, write 'Input: none'. Then write the correct output for that input.\n\n"
        "Answer in exactly this form:\nInput: <the input, or none>\nOutput: <the output>\n\n"
        f"Task: {instruction.strip()}"
    )


def output_first_prompt(instruction: str) -> str:
    return (
        "The task below is a classification task. First pick one of its possible class labels, then write an "
        "input for which that label is the correct answer; if the task needs no input, write 'Input: none'.\n\n"
        "Answer in exactly this form:\nClass label: <the label>\nInput: <the input, or none>\n\n"
        f"Task: {instruction.strip()}"
    )


def one_line(text: str) -> str:
    """An instruction as one list item: whitespace collapsed, no trailing colon."""
    return " ".join(text.split()).rstrip(":").strip()


# --- parsing -------------------------------------------------------------------------------------

# "12. task", "12) task", "12 . task", "12: task", "**12.** task", "Task 12: task"
_ITEM = re.compile(r"^\s*(?:[*_#>]+\s*)?(?:task|instruction)?\s*(\d{1,3})\s*[.):\]]\s*(.*)$", re.I)
_EMPHASIS = re.compile(r"(\*\*|__)(.+?)\1")
_STRAY_EMPHASIS = re.compile(r"^(?:\*\*|__)\s*|\s*(?:\*\*|__)$")
_LABEL = re.compile(r"^(?:new\s+)?(?:task|instruction)\s*:\s*", re.I)
_PAIRS = (("**", "**"), ("__", "__"), ("*", "*"), ("_", "_"), ("`", "`"), ('"', '"'), ("“", "”"), ("'", "'"),
          ("‘", "’"))


def parse_numbered_list(text: str, truncated: bool = False) -> list[str]:
    """The items of a numbered list in a model's answer, in order. Lines before the first number
    are preamble; lines after an item continue it. ``truncated`` (the answer hit max_tokens) drops
    the last item, which may be cut off."""
    items: list[list[str]] = []
    for line in text.replace("\r\n", "\n").split("\n"):
        match = _ITEM.match(line)
        if match:
            items.append([match.group(2)])
        elif items and line.strip():
            items[-1].append(line.strip())
    if truncated and items:
        items.pop()
    out = []
    for parts in items:
        item = clean_instruction(" ".join(parts))
        if item:
            out.append(item)
    return out


def clean_instruction(text: str) -> str:
    text = " ".join(text.split())
    text = _STRAY_EMPHASIS.sub("", _EMPHASIS.sub(r"\2", text))
    text = _LABEL.sub("", text)
    unwrapped = True
    while unwrapped:  # only matching pairs around the whole item: 'Translate "hi"' keeps its quote
        unwrapped = False
        for left, right in _PAIRS:
            if len(text) > len(left) + len(right) and text.startswith(left) and text.endswith(right):
                text, unwrapped = text[len(left):-len(right)].strip(), True
                break
    if text[:1].islower():
        text = text[0].upper() + text[1:]
    return text


@dataclass
class Instance:
    input: str
    output: str


_FIELD = re.compile(r"^[ \t]*[*_#>]*[ \t]*(input|output|class[ \t]*label|label)[ \t]*[*_]*[ \t]*:[ \t]*[*_]*",
                    re.I | re.M)
_NO_INPUT = {"", "none", "<none>", "(none)", "n/a", "na", "null", "nothing", "no input", "-", "empty", "<noinput>",
             "<no input>", "not applicable", "none."}


def _fields(text: str) -> dict[str, str]:
    """First value of each ``Field:`` in an answer (a field runs until the next field)."""
    matches = list(_FIELD.finditer(text))
    out: dict[str, str] = {}
    for i, match in enumerate(matches):
        name = re.sub(r"\s+", " ", match.group(1).lower())
        name = "label" if name in ("class label", "classlabel") else name
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        out.setdefault(name, text[match.end():end].strip().strip("*_").strip())
    return out


def _clean_input(value: str) -> str:
    return "" if value.strip().strip(".").lower() in _NO_INPUT else value.strip()


def parse_instance(text: str, classification: bool) -> Instance | str:
    """The instance in an answer, or a reason string when there is none."""
    fields = _fields(text)
    if classification:
        label = fields.get("label") or fields.get("output") or ""
        if not label:
            return "no class label in the answer"
        return Instance(_clean_input(fields.get("input", "")), label)
    output = fields.get("output", "")
    if not output:
        return "no output in the answer"
    return Instance(_clean_input(fields.get("input", "")), output)


# --- filters -------------------------------------------------------------------------------------


def blacklist_pattern(words: list[str] | tuple[str, ...]) -> re.Pattern | None:
    words = [w.strip() for w in words if w.strip()]
    if not words:
        return None
    alternatives = "|".join(r"\s+".join(map(re.escape, w.split())) for w in sorted(words, key=len, reverse=True))
    return re.compile(rf"\b(?:{alternatives})\b", re.I)


def screen(instruction: str, min_words: int, max_words: int, blacklist: re.Pattern | None) -> str | None:
    """Why an instruction is rejected before the similarity check, or None when it passes."""
    if not instruction:
        return "empty"
    count = len(instruction.split())
    if count < min_words:
        return "too short"
    if count > max_words:
        return "too long"
    if blacklist is not None and blacklist.search(instruction):
        return "blacklisted keyword"
    first = instruction[0]
    if first in string.punctuation:
        return "starts with punctuation"
    if not first.isascii():
        return "starts with non-ascii"
    return None
