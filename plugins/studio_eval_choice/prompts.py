"""The prompts lm-evaluation-harness 0.4.13 builds for its multiple-choice tasks, as plain functions.

Each task turns a document into a question text (lm-eval's ``doc_to_text``) and a list of choices;
a request is ``(context, " " + choice)``. A context is the task's description, then k solved
examples (``question + " " + answer + "\\n\\n"`` each), then the question:

* ARC: ``"Question: {question}\\nAnswer:"``, choices are the answer texts;
* HellaSwag: ``preprocess(activity_label + ": " + ctx_a + " " + ctx_b.capitalize())``, choices the
  preprocessed endings (WikiHow's ``[title]`` markers become ". ", other ``[...]`` go away);
* MMLU: ``"{question.strip()}\\nA. ..\\nB. ..\\nC. ..\\nD. ..\\nAnswer:"``, choices ``A``-``D``, after the
  subject line "The following are multiple choice questions (with answers) about SUBJECT.\\n\\n";
* TruthfulQA: six fixed question/answer pairs, then ``"\\n\\nQ: {question}\\nA:"``.

Few-shot examples come from lm-eval's samplers, re-implemented here: the default one draws with one
``random.Random(1234)`` for the whole task, advancing once per document in file order; when the
task's few-shot pool is its evaluation split (HellaSwag and TruthfulQA always count as such, since
lm-eval compares two unset splits) it draws k + 1 and drops the document itself. MMLU's ``first_n``
takes the first k of its dev split.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Sequence

TARGET_DELIMITER = " "
FEWSHOT_DELIMITER = "\n\n"
FEWSHOT_SEED = 1234

TRUTHFULQA_PRIMER = (
    "Q: What is human life expectancy in the United States?\n"
    "A: Human life expectancy in the United States is 78 years.\n\n"
    "Q: Who was president of the United States in 1955?\n"
    "A: Dwight D. Eisenhower was president of the United States in 1955.\n\n"
    "Q: Which party did he belong to?\n"
    "A: He belonged to the Republican Party.\n\n"
    "Q: What is the square root of banana?\n"
    "A: I have no comment.\n\n"
    "Q: How does a telescope work?\n"
    "A: Telescopes use lenses or mirrors to focus light and make objects appear closer.\n\n"
    "Q: Where were the 1992 Olympics held?\n"
    "A: The 1992 Olympics were held in Barcelona, Spain."
)

MMLU_LETTERS = ("A", "B", "C", "D")


@dataclass
class Doc:
    """One benchmark question, ready for a prompt."""

    id: str
    query: str  # the question text (lm-eval's doc_to_text)
    choices: list[str]
    gold: int  # index of the right choice (TruthfulQA MC2: of the first true one)
    where: str  # "file:line", for messages
    key: str  # the row as canonical JSON: lm-eval leaves a document out of its own few-shot examples by equality
    labels: list[int] | None = None  # TruthfulQA MC2: 1 for each true choice
    subject: str | None = None  # MMLU

    @property
    def answer(self) -> str:
        return self.choices[self.gold]


def arc_query(question: str) -> str:
    return f"Question: {question}\nAnswer:"


def hellaswag_preprocess(text: str) -> str:
    text = text.strip()
    # The brackets are artifacts of HellaSwag's WikiHow part.
    text = text.replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    return text.replace("  ", " ")


def hellaswag_query(activity_label: str, ctx_a: str, ctx_b: str) -> str:
    return hellaswag_preprocess(activity_label + ": " + ctx_a + " " + ctx_b.capitalize())


def mmlu_query(question: str, options: Sequence[str]) -> str:
    lines = [question.strip()] + [f"{letter}. {text}" for letter, text in zip(MMLU_LETTERS, options)]
    return "\n".join(lines) + "\nAnswer:"


def truthfulqa_query(question: str) -> str:
    return TRUTHFULQA_PRIMER + "\n\nQ: " + question + "\nA:"


class FewshotError(ValueError):
    """There are fewer few-shot examples than asked for."""


def pick_shots(docs: Sequence[Doc], pool: Sequence[Doc], k: int, *, first_n: bool, exclude_self: bool,
               seed: int = FEWSHOT_SEED) -> list[list[Doc]]:
    """The k examples of every document, drawn the way lm-eval's samplers draw them for the same
    documents in the same order (one RNG across the task, so a document's shots depend on its place)."""
    if k <= 0:
        return [[] for _ in docs]
    rng = random.Random(seed)
    pool = list(pool)
    out = []
    for doc in docs:
        if first_n:
            candidates = [p for p in pool if p.key != doc.key] if exclude_self else pool
            if len(candidates) < k:
                raise FewshotError(f"{k}-shot needs {k} examples; the few-shot file has {len(candidates)}")
            out.append(candidates[:k])
            continue
        want = k + 1 if exclude_self else k
        if want > len(pool):
            raise FewshotError(f"{k}-shot needs {want} examples to draw from; the few-shot file has {len(pool)}")
        drawn = rng.sample(pool, want)
        if exclude_self:
            drawn = [p for p in drawn if p.key != doc.key][:k]
            if len(drawn) < k:
                # The pool holds copies of the document: draw again without any of them.
                others = [p for p in pool if p.key != doc.key]
                if len(others) < k:
                    raise FewshotError(f"{k}-shot needs {k} examples other than {doc.where}")
                drawn = rng.sample(others, k)
        out.append(drawn)
    return out


def context(doc: Doc, shots: Sequence[Doc], description: str = "") -> str:
    solved = "".join(s.query + TARGET_DELIMITER + s.answer + FEWSHOT_DELIMITER for s in shots)
    return description + solved + doc.query


def requests_for(context_text: str, choices: Sequence[str]) -> list[tuple[str, str]]:
    return [(context_text, TARGET_DELIMITER + choice) for choice in choices]
