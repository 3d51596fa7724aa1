"""The multiple-choice evaluators: ARC Easy and Challenge, HellaSwag, MMLU, TruthfulQA MC1 and MC2.

``load`` reads the local file, draws the few-shot examples and builds each item's full context, so
an item scores the same in any chunk and on any re-run. ``score`` sends every choice of every item
of a chunk to the model in one ``loglikelihood`` call (the scorer shares contexts and prefixes).
Rows that cannot be read are left out and listed in ``evaluator.skipped`` (file, line, field and
message), which the runner reports as ``item_rejected`` events.
"""
from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from studio.evaluation.base import EvalContext, EvalDataError, Evaluator
from studio.evaluation.stats import mean_with_stderr, weighted_group

from studio_eval_choice import files
from studio_eval_choice.mmlu_subjects import GROUPS, description, group_of
from studio_eval_choice.prompts import Doc, FewshotError, context, pick_shots, requests_for
from studio_eval_choice.scoring import choice_metrics, true_mass

FEWSHOT_HELP = ("few-shot examples; default: a file named like the data file with 'train' in place of its "
                "split word, beside it; else the data file itself, leaving each item out of its own examples")


class ChoiceOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = Field(description="the benchmark file")
    num_fewshot: int | None = Field(None, ge=0, description="solved examples before each question "
                                                             "(default: lm-eval's, 0)")
    fewshot_from: str | None = Field(None, description=FEWSHOT_HELP)


class ArcOptions(ChoiceOptions):
    path: str = Field(description="ARC JSONL: AI2's {id, question: {stem, choices}, answerKey} or the flat "
                                  "Hugging Face rows")


class HellaSwagOptions(ChoiceOptions):
    path: str = Field(description="HellaSwag JSONL {activity_label, ctx_a, ctx_b, ctx, endings, label}")


class TruthfulQAOptions(ChoiceOptions):
    path: str = Field(description="TruthfulQA MC JSON {question, mc1_targets, mc2_targets} (or mc_task.json), "
                                  "or TruthfulQA.csv")
    num_fewshot: int | None = Field(None, ge=0, description="solved examples before each question, after the six "
                                                             "fixed ones (default 0; lm-eval keeps TruthfulQA at 0 "
                                                             "whatever its --num_fewshot says)")


class MMLUOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = Field(description="a folder holding dev/val/test folders of SUBJECT_SPLIT.csv files "
                                  "(question,A,B,C,D,answer, no header), one split's folder, or one subject's CSV")
    split: Literal["test", "val", "dev"] = Field("test", description="the split scored when path is a folder")
    num_fewshot: int | None = Field(None, ge=0, description="solved examples before each question "
                                                             "(default: lm-eval's, 0); the first k of the dev file")
    fewshot_from: str | None = Field(None, description="a folder of SUBJECT_dev.csv files, or one dev CSV; default: "
                                                       "the dev folder beside the scored split")


SPLIT_WORD = re.compile(r"(^|[-_. ])(train|test|validation|val|dev)(?=$|[-_. ])")


def _split_free(name: str) -> str:
    return SPLIT_WORD.sub("", name.lower())


def train_file_beside(path: Path) -> Path | None:
    """``ARC-Challenge-Test.jsonl`` -> ``ARC-Challenge-Train.jsonl``, ``x_sample.jsonl`` -> ``x_train_sample.jsonl``."""
    wanted = _split_free(path.name)
    for other in sorted(path.parent.iterdir()):
        if other != path and other.is_file() and "train" in other.name.lower() and _split_free(other.name) == wanted:
            return other
    return None


class ChoiceTask(Evaluator):
    """What the multiple-choice tasks share: items with contexts, one log-likelihood call per chunk."""

    uses = ("loglikelihood",)
    default_fewshot = 0
    primary_metric = "acc_norm"
    # lm-eval leaves a document out of its own examples only when the few-shot split is the
    # evaluation split; HellaSwag and TruthfulQA leave both unset, which compares equal.
    always_exclude_self: ClassVar[bool] = False

    def __init__(self) -> None:
        # Rows the last load left out: EvalDataError's (file, line, field, message).
        self.skipped: list[EvalDataError] = []

    def read(self, path: Path) -> files.Loaded:
        raise NotImplementedError

    def fewshot_file(self, config: ChoiceOptions) -> Path:
        data = Path(config.path)
        if config.fewshot_from:
            return Path(config.fewshot_from)
        return train_file_beside(data) or data

    def data_files(self, config: BaseModel) -> list[Path]:
        paths = [Path(config.path)]
        if self._shots(config) > 0:
            paths.append(self.fewshot_file(config))
        return sorted(set(paths))

    def _shots(self, config) -> int:
        return config.num_fewshot if config.num_fewshot is not None else self.default_fewshot

    def load(self, config: ChoiceOptions) -> list[dict[str, Any]]:
        data = Path(config.path)
        loaded = self.read(data)
        skipped = list(loaded.skipped)
        k = self._shots(config)
        if k > 0:
            pool_path = self.fewshot_file(config)
            same = pool_path.resolve() == data.resolve()
            if same:
                pool = loaded.docs
            else:
                pool_loaded = self.read(pool_path)
                pool, skipped = pool_loaded.docs, skipped + pool_loaded.skipped
            shots = self._pick(data, loaded.docs, pool, k, first_n=False,
                               exclude_self=same or self.always_exclude_self)
        else:
            shots = [[] for _ in loaded.docs]
        self.skipped = skipped
        if not loaded.docs:
            raise skipped[0] if skipped else EvalDataError(data, None, None, "no items")
        return [self.item(doc, context(doc, doc_shots)) for doc, doc_shots in zip(loaded.docs, shots)]

    @staticmethod
    def _pick(data: Path, docs: list[Doc], pool: list[Doc], k: int, *, first_n: bool,
              exclude_self: bool) -> list[list[Doc]]:
        try:
            return pick_shots(docs, pool, k, first_n=first_n, exclude_self=exclude_self)
        except FewshotError as exc:
            raise EvalDataError(data, None, "num_fewshot", str(exc)) from None

    def item(self, doc: Doc, context_text: str) -> dict[str, Any]:
        return {"id": doc.id, "context": context_text, "choices": doc.choices, "gold": doc.gold, "where": doc.where}

    def score(self, ctx: EvalContext, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if not ctx.model.supports("loglikelihood"):
            raise ValueError(f"{self.name} scores choices by log-likelihood, which "
                             f"{getattr(ctx.model, 'label', 'this model')} cannot give (an endpoint only generates)")
        ctx.check_cancelled()
        requests = [pair for it in items for pair in requests_for(it["context"], it["choices"])]
        total = len(requests)

        def progress(done: int, _total: int) -> None:
            ctx.progress(done, total, "choices scored")

        results = ctx.model.loglikelihood(requests, batch_size=ctx.batch_size, progress=progress)
        if len(results) != total:
            raise RuntimeError(f"the model returned {len(results)} log-likelihoods for {total} requests")
        samples, start = [], 0
        for it in items:
            logprobs = [float(lp) for lp, _greedy in results[start:start + len(it["choices"])]]
            start += len(it["choices"])
            samples.append(self.sample(it, logprobs))
        return samples

    def sample(self, item: dict[str, Any], logprobs: list[float]) -> dict[str, Any]:
        prediction, metrics = choice_metrics(logprobs, item["choices"], item["gold"])
        return {"id": item["id"], "prompt": item["context"], "choices": item["choices"], "scores": logprobs,
                "target": item["gold"], "prediction": prediction, "metrics": metrics}


class ArcEasy(ChoiceTask):
    name = "arc_easy"
    title = "ARC-Easy"
    summary = "AI2 Reasoning Challenge, easy set: grade-school science questions with 3-5 answers (acc, acc_norm)"
    config_model = ArcOptions

    def read(self, path):
        return files.read_arc(path)


class ArcChallenge(ArcEasy):
    name = "arc_challenge"
    title = "ARC-Challenge"
    summary = "AI2 Reasoning Challenge, challenge set: the questions simple retrieval gets wrong (acc, acc_norm)"


class HellaSwag(ChoiceTask):
    name = "hellaswag"
    title = "HellaSwag"
    summary = "commonsense sentence completion: pick the ending of an activity description (acc, acc_norm)"
    config_model = HellaSwagOptions
    always_exclude_self = True

    def read(self, path):
        return files.read_hellaswag(path)


class TruthfulQAMC1(ChoiceTask):
    name = "truthfulqa_mc1"
    title = "TruthfulQA MC1"
    summary = "questions people often answer falsely; acc: the one true answer scores highest"
    config_model = TruthfulQAOptions
    primary_metric = "acc"
    always_exclude_self = True
    variant = "mc1"

    def read(self, path):
        return files.read_truthfulqa(path, self.variant)

    def sample(self, item, logprobs):
        out = super().sample(item, logprobs)
        out["metrics"] = {"acc": out["metrics"]["acc"]}
        return out


class TruthfulQAMC2(TruthfulQAMC1):
    name = "truthfulqa_mc2"
    title = "TruthfulQA MC2"
    summary = "questions people often answer falsely; acc: normalised probability mass on the true answers"
    variant = "mc2"

    def item(self, doc, context_text):
        return {**super().item(doc, context_text), "labels": doc.labels}

    def sample(self, item, logprobs):
        out = ChoiceTask.sample(self, item, logprobs)
        out["labels"] = item["labels"]
        out["metrics"] = {"acc": true_mass(logprobs, item["labels"])}
        return out


class MMLU(ChoiceTask):
    name = "mmlu"
    title = "MMLU"
    summary = ("57 subjects of multiple-choice exam questions; acc per subject, per group (stem, humanities, "
               "social sciences, other) and overall, weighted by subject size")
    config_model = MMLUOptions
    primary_metric = "acc"

    def subject_files(self, config: MMLUOptions) -> tuple[list[Path], Path]:
        """The scored CSVs and the folder their dev files sit under."""
        path = Path(config.path)
        if path.is_file():
            root = path.parent.parent if path.parent.name in ("dev", "val", "test") else path.parent
            return [path], root
        if not path.is_dir():
            raise EvalDataError(path, None, "path", "no such file or folder")
        if (path / config.split).is_dir():
            folder, root = path / config.split, path
        else:
            folder, root = path, path.parent
        found = sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith((".csv", ".csv.gz")))
        if not found:
            raise EvalDataError(folder, None, "path", "no SUBJECT_SPLIT.csv files here")
        return found, root

    def dev_file(self, config: MMLUOptions, scored: Path, root: Path) -> Path:
        subject = files.mmlu_subject(scored)
        if config.fewshot_from:
            given = Path(config.fewshot_from)
            return given / f"{subject}_dev.csv" if given.is_dir() else given
        dev = root / "dev" / f"{subject}_dev.csv"
        return dev if dev.is_file() else scored

    def data_files(self, config):
        scored, root = self.subject_files(config)
        paths = set(scored)
        if self._shots(config) > 0:
            paths |= {self.dev_file(config, p, root) for p in scored}
        return sorted(paths)

    def load(self, config: MMLUOptions) -> list[dict[str, Any]]:
        scored, root = self.subject_files(config)
        k = self._shots(config)
        items, skipped = [], []
        for path in scored:
            loaded = files.read_mmlu(path)
            skipped += loaded.skipped
            shots: list[list[Doc]] = [[] for _ in loaded.docs]
            if k > 0 and loaded.docs:
                dev = self.dev_file(config, path, root)
                same = dev.resolve() == path.resolve()
                if same:
                    pool = loaded.docs
                else:
                    dev_loaded = files.read_mmlu(dev, files.mmlu_subject(path))
                    pool, skipped = dev_loaded.docs, skipped + dev_loaded.skipped
                shots = self._pick(path, loaded.docs, pool, k, first_n=True, exclude_self=same)
            for doc, doc_shots in zip(loaded.docs, shots):
                items.append(self.item(doc, context(doc, doc_shots, description(doc.subject or ""))))
        self.skipped = skipped
        if not items:
            raise skipped[0] if skipped else EvalDataError(Path(config.path), None, None, "no items")
        return items

    def item(self, doc, context_text):
        return {**super().item(doc, context_text), "subject": doc.subject}

    def sample(self, item, logprobs):
        out = super().sample(item, logprobs)
        out["subject"] = item["subject"]
        out["metrics"] = {"acc": out["metrics"]["acc"]}
        return out

    def aggregate(self, samples, config):
        """``acc`` over every subject, ``acc:GROUP`` per group and ``acc:SUBJECT`` per subject; a group's
        value is its subjects' means weighted by their sizes, with lm-eval's pooled stderr."""
        by_subject: dict[str, list[float]] = defaultdict(list)
        for s in samples:
            value = s.get("metrics", {}).get("acc")
            if value is not None:
                by_subject[s.get("subject") or "unknown"].append(float(value))
        if not by_subject:
            return {}
        parts = {subject: mean_with_stderr(values) for subject, values in sorted(by_subject.items())}
        out = {"acc": weighted_group(list(parts.values()))}
        for group in GROUPS:
            members = [part for subject, part in parts.items() if group_of(subject) == group]
            if members:
                out[f"acc:{group}"] = weighted_group(members)
        for subject, part in parts.items():
            out[f"acc:{subject}"] = part
        return out


EVALUATORS = (ArcEasy, ArcChallenge, HellaSwag, MMLU, TruthfulQAMC1, TruthfulQAMC2)
