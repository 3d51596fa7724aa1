"""turn_filter: how many turns a record has."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from studio.curation.op_base import CurationOp, OpContext, OpInput, OpResult
from studio_curate_filters.common import build_result, check_bounds, verdict

Role = Literal["system", "user", "assistant", "tool_call", "tool"]


class TurnConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    min_turns: int | None = Field(2, ge=0, description="remove rows with fewer turns (2 = a question and its answer)")
    max_turns: int | None = Field(None, ge=0, description="remove rows with more turns than this")
    roles: list[Role] = Field(["user", "assistant", "tool_call", "tool"],
                              description="roles whose turns count (the system prompt does not by default)")

    @model_validator(mode="after")
    def _ordered(self):
        check_bounds(self.min_turns, self.max_turns, "turns")
        return self


def count_turns(row: dict[str, Any], roles: frozenset[str]) -> int:
    """Turns of the conversation; a preference pair's continuation counts once (the chosen side,
    or the rejected one when there is no chosen)."""
    turns = sum(1 for t in row.get("messages") or () if t["role"] in roles)
    side = row.get("chosen") if row.get("chosen") is not None else row.get("rejected")
    if side is not None:
        turns += sum(1 for t in side if t["role"] in roles)
    return turns


class TurnFilter(CurationOp):
    name = "turn_filter"
    title = "Turn filter"
    summary = "remove rows with too few or too many conversation turns"
    category = "filter"
    config_model = TurnConfig

    def run(self, data: OpInput, config: TurnConfig, ctx: OpContext) -> OpResult:
        import numpy as np

        # Columnar: counting roles is a few Arrow kernels per slice, no per-row Python.
        counts = []
        n = len(data)
        for lo in range(0, n, SLICE_ROWS):
            if ctx.cancelled():
                raise InterruptedError("cancelled")
            ctx.progress(lo, n, "counting turns")
            counts.append(turn_counts(data._table.slice(lo, SLICE_ROWS), config.roles))
        ctx.progress(n, n, "counting turns")
        turns = np.concatenate(counts) if counts else np.zeros(0, dtype=np.int64)
        low, high = config.min_turns, config.max_turns
        verdicts: list[Any] = [None] * n
        if low is not None:
            for i in np.flatnonzero(turns < low):
                verdicts[i] = verdict("too few turns", "min_turns", int(turns[i]), low)
        if high is not None:
            for i in np.flatnonzero(turns > high):
                verdicts[i] = verdict("too many turns", "max_turns", int(turns[i]), high)
        return build_result(verdicts, {"turns": {"min": int(turns.min()), "max": int(turns.max()),
                                                 "mean": round(float(turns.mean()), 2)} if n else {}})


SLICE_ROWS = 100_000


def _role_counts(column, roles):
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    n = len(column)
    flat = pc.list_flatten(column)
    if len(flat) == 0:
        return np.zeros(n, dtype=np.int64)
    parents = pc.list_parent_indices(column).to_numpy()
    hits = pc.is_in(pc.struct_field(flat, "role"), value_set=pa.array(list(roles), pa.string()))
    hits = pc.fill_null(hits, False).to_numpy(zero_copy_only=False)
    return np.bincount(parents[hits], minlength=n).astype(np.int64)


def turn_counts(table, roles):
    """:func:`count_turns` for every row of an Arrow table (a numpy array)."""
    import numpy as np
    import pyarrow.compute as pc

    messages = _role_counts(table.column("messages"), roles)
    chosen = _role_counts(table.column("chosen"), roles)
    rejected = _role_counts(table.column("rejected"), roles)
    has_chosen = pc.is_valid(table.column("chosen")).to_numpy(zero_copy_only=False)
    return messages + np.where(has_chosen, chosen, rejected)
