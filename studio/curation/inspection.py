"""Inspecting a curated version: the version its rows came from, its removals and changes
grouped by reason, and where a source row ended up. The curation results view of the TUI reads
a version through these; nothing here imports Textual."""
from __future__ import annotations

import json
from dataclasses import dataclass

from studio.curation.pipeline import ORIGIN_FILE
from studio.store import Workspace


def source_version(ws: Workspace, ref: str) -> str:
    """The version a curated version's source indices point into: the pipeline's input, found
    through any override or review versions made on top of it."""
    name, _, version = ref.partition("@")
    info = ws.version_info(name, version or None)
    for _ in range(1000):  # lineage is finite; the bound only guards against a damaged workspace
        operation = info.operation or {}
        parent_ref = operation.get("input")
        if not parent_ref:
            break
        if operation.get("name") == "curate":
            return parent_ref
        if operation.get("name") not in ("override", "review"):
            break
        parent_name, _, parent_version = parent_ref.partition("@")
        if not (ws.version_dir(parent_name, parent_version or None) / ORIGIN_FILE).is_file():
            return parent_ref  # an uncurated version: its own row numbers are the source indices
        info = ws.version_info(parent_name, parent_version or None)
    return f"{info.dataset}@{info.id}"


@dataclass
class ReasonGroup:
    step: int
    op: str
    action: str
    reason: str
    count: int

    @property
    def key(self) -> str:
        return json.dumps([self.step, self.op, self.action, self.reason])


def reason_groups(side) -> list[ReasonGroup]:
    """Side-table rows grouped by (step, op, action, reason), in step order, biggest first."""
    table = side.data.table if hasattr(side, "data") else side
    if table.num_rows == 0:
        return []
    grouped = table.select(["step", "op", "action", "reason"]).group_by(
        ["step", "op", "action", "reason"]).aggregate([([], "count_all")]).to_pylist()
    groups = [ReasonGroup(g["step"], g["op"] or "?", g["action"] or "removed", g["reason"] or "—", g["count_all"])
              for g in grouped]
    return sorted(groups, key=lambda g: (g.step if g.step >= 0 else 1 << 30, -g.count, g.reason))


def group_indices(side, group: ReasonGroup):
    """Side-table row numbers of one reason group (a numpy array: page it, never list it)."""
    import numpy as np
    import pyarrow.compute as pc

    table = side.data.table if hasattr(side, "data") else side
    mask = pc.and_(pc.and_(pc.equal(table.column("step"), group.step), pc.equal(table.column("op"), group.op)),
                   pc.and_(pc.equal(table.column("action"), group.action),
                           pc.equal(table.column("reason"), group.reason)))
    return np.flatnonzero(pc.fill_null(mask, False).to_numpy(zero_copy_only=False))


def cluster_size(side, duplicate_of: int) -> int:
    """How many side-table rows name ``duplicate_of`` as their kept original."""
    import pyarrow.compute as pc

    table = side.data.table if hasattr(side, "data") else side
    return int(pc.sum(pc.fill_null(pc.equal(table.column("duplicate_of"), duplicate_of), False)).as_py() or 0)


def output_position(origin, source_index: int) -> int | None:
    """Where the row that came from ``source_index`` sits in the curated version (None: gone)."""
    import numpy as np

    hits = np.flatnonzero(origin == source_index)
    return int(hits[0]) if len(hits) else None
