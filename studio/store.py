"""The workspace: named datasets with immutable, content-addressed versions and lineage.

Layout of a workspace folder::

    studio.yaml                          marks the folder as a workspace
    data/<dataset>/dataset.json          version order and head (replaced atomically)
    data/<dataset>/versions/<id>/        one immutable version
        data.arrow                       canonical records, Arrow stream (datasets.Dataset.from_file)
        version.json                     lineage: parent or source file, operation, counts
        rejects.jsonl                    rows an import could not read, with file/line/field

A version folder is built under a temporary name and renamed into place, so an interrupted
write leaves the previous versions untouched and never a half-written version.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from studio.records import Record, arrow_schema

MARKER = "studio.yaml"
BATCH_ROWS = 8192
IPC_END_OF_STREAM = b"\xff\xff\xff\xff\x00\x00\x00\x00"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class StoreError(ValueError):
    pass


def _atomic_write_json(path: Path, data: Any) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, ensure_ascii=False)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class TableStream:
    """Canonical rows arriving as Arrow tables of any size (the columnar import). They are stored
    in the same fixed-size batches as rows handed over one by one, so the same content gets the
    same version id whichever way it came."""

    def __init__(self, tables: Iterable[Any]):
        self.tables = tables


@dataclass
class VersionInfo:
    id: str
    dataset: str
    created: float
    num_records: int
    kinds: dict[str, int]
    parent: str | None = None
    source: dict[str, Any] | None = None
    operation: dict[str, Any] = field(default_factory=dict)
    rejects: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "VersionInfo":
        return cls(**{k: data.get(k) for k in cls.__dataclass_fields__ if k in data})


class VersionView:
    """Read access to one version, paging from the memory-mapped Arrow file."""

    def __init__(self, info: VersionInfo, path: Path):
        import datasets

        self.info = info
        self.path = path
        self.dataset = datasets.Dataset.from_file(str(path / "data.arrow"))
        self._table = self.dataset.data.table

    @property
    def num_rows(self) -> int:
        return self._table.num_rows

    def page(self, offset: int, limit: int) -> list[Record]:
        offset = max(0, min(offset, self.num_rows))
        return [Record.from_row(r) for r in self._table.slice(offset, limit).to_pylist()]

    def record(self, index: int) -> Record:
        if not 0 <= index < self.num_rows:
            raise IndexError(f"record {index} is outside 0..{self.num_rows - 1}")
        return self.page(index, 1)[0]

    def records(self) -> Iterator[Record]:
        for batch in self._table.to_batches(max_chunksize=BATCH_ROWS):
            for row in batch.to_pylist():
                yield Record.from_row(row)

    def search(self, query: str, start: int = 0, limit: int = 100,
               cancelled: Callable[[], bool] = lambda: False, chunk: int = 65536) -> list[int]:
        """Indices (from ``start`` on) of records whose any turn contains ``query``, case-insensitive."""
        import pyarrow as pa
        import pyarrow.compute as pc

        hits: list[int] = []
        if not query:
            return hits
        for lo in range(max(0, start), self.num_rows, chunk):
            if cancelled():
                break
            part = self._table.slice(lo, chunk)
            mask = None
            for column in ("messages", "chosen", "rejected"):
                col = part.column(column).combine_chunks() if isinstance(part.column(column), pa.ChunkedArray) else part.column(column)
                flat = pc.list_flatten(col)
                if len(flat) == 0:
                    continue
                parents = pc.list_parent_indices(col)
                found = pc.match_substring(pc.struct_field(flat, "content"), query, ignore_case=True)
                rows = pc.unique(pc.filter(parents, pc.fill_null(found, False))).to_pylist()
                mask = set(rows) if mask is None else mask | set(rows)
            for i in sorted(mask or ()):
                hits.append(lo + i)
                if len(hits) >= limit:
                    return hits
        return hits

    def stats(self) -> dict[str, Any]:
        return compute_stats(self._table)


def compute_stats(table) -> dict[str, Any]:
    import pyarrow.compute as pc

    n = table.num_rows
    out: dict[str, Any] = {"records": n}
    if n == 0:
        return out
    out["kinds"] = {d["values"]: d["counts"] for d in pc.value_counts(table.column("kind")).to_pylist()}
    messages = table.column("messages")
    lengths = pc.list_value_length(messages)
    out["turns"] = {"min": pc.min(lengths).as_py(), "mean": round(pc.mean(lengths).as_py() or 0, 2),
                    "max": pc.max(lengths).as_py()}
    roles: dict[str, dict[str, Any]] = {}
    for column in ("messages", "chosen", "rejected"):
        flat = pc.list_flatten(table.column(column))
        if len(flat) == 0:
            continue
        role = pc.struct_field(flat, "role")
        chars = pc.utf8_length(pc.fill_null(pc.struct_field(flat, "content"), ""))
        for item in pc.value_counts(role).to_pylist():
            sel = pc.equal(role, item["values"])
            key = item["values"] if column == "messages" else f"{column}:{item['values']}"
            roles[key] = {"turns": item["counts"],
                          "mean_chars": round(pc.mean(pc.filter(chars, sel)).as_py() or 0, 1)}
    out["roles"] = roles
    first_roles = pc.struct_field(pc.list_element(pc.fill_null(messages, []), 0), "role") if n else None
    out["with_system_prompt"] = int(pc.sum(pc.equal(pc.fill_null(first_roles, ""), "system")).as_py() or 0)
    out["with_tools"] = int(pc.sum(pc.invert(pc.is_null(table.column("tools")))).as_py() or 0)
    labels = table.column("label")
    if labels.null_count < n:
        out["labels"] = {str(d["values"]).lower(): d["counts"] for d in pc.value_counts(labels).to_pylist()
                         if d["values"] is not None}
    # Meta fields vary per format; a bounded sample is enough to show e.g. Dolly's categories.
    sample = [m for m in table.column("meta").slice(0, 20000).to_pylist() if m]
    fields: dict[str, dict[str, int]] = {}
    for raw in sample:
        for key, value in json.loads(raw).items():
            if key.startswith("_"):  # a format's private layout hint, not data
                continue
            if isinstance(value, (str, bool, int)) and len(str(value)) <= 40:
                bucket = fields.setdefault(key, {})
                bucket[str(value)] = bucket.get(str(value), 0) + 1
    out["meta_fields"] = {k: dict(sorted(v.items(), key=lambda kv: -kv[1])[:12]) for k, v in fields.items()
                          if len(v) <= 50}
    return out


class Workspace:
    def __init__(self, root: Path):
        self.root = Path(root).resolve()
        if not (self.root / MARKER).is_file():
            raise StoreError(f"{self.root} is not a studio workspace (no {MARKER}); run `studio init` there")
        self.data_dir = self.root / "data"

    # --- finding and creating --------------------------------------------------------------

    @classmethod
    def init(cls, root: Path, name: str | None = None) -> "Workspace":
        root = Path(root).resolve()
        root.mkdir(parents=True, exist_ok=True)
        marker = root / MARKER
        if not marker.exists():
            marker.write_text(f"# studio workspace\nname: {name or root.name}\ncreated: {time.strftime('%Y-%m-%dT%H:%M:%S')}\n",
                              encoding="utf-8")
        (root / "data").mkdir(exist_ok=True)
        return cls(root)

    @classmethod
    def find(cls, start: Path | None = None) -> "Workspace | None":
        here = Path(start or Path.cwd()).resolve()
        for folder in (here, *here.parents):
            if (folder / MARKER).is_file():
                return cls(folder)
        return None

    # --- datasets ----------------------------------------------------------------------------

    def _dataset_dir(self, name: str) -> Path:
        if not NAME_RE.match(name):
            raise StoreError(f"dataset name {name!r} must be letters, digits, '.', '_' or '-' (max 100)")
        return self.data_dir / name

    def _index(self, name: str) -> dict[str, Any]:
        path = self._dataset_dir(name) / "dataset.json"
        if not path.is_file():
            raise StoreError(f"no dataset named {name!r} in {self.root}; `studio data ls` lists them")
        return json.loads(path.read_text(encoding="utf-8"))

    def dataset_names(self) -> list[str]:
        if not self.data_dir.is_dir():
            return []
        return sorted(p.name for p in self.data_dir.iterdir() if (p / "dataset.json").is_file())

    def versions(self, name: str) -> list[VersionInfo]:
        index = self._index(name)
        base = self._dataset_dir(name) / "versions"
        return [VersionInfo.from_dict(json.loads((base / vid / "version.json").read_text(encoding="utf-8")))
                for vid in index["versions"]]

    def head(self, name: str) -> VersionInfo:
        index = self._index(name)
        return self.version_info(name, index["head"])

    def version_info(self, name: str, version: str | None = None) -> VersionInfo:
        index = self._index(name)
        vid = self._resolve(name, index, version)
        path = self._dataset_dir(name) / "versions" / vid / "version.json"
        return VersionInfo.from_dict(json.loads(path.read_text(encoding="utf-8")))

    def _resolve(self, name: str, index: dict[str, Any], version: str | None) -> str:
        if version in (None, "", "head", "latest"):
            return index["head"]
        matches = [v for v in index["versions"] if v.startswith(version)]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise StoreError(f"dataset {name!r} has no version {version!r}; versions: {', '.join(index['versions'])}")
        raise StoreError(f"version prefix {version!r} of {name!r} is ambiguous: {', '.join(matches)}")

    def open(self, ref: str) -> VersionView:
        """Open ``name`` or ``name@version`` (a version id prefix)."""
        name, _, version = ref.partition("@")
        info = self.version_info(name, version or None)
        return VersionView(info, self._dataset_dir(name) / "versions" / info.id)

    def version_dir(self, name: str, version: str | None = None) -> Path:
        return self._dataset_dir(name) / "versions" / self.version_info(name, version).id

    def rejects_path(self, name: str, version: str | None = None) -> Path:
        return self.version_dir(name, version) / "rejects.jsonl"

    def write_version(
        self,
        name: str,
        records: Iterable[Record | dict[str, Any]],
        operation: dict[str, Any],
        parent: str | None = None,
        source: dict[str, Any] | None = None,
        rejects: list[Any] | None = None,
        side_files: Callable[[Path], None] | None = None,
    ) -> VersionInfo:
        """Store records (Records, canonical row dicts, an Arrow table or a :class:`TableStream`) as a new version of
        ``name`` (created if absent) and make it the head.
        ``side_files(folder)`` may add files (curation side tables) inside the version folder
        before it is renamed into place, so they appear atomically with the data."""
        import pyarrow as pa
        import pyarrow.compute as pc

        ds_dir = self._dataset_dir(name)
        versions_dir = ds_dir / "versions"
        versions_dir.mkdir(parents=True, exist_ok=True)
        tmp = versions_dir / f".tmp-{uuid.uuid4().hex}"
        tmp.mkdir()
        try:
            schema = arrow_schema()
            digest = hashlib.sha256()
            kinds: dict[str, int] = {}
            count = 0
            with pa.OSFile(str(tmp / "data.arrow"), "wb") as sink:
                # The Arrow IPC stream written message by message (the bytes pa.ipc.new_stream
                # writes: the schema, each batch, the end marker), so that each batch is
                # serialised once, for both its hash and the file.
                sink.write(schema.serialize())
                batch: list[dict[str, Any]] = []

                def write_batch(arrow_batch) -> None:
                    # Batches have fixed sizes, so equal content serialises to equal bytes:
                    # hashing them is the content address, at C speed.
                    message = arrow_batch.serialize()
                    digest.update(message)
                    sink.write(message)

                def flush() -> None:
                    write_batch(pa.RecordBatch.from_pylist(batch, schema=schema))

                def write_table(table) -> None:
                    # One batch of whole columns: serialises like the same rows built one by one.
                    write_batch(pa.RecordBatch.from_arrays([column.combine_chunks() for column in table.columns],
                                                           schema=schema))

                if isinstance(records, pa.Table):
                    # A ready Arrow table (curation output): re-chunk to the fixed batch size so the
                    # content address equals that of the same rows written one by one.
                    table = records.select(schema.names).cast(schema)
                    for lo in range(0, table.num_rows, BATCH_ROWS):
                        batch = table.slice(lo, BATCH_ROWS).to_pylist()
                        flush()
                    batch = []
                    for item in (pc.value_counts(table.column("kind")).to_pylist() if table.num_rows else []):
                        kinds[item["values"]] = item["counts"]
                    count = table.num_rows
                    records = ()
                if isinstance(records, TableStream):
                    pending: list[Any] = []
                    pending_rows = 0
                    for table in records.tables:
                        for item in (pc.value_counts(table.column("kind")).to_pylist() if table.num_rows else []):
                            kinds[item["values"]] = kinds.get(item["values"], 0) + item["counts"]
                        count += table.num_rows
                        pending.append(table)
                        pending_rows += table.num_rows
                        while pending_rows >= BATCH_ROWS:
                            joined = pa.concat_tables(pending)
                            write_table(joined.slice(0, BATCH_ROWS))
                            pending, pending_rows = [joined.slice(BATCH_ROWS)], pending_rows - BATCH_ROWS
                    if pending_rows:
                        write_table(pa.concat_tables(pending))
                    records = ()
                for record in records:
                    # Curation hands canonical rows straight from Arrow; skip the object round trip.
                    row = record if isinstance(record, dict) else record.to_row()
                    kinds[row["kind"]] = kinds.get(row["kind"], 0) + 1
                    batch.append(row)
                    count += 1
                    if len(batch) >= BATCH_ROWS:
                        flush()
                        batch = []
                if batch or count == 0:
                    flush()
                sink.write(IPC_END_OF_STREAM)
            vid = digest.hexdigest()[:16]
            info = VersionInfo(id=vid, dataset=name, created=time.time(), num_records=count, kinds=kinds,
                               parent=parent, source=source, operation=operation,
                               rejects=len(rejects or []))
            (tmp / "version.json").write_text(json.dumps(info.to_dict(), indent=2, ensure_ascii=False),
                                              encoding="utf-8")
            if rejects:
                with open(tmp / "rejects.jsonl", "w", encoding="utf-8") as fh:
                    for r in rejects:
                        row = r.to_dict() if hasattr(r, "to_dict") else r
                        fh.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
            if side_files is not None:
                side_files(tmp)
            final = versions_dir / vid
            if final.exists():
                # Identical content is already stored: versions are immutable, reuse it.
                shutil.rmtree(tmp)
                info = VersionInfo.from_dict(json.loads((final / "version.json").read_text(encoding="utf-8")))
            else:
                os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        index_path = ds_dir / "dataset.json"
        index = json.loads(index_path.read_text(encoding="utf-8")) if index_path.is_file() else \
            {"name": name, "created": time.time(), "versions": []}
        if vid not in index["versions"]:
            index["versions"].append(vid)
        index["head"] = vid
        _atomic_write_json(index_path, index)
        return info

    def remove_dataset(self, name: str) -> None:
        ds_dir = self._dataset_dir(name)
        self._index(name)
        # Rename first so a crash mid-delete never leaves a half dataset that still lists.
        trash = self.data_dir / f".trash-{uuid.uuid4().hex}"
        os.rename(ds_dir, trash)
        shutil.rmtree(trash, ignore_errors=True)

    def cleanup(self) -> int:
        """Remove leftovers of interrupted writes. Returns how many were removed."""
        removed = 0
        for leftover in list(self.data_dir.glob("*/versions/.tmp-*")) + list(self.data_dir.glob(".trash-*")):
            shutil.rmtree(leftover, ignore_errors=True)
            removed += 1
        return removed
