"""GSM8K, exactly as lm-evaluation-harness 0.4.13 defines its ``gsm8k`` task.

* Prompt: ``"Question: {question}\\nAnswer:"``; each of the k shots is the same with ``" " + answer``
  (the full worked answer) and ``"\\n\\n"`` after it. Shots come from a train file, drawn by
  ``random.Random(1234).sample(train, k)`` once per test item in file order (one generator for the
  whole file, as lm-eval's sampler advances across documents), so item i gets the same shots as in lm-eval.
* Greedy generation up to ``max_gen_toks`` (256) new tokens, stopped at ``"Question:"``, ``"</s>"``,
  ``"<|im_end|>"`` and the model's end of sequence.
* Two filters on the completion, then ``exact_match`` against the reference answer, both sides with the
  regexes ``,``, ``\\$``, ``(?s).*#### ``, ``\\.$`` removed and lower-cased:

  =========================  ==========================  ============================================
  studio metric              lm-eval metric              answer taken from the completion
  =========================  ==========================  ============================================
  ``exact_match_strict``     ``exact_match,strict-match``  the first ``#### N``
  ``exact_match_flexible``   ``exact_match,flexible-extract``  the last number (``-?[$0-9.,]{2,}`` or ``-?[0-9]+``)
  =========================  ==========================  ============================================
"""
from __future__ import annotations

import hashlib
import random
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from studio.evaluation.base import EvalContext, EvalDataError, Evaluator
from studio_eval_generative.jsonl_files import SUFFIXES, data_file, read_jsonl, text_field

DEFAULT_SHOTS = 5
FEWSHOT_SEED = 1234  # lm-eval's default --fewshot_random_seed
UNTIL = ["Question:", "</s>", "<|im_end|>"]
TARGET_DELIMITER = " "
FEWSHOT_DELIMITER = "\n\n"
STRICT = re.compile(r"#### (\-?[0-9\.\,]+)")
FLEXIBLE = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")
IGNORED = [",", "\\$", "(?s).*#### ", "\\.$"]
INVALID = "[invalid]"  # what lm-eval's regex filter gives when nothing matches


class Gsm8kOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = Field(..., description="GSM8K test file (JSONL with question and answer), or a folder holding it")
    num_fewshot: int | None = Field(None, ge=0, description="worked examples before each question (empty = 5, "
                                                            "lm-eval's default)")
    fewshot_from: str | None = Field(None, description="JSONL file the examples come from (empty = the train file "
                                                       "beside the test file, e.g. gsm8k_train.jsonl)")
    max_gen_toks: int = Field(256, ge=1, description="most tokens generated per answer (lm-eval's default: 256)")


def question_prompt(question: str) -> str:
    return f"Question: {question}\nAnswer:"


def build_prompt(question: str, shots: list[dict[str, str]]) -> str:
    examples = "".join(question_prompt(s["question"]) + TARGET_DELIMITER + s["answer"] + FEWSHOT_DELIMITER
                       for s in shots)
    return examples + question_prompt(question)


def strict_answer(completion: str) -> str:
    found = STRICT.findall(completion)
    return found[0].strip() if found else INVALID


def flexible_answer(completion: str) -> str:
    found = FLEXIBLE.findall(completion)
    if not found:
        return INVALID
    groups = [g for g in found[-1] if g]
    return groups[0].strip() if groups else INVALID


def normalise(text: str) -> str:
    for pattern in IGNORED:
        text = re.sub(pattern, "", text)
    return text.lower()


def exact_match(prediction: str, reference: str) -> float:
    return 1.0 if normalise(prediction) == normalise(reference) else 0.0


def read_problems(path: Path) -> list[dict[str, str]]:
    rows = []
    for number, row in read_jsonl(path):
        rows.append({"question": text_field(path, number, row, "question"),
                     "answer": text_field(path, number, row, "answer")})
    if not rows:
        raise EvalDataError(path, None, None, "the file holds no questions")
    return rows


def train_file_beside(test: Path) -> Path | None:
    """The train file next to a test file: ``*test*`` renamed to ``*train*``, else the one file in the
    folder whose name holds "train" and starts like the test file's (``gsm8k_...``)."""
    if "test" in test.name:
        twin = test.with_name(test.name.replace("test", "train"))
        if twin.is_file():
            return twin
    prefix = re.split(r"[_\-.]", test.name, maxsplit=1)[0].lower()
    candidates = sorted(p for p in test.parent.iterdir()
                        if p.is_file() and p != test and p.name.endswith(SUFFIXES) and "train" in p.name.lower()
                        and p.name.lower().startswith(prefix))
    if len(candidates) > 1:
        names = ", ".join(p.name for p in candidates)
        raise EvalDataError(test.parent, None, "fewshot_from", f"several train files could give the examples "
                                                               f"({names}); name one with fewshot_from")
    return candidates[0] if candidates else None


class Gsm8k(Evaluator):
    name = "gsm8k"
    title = "GSM8K"
    summary = "Grade-school maths word problems: greedy worked answers, scored on the final number (lm-eval's gsm8k)"
    config_model = Gsm8kOptions
    uses = ("generate",)
    default_fewshot = DEFAULT_SHOTS
    primary_metric = "exact_match_strict"

    def test_file(self, config: Gsm8kOptions) -> Path:
        return data_file(config.path, "GSM8K test", prefer="test")

    def fewshot_file(self, config: Gsm8kOptions) -> Path | None:
        shots = DEFAULT_SHOTS if config.num_fewshot is None else config.num_fewshot
        if shots == 0:
            return None
        if config.fewshot_from:
            return data_file(config.fewshot_from, "GSM8K train", prefer="train")
        test = self.test_file(config)
        found = train_file_beside(test)
        if found is None:
            raise EvalDataError(test.parent, None, "fewshot_from",
                                f"{shots}-shot GSM8K needs worked examples: no train file beside {test.name}; "
                                f"name one with fewshot_from, or set num_fewshot to 0")
        return found

    def data_files(self, config: Gsm8kOptions) -> list[Path]:
        files = [self.test_file(config)]
        train = self.fewshot_file(config)
        return files + ([train] if train is not None else [])

    def load(self, config: Gsm8kOptions) -> list[dict[str, Any]]:
        test = self.test_file(config)
        problems = read_problems(test)
        shots = DEFAULT_SHOTS if config.num_fewshot is None else config.num_fewshot
        train_path = self.fewshot_file(config)
        train = read_problems(train_path) if train_path is not None else []
        if shots > len(train) and shots:
            raise EvalDataError(train_path, None, None, f"{shots} examples asked for, the file holds {len(train)}")
        rnd = random.Random(FEWSHOT_SEED)
        items = []
        for index, problem in enumerate(problems):
            prompt = build_prompt(problem["question"], rnd.sample(train, shots) if shots else [])
            digest = hashlib.sha256(f"{prompt}\0{problem['answer']}".encode()).hexdigest()[:8]
            items.append({"id": f"{index}-{digest}", "question": problem["question"], "answer": problem["answer"],
                          "prompt": prompt})
        return items

    def score(self, ctx: EvalContext, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        def progress(done: int, total: int) -> None:
            ctx.check_cancelled()
            ctx.progress(done, total, "generating")

        outputs = ctx.model.generate([item["prompt"] for item in items], until=list(UNTIL),
                                     max_new_tokens=ctx.config.max_gen_toks, batch_size=ctx.batch_size,
                                     progress=progress)
        samples = []
        for item, texts in zip(items, outputs):
            completion = texts[0]
            strict, flexible = strict_answer(completion), flexible_answer(completion)
            samples.append({
                "id": item["id"], "prompt": item["prompt"], "target": normalise(item["answer"]),
                "prediction": completion, "extracted": {"strict": strict, "flexible": flexible},
                "metrics": {"exact_match_strict": exact_match(strict, item["answer"]),
                            "exact_match_flexible": exact_match(flexible, item["answer"])},
            })
        return samples
