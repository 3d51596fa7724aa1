"""Splitting, sampling and mixing datasets: the ``split``, ``sample`` and ``mix`` curation ops.

All three are seeded (``seed``, or the pipeline's seed) and deterministic: the same rows and seed
give the same result on any machine. Stratification (``stratify_by``: ``kind``, ``label``, ``tools``
or a meta field such as Dolly's ``category``) keeps each stratum's share in every split and sample.
Work is columnar (numpy over Arrow columns); nothing runs per row in Python except reading meta
JSON when stratifying by a meta field.
"""
from __future__ import annotations

from collections import Counter
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from studio.curation.op_base import CURRENT_ROWS, CurationOp, OpContext, OpInput, OpResult, Removal
from studio.hookspecs import hookimpl

STRATIFY_HELP = ("keep each group's share in every part: kind, label, tools, or a meta field (category, "
                 "meta.source...); empty: no stratification")


def _seed(config_seed: int | None, ctx: OpContext) -> int:
    return ctx.seed if config_seed is None else config_seed


def _strata(data: OpInput, key: str | None) -> list[str] | None:
    from studio_curate_split.strata import stratum_values

    return None if not key else stratum_values(data._table, key)


def _check(ctx: OpContext) -> None:
    if ctx.cancelled():
        raise InterruptedError("cancelled")


# --- split ------------------------------------------------------------------------------------


class SplitConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sizes: dict[str, int | float] = Field({"train": 0.9, "validation": 0.05, "test": 0.05},
                                          description="name -> size of each part: a decimal is a fraction of the "
                                                      "rows (0.1), an integer a row count (500)")
    stratify_by: str | None = Field(None, description=STRATIFY_HELP)
    seed: int | None = Field(None, description="random seed (empty: the pipeline's seed)")

    @field_validator("sizes")
    @classmethod
    def _sizes(cls, value: dict[str, int | float]) -> dict[str, int | float]:
        if not value:
            raise ValueError("name at least one part, e.g. {train: 0.9, test: 0.1}")
        for name, size in value.items():
            if size < 0 or (isinstance(size, float) and size > 1):
                raise ValueError(f"size of {name!r} must be a fraction in 0..1 or a row count >= 0, got {size}")
        if sum(v for v in value.values() if isinstance(v, float)) > 1 + 1e-9:
            raise ValueError("the fractions add up to more than 1")
        return value


class Split(CurationOp):
    name = "split"
    title = "Split"
    summary = "seeded train/validation/test split by fractions or counts, optionally stratified"
    category = "split"
    makes_splits = True
    config_model = SplitConfig

    def run(self, data: OpInput, config: SplitConfig, ctx: OpContext) -> OpResult:
        import numpy as np

        from studio_curate_split.strata import allocate, seeded_order

        n = len(data)
        _check(ctx)
        strata = _strata(data, config.stratify_by)
        order = seeded_order(n, _seed(config.seed, ctx), strata)
        counts = allocate(n, config.sizes)
        _check(ctx)
        outputs: dict[str, list[int]] = {}
        pos = 0
        for name, count in counts.items():
            outputs[name] = np.sort(order[pos:pos + count]).tolist()
            pos += count
        ctx.progress(n, n, "split")
        # Every row stays: output indices are positions in this step's input, which the pipeline
        # takes from its result; rows in no part (fractions summing below 1) are simply not written.
        result = OpResult(keep=[True] * n, outputs=outputs)
        result.report = {"rows": n, "sizes": {k: len(v) for k, v in outputs.items()}, "unassigned": n - pos,
                         "seed": _seed(config.seed, ctx)}
        if strata is not None:
            result.report["stratify_by"] = config.stratify_by
            result.report["strata"] = {name: dict(Counter(strata[i] for i in idx)) for name, idx in outputs.items()}
        return result


# --- sample -----------------------------------------------------------------------------------


class SampleConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n: int | None = Field(None, ge=0, description="how many rows to keep (wins over fraction)")
    fraction: float | None = Field(0.1, ge=0, le=1, description="share of rows to keep, when n is not given")
    stratify_by: str | None = Field(None, description=STRATIFY_HELP)
    seed: int | None = Field(None, description="random seed (empty: the pipeline's seed)")

    @model_validator(mode="after")
    def _one(self):
        if self.n is not None and "fraction" in self.model_fields_set and self.fraction is not None:
            raise ValueError("give n or fraction, not both")
        if self.n is None and self.fraction is None:
            raise ValueError("give n or fraction")
        return self


class Sample(CurationOp):
    name = "sample"
    title = "Sample"
    summary = "keep a seeded random sample of n rows or a fraction, optionally stratified"
    category = "split"
    config_model = SampleConfig

    def run(self, data: OpInput, config: SampleConfig, ctx: OpContext) -> OpResult:
        import numpy as np

        from studio_curate_split.strata import allocate, seeded_order

        n = len(data)
        _check(ctx)
        strata = _strata(data, config.stratify_by)
        k = min(n, config.n) if config.n is not None else allocate(n, {"sample": float(config.fraction)})["sample"]
        chosen = seeded_order(n, _seed(config.seed, ctx), strata)[:k]
        keep = np.zeros(n, dtype=bool)
        keep[chosen] = True
        dropped = Removal("not sampled", {"rule": "n" if config.n is not None else "fraction",
                                          "value": k, "threshold": config.n if config.n is not None else config.fraction})
        ctx.progress(n, n, "sample")
        report: dict[str, Any] = {"rows": n, "kept": k, "removed": n - k, "seed": _seed(config.seed, ctx)}
        if strata is not None:
            report["stratify_by"] = config.stratify_by
            report["strata"] = {"kept": dict(Counter(strata[i] for i in chosen)), "all": dict(Counter(strata))}
        return OpResult(keep=keep.tolist(), removals={int(i): dropped for i in np.flatnonzero(~keep)}, report=report)


# --- mix --------------------------------------------------------------------------------------


class MixSource(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset: str = Field(description="stored dataset as name or name@version")
    weight: float | None = Field(None, ge=0, le=1, description="share of the final mix")
    count: int | None = Field(None, ge=0, description="exact number of rows to take (instead of weight)")

    @model_validator(mode="after")
    def _one(self):
        if (self.weight is None) == (self.count is None):
            raise ValueError(f"source {self.dataset!r}: give exactly one of weight or count")
        return self


class MixConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sources: list[MixSource] = Field([], description="other stored datasets to mix in: "
                                                     "[{dataset: name@version, weight: 0.3}] or counts")
    current_weight: float | None = Field(None, ge=0, le=1, description="share of the current rows in the mix "
                                                                       "(empty: 1 minus the other weights, or all "
                                                                       "current rows when the others are counts)")
    current_count: int | None = Field(None, ge=0, description="exact number of current rows to keep (instead of "
                                                              "current_weight)")
    total: int | None = Field(None, ge=0, description="rows in the mix (empty: all current rows stay and the "
                                                      "others scale to them)")
    replace: bool = Field(False, description="sample with replacement when a source has fewer rows than its "
                                             "share (upsampling); otherwise take all it has and report the "
                                             "shortfall")
    seed: int | None = Field(None, description="random seed (empty: the pipeline's seed)")

    @model_validator(mode="after")
    def _current(self):
        if self.current_weight is not None and self.current_count is not None:
            raise ValueError("give at most one of current_weight or current_count")
        return self


CURRENT = CURRENT_ROWS


def _pick(rng, available: int, wanted: int, replace: bool):
    """Indices of ``wanted`` rows out of ``available``: without repeats while there are rows; with
    ``replace`` every row once, then random repeats."""
    import numpy as np

    if wanted <= available:
        return np.sort(rng.choice(available, size=wanted, replace=False))
    if not replace or available == 0:
        return np.arange(available)
    return np.concatenate([np.arange(available), np.sort(rng.choice(available, size=wanted - available))])


class Mix(CurationOp):
    name = "mix"
    title = "Mix datasets"
    summary = "mix other stored datasets into the current rows by weight or count, seeded"
    category = "mix"
    config_model = MixConfig

    def run(self, data: OpInput, config: MixConfig, ctx: OpContext) -> OpResult:
        import numpy as np

        from studio_curate_split.strata import rng_for

        if not config.sources:
            raise ValueError("mix: name at least one source dataset in 'sources'")
        if ctx.workspace is None:
            raise ValueError("mix reads other datasets and needs a workspace")
        seed = _seed(config.seed, ctx)
        views = []
        for source in config.sources:
            _check(ctx)
            views.append(ctx.workspace.open(source.dataset))
        n_cur = len(data)
        plan = self._plan(config, n_cur, [v.num_rows for v in views])
        # The current rows.
        wanted = plan[0]
        rng = rng_for(seed, CURRENT)
        keep = np.zeros(n_cur, dtype=bool)
        cur = _pick(rng, n_cur, wanted, config.replace)
        keep[np.unique(cur)] = True
        result = OpResult(keep=keep.tolist())
        dropped = Removal("not selected by mix", {"rule": "current share", "value": int(keep.sum()), "threshold": wanted})
        result.removals = {int(i): dropped for i in np.flatnonzero(~keep)}
        if len(cur) > n_cur:  # upsampled current rows come back as added copies
            extra = cur[n_cur:]
            result.added += data._table.take(extra).to_pylist()
            result.added_from += [{"dataset": CURRENT, "version": None, "index": int(i)} for i in extra]
        report_sources = [{"dataset": CURRENT, "available": n_cur, "requested": wanted, "taken": len(cur)}]
        for view, wanted in zip(views, plan[1:]):
            _check(ctx)
            # Keyed by what is read (name and version), not by how the recipe spelled it.
            picked = _pick(rng_for(seed, view.info.dataset, view.info.id), view.num_rows, wanted, config.replace)
            for lo in range(0, len(picked), 50_000):
                chunk = picked[lo:lo + 50_000]
                result.added += view._table.take(chunk).to_pylist()
                result.added_from += [{"dataset": view.info.dataset, "version": view.info.id, "index": int(i)}
                                      for i in chunk]
            report_sources.append({"dataset": f"{view.info.dataset}@{view.info.id}", "available": view.num_rows,
                                   "requested": wanted, "taken": len(picked)})
        total = sum(s["taken"] for s in report_sources)
        for s in report_sources:
            s["share"] = round(s["taken"] / total, 4) if total else 0.0
            s["shortfall"] = max(0, s["requested"] - s["taken"])
        ctx.progress(1, 1, "mix")
        result.report = {"rows": n_cur, "total": total, "added": len(result.added), "seed": seed,
                         "sources": report_sources}
        return result

    @staticmethod
    def _plan(config: MixConfig, n_cur: int, available: list[int]) -> list[int]:
        """Rows wanted from the current rows and each source, in that order."""
        weights = [s.weight for s in config.sources]
        counts = [s.count for s in config.sources]
        cur_weight, cur_count = config.current_weight, config.current_count
        if cur_weight is None and cur_count is None:
            others = sum(w for w in weights if w is not None)
            if any(w is not None for w in weights):
                if others >= 1:
                    raise ValueError(f"the source weights add up to {others:.3f}; the current rows need a share "
                                     "too (set current_weight: 0 to leave them out)")
                cur_weight = 1 - others
            else:
                cur_count = n_cur  # only counts: every current row stays
        all_weights = [cur_weight] + weights
        all_counts = [cur_count] + counts
        all_available = [n_cur] + available
        weighted = [i for i, w in enumerate(all_weights) if w is not None]
        weight_sum = sum(all_weights[i] for i in weighted)
        fixed = sum(c for c in all_counts if c is not None)
        if weighted and weight_sum <= 0:
            raise ValueError("the weights add up to 0")
        if not weighted:
            rows_weighted = 0.0
        elif config.total is not None:
            rows_weighted = max(0, config.total - fixed)
        elif cur_weight:
            rows_weighted = n_cur / (cur_weight / weight_sum)  # every current row stays
        else:
            # The largest mix with exact ratios that no source runs short of.
            rows_weighted = min(all_available[i] / (all_weights[i] / weight_sum) for i in weighted
                                if all_weights[i] > 0)
            if config.replace:
                rows_weighted = max(all_available[i] / (all_weights[i] / weight_sum) for i in weighted
                                    if all_weights[i] > 0)
        plan = []
        for i in range(len(all_weights)):
            if all_counts[i] is not None:
                plan.append(all_counts[i])
            else:
                plan.append(int(round(rows_weighted * all_weights[i] / weight_sum)))
        return plan


@hookimpl
def register_curation_ops(register):
    for op in (Split(), Sample(), Mix()):
        register(op)
