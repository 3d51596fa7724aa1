"""The reward-model workbench: load a trained reward model, score records, and judge it on
held-out preference pairs.

    model = load_reward_model("runs/20261101-rm-1a2b")      # a run folder or a model folder
    report = evaluate(model, records)                        # accuracy, distributions, length bias
    info = score_dataset(ws, model, "chat", "chat-scored")   # a new stored version, rewards in meta

A reward model here is any ``*ForSequenceClassification`` with one label (what the ``reward``
back-end saves), or a PEFT adapter of one. A record is scored as trl's RewardTrainer saw it in
training: its conversation rendered by the tokenizer's chat template, one scalar per sequence.

The statistics (``summarize``, ``pearson``, ``spearman``, ``histogram``) are plain Python so
they can be checked on hand-made numbers; torch is imported only when a model is loaded.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from statistics import fmean, median, stdev
from typing import Any, Iterable, Protocol

from studio.records import Record

DEFAULT_BINS = 10
SCORE_BATCH = 16
WORST_PAIRS = 5


class Scorer(Protocol):
    def score_conversations(self, conversations: list[list[dict[str, str]]]) -> list[float]: ...


# --- statistics ------------------------------------------------------------------------------


def pearson(x: list[float], y: list[float]) -> float | None:
    """Pearson's r; None when either series is constant or shorter than two."""
    if len(x) != len(y):
        raise ValueError(f"series differ in length: {len(x)} and {len(y)}")
    if len(x) < 2:
        return None
    mx, my = fmean(x), fmean(y)
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y))
    sxx = sum((a - mx) ** 2 for a in x)
    syy = sum((b - my) ** 2 for b in y)
    if sxx == 0 or syy == 0:
        return None
    return sxy / math.sqrt(sxx * syy)


def ranks(values: list[float]) -> list[float]:
    """1-based ranks, ties sharing their average rank (what Spearman's rho needs)."""
    order = sorted(range(len(values)), key=values.__getitem__)
    out = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return out


def spearman(x: list[float], y: list[float]) -> float | None:
    """Spearman's rho: Pearson's r of the ranks."""
    return pearson(ranks(x), ranks(y))


def bin_edges(values: list[float], bins: int = DEFAULT_BINS) -> list[float]:
    lo, hi = min(values), max(values)
    if lo == hi:
        lo, hi = lo - 0.5, hi + 0.5
    return [lo + (hi - lo) * i / bins for i in range(bins + 1)]


def histogram(values: list[float], edges: list[float]) -> list[int]:
    """Counts per bin; bins are [lo, hi) except the last, which includes its upper edge."""
    counts = [0] * (len(edges) - 1)
    for v in values:
        if v < edges[0] or v > edges[-1]:
            continue
        index = len(counts) - 1
        for i in range(len(counts)):
            if v < edges[i + 1]:
                index = i
                break
        counts[index] += 1
    return counts


def describe(values: list[float]) -> dict[str, Any]:
    """n, mean, sample sd, min, median, max."""
    if not values:
        return {"n": 0, "mean": None, "sd": None, "min": None, "median": None, "max": None}
    return {"n": len(values), "mean": fmean(values), "sd": stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "median": median(values), "max": max(values)}


def summarize(chosen: list[float], rejected: list[float], chosen_lengths: list[int] | None = None,
              rejected_lengths: list[int] | None = None, bins: int = DEFAULT_BINS) -> dict[str, Any]:
    """The workbench report for rewards of aligned pairs (``chosen[i]`` vs ``rejected[i]``).

    ``accuracy`` counts a pair as right when chosen scores strictly higher (as trl does); ties are
    reported apart. Length bias: correlation of reward with response length over all responses,
    and how often the longer response is the chosen one (an accuracy a pure length detector gets)."""
    if len(chosen) != len(rejected):
        raise ValueError(f"{len(chosen)} chosen and {len(rejected)} rejected rewards: pairs must align")
    n = len(chosen)
    margins = [c - r for c, r in zip(chosen, rejected)]
    report: dict[str, Any] = {
        "pairs": n,
        "accuracy": sum(m > 0 for m in margins) / n if n else None,
        "ties": sum(m == 0 for m in margins),
        "chosen": describe(chosen),
        "rejected": describe(rejected),
        "margin": {**describe(margins), "negative": sum(m < 0 for m in margins)},
    }
    if n:
        edges = bin_edges(chosen + rejected, bins)
        report["histogram"] = {"edges": edges, "chosen": histogram(chosen, edges),
                               "rejected": histogram(rejected, edges)}
    if chosen_lengths is not None and rejected_lengths is not None:
        rewards = chosen + rejected
        lengths = [float(x) for x in chosen_lengths + rejected_lengths]
        unequal = [(c, r) for c, r in zip(chosen_lengths, rejected_lengths) if c != r]
        report["length"] = {
            "pearson": pearson(lengths, rewards) if n else None,
            "spearman": spearman(lengths, rewards) if n else None,
            "chosen_mean": fmean(chosen_lengths) if n else None,
            "rejected_mean": fmean(rejected_lengths) if n else None,
            "longer_chosen_rate": sum(c > r for c, r in unequal) / len(unequal) if unequal else None,
        }
    return report


# --- models ----------------------------------------------------------------------------------


@dataclass
class RewardModel:
    """A loaded reward model and its tokenizer; scores conversations (lists of role/content)."""

    model: Any
    tokenizer: Any
    location: str
    max_length: int = 1024

    def encode(self, conversation: list[dict[str, str]]) -> list[int]:
        tok = self.tokenizer
        if tok.chat_template:
            ids = tok.apply_chat_template(conversation, tokenize=True, return_dict=True)["input_ids"]
        else:
            text = "\n".join(f"{t['role']}: {t['content']}" for t in conversation)
            ids = tok(text)["input_ids"]
        ids = list(ids)
        limit = self.max_length
        if len(ids) > limit:
            # Keep the first token (BOS / [CLS], which encoders pool) and the end (where a decoder's
            # reward is read).
            ids = ids[:1] + ids[len(ids) - limit + 1:]
        return ids

    def score_conversations(self, conversations: list[list[dict[str, str]]]) -> list[float]:
        import torch

        pad = self.tokenizer.pad_token_id
        if pad is None:
            pad = self.tokenizer.eos_token_id or 0
        device = next(self.model.parameters()).device
        out: list[float] = []
        for lo in range(0, len(conversations), SCORE_BATCH):
            encoded = [self.encode(c) for c in conversations[lo:lo + SCORE_BATCH]]
            width = max(len(ids) for ids in encoded)
            input_ids = torch.full((len(encoded), width), pad, dtype=torch.long)
            attention = torch.zeros((len(encoded), width), dtype=torch.long)
            for i, ids in enumerate(encoded):  # right padding: sequence classifiers read the last real token
                input_ids[i, :len(ids)] = torch.tensor(ids, dtype=torch.long)
                attention[i, :len(ids)] = 1
            with torch.inference_mode():
                logits = self.model(input_ids=input_ids.to(device), attention_mask=attention.to(device)).logits
            out.extend(float(v) for v in logits[:, 0].float().cpu())
        return out


def reward_model_folder(ref: str | Path, ws=None) -> Path:
    """The folder of a reward model: a model folder, a run folder (its final/) or a run id in ``ws``."""
    from studio.models.loading import ModelNotFound, is_hub_id, resolve_model_ref

    try:
        location = resolve_model_ref(ref, build=False, workspace=ws)
    except ModelNotFound as exc:
        raise ModelNotFound(f"no reward model at {ref}: {exc}") from None
    if is_hub_id(location):
        raise ModelNotFound(f"no reward model at {ref}: expected a model folder, a run folder or a run id"
                            + ("" if ws is not None else " (no workspace to look for runs in)"))
    return Path(location)


def load_reward_model(ref: str | Path, ws=None, device: str | None = None, max_length: int = 1024) -> RewardModel:
    """Load a sequence-classification reward model (or a PEFT adapter of one) in eval mode."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from studio.models.loading import TOKENIZER_FILES, quiet_progress, resolve_model_ref

    folder = reward_model_folder(ref, ws)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    tokenizer_location = folder
    with quiet_progress():
        adapter = folder / "adapter_config.json"
        if adapter.is_file():
            from peft import PeftModel

            base_ref = json.loads(adapter.read_text(encoding="utf-8")).get("base_model_name_or_path")
            if not base_ref:
                raise ValueError(f"{adapter} names no base_model_name_or_path")
            base = AutoModelForSequenceClassification.from_pretrained(resolve_model_ref(base_ref), num_labels=1,
                                                                      dtype=torch.float32)
            model = PeftModel.from_pretrained(base, str(folder)).merge_and_unload()
            if not any((folder / name).is_file() for name in TOKENIZER_FILES):
                tokenizer_location = Path(resolve_model_ref(base_ref))
        else:
            model = AutoModelForSequenceClassification.from_pretrained(str(folder), dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_location))
    if getattr(model.config, "num_labels", 1) != 1:
        raise ValueError(f"{folder} is a {model.config.num_labels}-label classifier, not a reward model (1 label)")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    limit = getattr(model.config, "max_position_embeddings", None) or max_length
    model.to(device)
    model.eval()
    return RewardModel(model, tokenizer, str(folder), min(max_length, limit))


# --- records ---------------------------------------------------------------------------------


def _turns(turns) -> list[dict[str, str]]:
    from studio.training.data import turn_dict

    return [turn_dict(t) for t in turns or []]


def _response_length(turns) -> int:
    return sum(len(t.content) for t in turns or [])


def pair_rewards(scorer: Scorer, records: list[Record]) -> tuple[list[float], list[float]]:
    """Rewards of each preference record's chosen and rejected conversation."""
    conversations = []
    for record in records:
        prompt = _turns(record.messages)
        conversations.append(prompt + _turns(record.chosen))
        conversations.append(prompt + _turns(record.rejected))
    scores = scorer.score_conversations(conversations)
    return scores[0::2], scores[1::2]


def evaluate(scorer: Scorer, records: Iterable[Record], bins: int = DEFAULT_BINS) -> dict[str, Any]:
    """The workbench report (see ``summarize``) on the preference records among ``records``,
    plus the pairs the model gets most wrong."""
    pairs = [r for r in records if r.chosen and r.rejected]
    if not pairs:
        raise ValueError("no preference pairs (records with chosen and rejected) to evaluate on")
    chosen, rejected = pair_rewards(scorer, pairs)
    report = summarize(chosen, rejected, [_response_length(r.chosen) for r in pairs],
                       [_response_length(r.rejected) for r in pairs], bins)
    order = sorted(range(len(pairs)), key=lambda i: chosen[i] - rejected[i])[:WORST_PAIRS]
    report["worst_pairs"] = [{"index": i, "margin": chosen[i] - rejected[i],
                              "prompt": _preview(pairs[i].messages), "chosen": _preview(pairs[i].chosen),
                              "rejected": _preview(pairs[i].rejected)} for i in order]
    return report


def _preview(turns, width: int = 80) -> str:
    text = " ".join((turns or [])[-1].content.split()) if turns else ""
    return text if len(text) <= width else text[:width - 1] + "…"


def score_records(scorer: Scorer, records: list[Record]) -> list[Record]:
    """Copies of ``records`` with their reward in ``meta["reward"]``: the whole conversation for a
    conversation or KTO record, the chosen side for a pair (plus ``reward_rejected`` and
    ``reward_margin``)."""
    conversations, slots = [], []
    for i, record in enumerate(records):
        prompt = _turns(record.messages)
        if record.chosen is not None or record.rejected is not None:
            for side in ("chosen", "rejected"):
                if getattr(record, side):
                    conversations.append(prompt + _turns(getattr(record, side)))
                    slots.append((i, side))
        elif prompt:
            conversations.append(prompt)
            slots.append((i, "whole"))
    scores = scorer.score_conversations(conversations) if conversations else []
    found: dict[int, dict[str, float]] = {}
    for (i, side), score in zip(slots, scores):
        found.setdefault(i, {})[side] = score
    out = []
    for i, record in enumerate(records):
        got = found.get(i, {})
        meta = dict(record.meta)
        if "whole" in got:
            meta["reward"] = got["whole"]
        else:
            if "chosen" in got:
                meta["reward"] = got["chosen"]
            if "rejected" in got:
                meta["reward_rejected"] = got["rejected"]
            if "chosen" in got and "rejected" in got:
                meta["reward_margin"] = got["chosen"] - got["rejected"]
        out.append(Record(record.messages, record.chosen, record.rejected, record.label, record.tools, meta))
    return out


def score_dataset(ws, model: RewardModel | Scorer, dataset_ref: str, output_name: str):
    """Score every record of the stored dataset ``dataset_ref`` and store the result as a new
    version of ``output_name`` (lineage: the input version and the reward model)."""
    view = ws.open(dataset_ref)
    records = list(view.records())
    scored = score_records(model, records)
    rewards = [r.meta["reward"] for r in scored if isinstance(r.meta.get("reward"), (int, float))]
    operation = {"name": "reward_score", "op": "reward_score", "input": f"{view.info.dataset}@{view.info.id}",
                 "reward_model": getattr(model, "location", type(model).__name__), "records": len(scored),
                 "scored": len(rewards), "mean_reward": fmean(rewards) if rewards else None}
    return ws.write_version(output_name, scored, operation, parent=f"{view.info.dataset}@{view.info.id}")


# --- text ------------------------------------------------------------------------------------


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def report_text(report: dict[str, Any], width: int = 24) -> str:
    """The report as terminal text: accuracy, distributions with side-by-side histograms, length bias."""
    lines = [f"pairs: {report['pairs']}   accuracy: {_fmt(report['accuracy'])}   ties: {report['ties']}"]
    for side in ("chosen", "rejected", "margin"):
        d = report[side]
        extra = f"   negative: {d['negative']}" if side == "margin" else ""
        lines.append(f"{side:>9}: mean {_fmt(d['mean'])}  sd {_fmt(d['sd'])}  min {_fmt(d['min'])}  "
                     f"median {_fmt(d['median'])}  max {_fmt(d['max'])}{extra}")
    hist = report.get("histogram")
    if hist:
        top = max(hist["chosen"] + hist["rejected"]) or 1
        lines.append("")
        lines.append(f"{'reward bin':>21}  {'chosen':<{width + 5}}  rejected")
        edges = hist["edges"]
        for i, (c, r) in enumerate(zip(hist["chosen"], hist["rejected"])):
            bar_c = "#" * round(c / top * width)
            bar_r = "#" * round(r / top * width)
            lines.append(f"[{edges[i]:>8.3f}, {edges[i + 1]:>8.3f})  {bar_c:<{width}} {c:>4}  {bar_r:<{width}} {r:>4}")
    length = report.get("length")
    if length:
        lines.append("")
        lines.append(f"length bias: pearson {_fmt(length['pearson'])}  spearman {_fmt(length['spearman'])}  "
                     f"(reward vs response characters)")
        lines.append(f"  mean length chosen {_fmt(length['chosen_mean'], 1)}, "
                     f"rejected {_fmt(length['rejected_mean'], 1)}; the longer response is the chosen one in "
                     f"{_fmt(length['longer_chosen_rate'])} of pairs")
    worst = report.get("worst_pairs")
    if worst:
        lines.append("")
        lines.append("lowest margins:")
        for w in worst:
            lines.append(f"  #{w['index']} margin {_fmt(w['margin'])}: {w['prompt']}")
    return "\n".join(lines)


def metrics_for_run(report: dict[str, Any], prefix: str = "eval_") -> dict[str, float]:
    """The flat numbers a training run reports (and recipes can ``expect``)."""
    flat = {"accuracy": report["accuracy"], "pairs": report["pairs"],
            "reward_chosen_mean": report["chosen"]["mean"], "reward_rejected_mean": report["rejected"]["mean"],
            "margin_mean": report["margin"]["mean"], "margin_sd": report["margin"]["sd"]}
    length = report.get("length") or {}
    flat["length_pearson"] = length.get("pearson")
    flat["length_spearman"] = length.get("spearman")
    return {prefix + k: float(v) for k, v in flat.items() if isinstance(v, (int, float))}
