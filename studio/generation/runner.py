"""Generation runs: a recipe (generator + provider + seed dataset + parameters), a run folder
that records what happened, and a stored dataset at the end.

    <workspace>/generation/journal.sqlite        every answer, shared by all runs (no double pay)
    <workspace>/generation/runs/<run-id>/
        recipe.yaml      the resolved recipe (provider included; never a key)
        status.json      running | completed | stopped | failed, counts, cost, pid, version
        events.jsonl     estimate, progress, retries, failures, the end
        rows.jsonl       records as they were made (browsable while the run goes)
        failed.jsonl     rows that could not be made, with their error

A resumed or re-run run replays the generator from the start; the journal answers every
request it has seen, so only the missing ones are sent. ``retry_failed`` sends the failed ones
again. Services here are synchronous and Textual-free: the CLI and the TUI call the same
``run_generation`` with their own ``emit`` and ``cancelled``.
"""
from __future__ import annotations

import asyncio
import json
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Callable

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator

from studio.generation.engine import Engine, RunContext, estimate_tokens
from studio.generation.generator_base import Estimate, Generator, RunStopped
from studio.generation.journal import Journal
from studio.generation.provider import ProviderConfig, resolve_provider
from studio.records import Record
from studio.run_files import RunFiles
from studio.store import NAME_RE

GENERATION_DIR = "generation"


def _dataset_name(value: str) -> str:
    if not NAME_RE.match(value):
        raise ValueError("a dataset name is letters, digits, '.', '_' or '-' (max 100), starting with a letter or digit")
    return value


DatasetName = Annotated[str, AfterValidator(_dataset_name)]


class RequestParams(BaseModel):
    """Default parameters of every request of a run (a generator's own options win); any other
    OpenAI parameter (top_p, stop, ...) passes through as given."""

    model_config = ConfigDict(extra="allow")

    temperature: float | None = Field(None, ge=0, le=2, description="default temperature of every request "
                                      "(a generator's own option wins)")
    max_tokens: int | None = Field(None, ge=1, description="default completion tokens per request (a generator's "
                                   "own option wins)")


class GenerationRecipe(BaseModel):
    """A generation recipe: the same schema for YAML files, the CLI and the TUI form."""

    model_config = ConfigDict(extra="forbid")

    generator: str = Field(description="registered generator name (`studio generate ls`)")
    output: DatasetName = Field(description="dataset the results are stored as (a new version)")
    seed_dataset: str | None = Field(None, description="stored dataset NAME[@VERSION] the generator starts from")
    seed_limit: int | None = Field(None, ge=1, description="use only the first N seed records")
    provider: str | dict[str, Any] | None = Field(None, description="saved provider name or inline settings; empty = embedded model")
    params: dict[str, Any] = Field(default_factory=dict, description="default request parameters (temperature, max_tokens, ...)")
    config: dict[str, Any] = Field(default_factory=dict, description="the generator's own options")
    seed: int = Field(0, description="random seed (same seed + journal = same run)")
    budget: float | None = Field(None, gt=0, description="hard cost cap for this run; it stops cleanly when reached")

    @field_validator("params")
    @classmethod
    def _request_params(cls, value: dict[str, Any]) -> dict[str, Any]:
        # Checked against RequestParams, kept a plain mapping for the engine.
        return RequestParams.model_validate(value).model_dump(exclude_none=True)


@dataclass
class RunSummary:
    run_id: str
    run_dir: Path
    status: str  # completed | stopped | failed | estimated
    reason: str = ""
    rows: int = 0
    failed_rows: int = 0
    version: str | None = None
    output: str | None = None
    estimate: dict[str, Any] = field(default_factory=dict)
    meter: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "run_dir": str(self.run_dir), "status": self.status, "reason": self.reason,
                "rows": self.rows, "failed_rows": self.failed_rows, "output": self.output,
                "version": self.version, "estimate": self.estimate, "meter": self.meter}


def generation_dir(ws) -> Path:
    return Path(ws.root) / GENERATION_DIR


def runs_dir(ws) -> Path:
    return generation_dir(ws) / "runs"


def load_recipe(path: Path, overrides: list[str] | None = None) -> GenerationRecipe:
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a generation recipe is a mapping with generator, output, ...")
    data = apply_overrides(data, overrides or [])
    return validate_recipe(data, str(path))


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """``key=value`` pairs (dotted keys reach into config/params) merged over the recipe."""
    from studio.config_schema import parse_pairs

    def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
        out = dict(base)
        for key, value in extra.items():
            out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
        return out

    return merge(data, parse_pairs(overrides))


def validate_recipe(data: dict[str, Any], where: str = "recipe") -> GenerationRecipe:
    try:
        return GenerationRecipe(**data)
    except ValidationError as exc:
        raise ValueError(f"{where}: " + _validation_text(exc)) from None


def _validation_text(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'recipe'}: {e['msg']}" for e in exc.errors())


def resolve(ws, recipe: GenerationRecipe, host=None) -> tuple[Generator, BaseModel, ProviderConfig]:
    """The generator, its validated config and the provider a recipe names, or a clear error."""
    if host is None:
        from studio.plugins import get_host

        host = get_host()
    generators = host.items("generator")
    if recipe.generator not in generators:
        raise ValueError(f"unknown generator {recipe.generator!r}; registered: {', '.join(sorted(generators)) or 'none'}")
    generator = generators[recipe.generator]
    try:
        config = generator.config_model(**recipe.config)
    except ValidationError as exc:
        raise ValueError(f"config of {recipe.generator}: " + _validation_text(exc)) from None
    provider = resolve_provider(recipe.provider, Path(ws.root) if ws is not None else None)
    if generator.seeds == "required" and not recipe.seed_dataset:
        raise ValueError(f"generator {recipe.generator} needs a seed dataset (seed_dataset: NAME)")
    return generator, config, provider


def load_seeds(ws, recipe: GenerationRecipe) -> tuple[list[Record], str | None]:
    if not recipe.seed_dataset:
        return [], None
    view = ws.open(recipe.seed_dataset)
    limit = recipe.seed_limit or view.num_rows
    seeds = view.page(0, limit) if limit < view.num_rows else list(view.records())
    return seeds, f"{view.info.dataset}@{view.info.id}"


def estimate_run(generator: Generator, config: BaseModel, provider: ProviderConfig, seeds: list[Record],
                 params: dict[str, Any]) -> dict[str, Any]:
    est: Estimate = generator.estimate(config, seeds, estimate_tokens)
    price = provider.price()
    cost = provider.cost(est.prompt_tokens, est.completion_tokens)
    return {"requests": est.requests, "prompt_tokens": est.prompt_tokens, "completion_tokens": est.completion_tokens,
            "cost": round(cost, 6) if price else None, "priced": price is not None, "notes": est.notes}


def new_run_id(generator: str) -> str:
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{generator}-{secrets.token_hex(2)}"


class RunFolder(RunFiles):
    """Files of one generation run."""

    def create(self, recipe: GenerationRecipe, provider: ProviderConfig) -> None:
        import yaml

        self.path.mkdir(parents=True, exist_ok=True)
        resolved = recipe.model_dump()
        resolved["provider"] = provider.model_dump()  # api_key_env is a name, never the key
        tmp = self.path / "recipe.yaml.tmp"
        tmp.write_text(yaml.safe_dump(resolved, sort_keys=False), encoding="utf-8")
        tmp.replace(self.path / "recipe.yaml")

    def recipe(self) -> GenerationRecipe:
        import yaml

        return validate_recipe(yaml.safe_load((self.path / "recipe.yaml").read_text(encoding="utf-8")),
                               str(self.path / "recipe.yaml"))

    def reset_outputs(self) -> None:
        # A replay regenerates rows from the journal in the same order, so start them afresh.
        for name in ("rows.jsonl", "failed.jsonl"):
            (self.path / name).unlink(missing_ok=True)


def list_runs(ws) -> list[dict[str, Any]]:
    folder = runs_dir(ws)
    if not folder.is_dir():
        return []
    runs = []
    for path in sorted(folder.iterdir(), reverse=True):
        if (path / "recipe.yaml").is_file():
            runs.append({"run_id": path.name, **RunFolder(path).status()})
    return runs


def run_generation(ws, recipe: GenerationRecipe, *, emit: Callable[[dict], None] = lambda e: None,
                   cancelled: Callable[[], bool] = lambda: False, run_id: str | None = None,
                   retry_failed: bool = False, estimate_only: bool = False, host=None,
                   save: bool = True) -> RunSummary:
    """Run (or resume, with the same ``run_id``) a generation recipe and store its output."""
    generator, config, provider = resolve(ws, recipe, host)
    seeds, seed_ref = load_seeds(ws, recipe)
    estimate = estimate_run(generator, config, provider, seeds, recipe.params)
    run_id = run_id or new_run_id(recipe.generator)
    folder = RunFolder(runs_dir(ws) / run_id)
    emit({"event": "estimate", **estimate})
    if estimate_only:
        return RunSummary(run_id, folder.path, "estimated", estimate=estimate)

    resumed = (folder.path / "recipe.yaml").is_file()
    folder.create(recipe, provider)
    folder.reset_outputs()
    sink = _Sink(folder, emit)
    sink({"event": "start", "run_id": run_id, "generator": recipe.generator, "resumed": resumed,
          "retry_failed": retry_failed, "seeds": len(seeds), "estimate": estimate})
    folder.write_status(status="running", pid=os.getpid(), started=time.time(), generator=recipe.generator,
                        output=recipe.output)
    journal = Journal(generation_dir(ws) / "journal.sqlite")
    server = None
    engine = None
    records: list[Record] = []
    status, reason = "completed", ""
    try:
        base_url, model = provider.base_url, provider.model
        if provider.embedded:
            from studio.serving.launch import start_background_server

            sink({"event": "serving", "model": provider.serve_model})
            server = start_background_server(provider.serve_model)
            base_url, model = server.base_url, server.model_name
        engine = Engine(provider, journal, run_id=run_id, emit=sink, cancelled=cancelled, budget=recipe.budget,
                        retry_failed=retry_failed, defaults=recipe.params, base_url=base_url, model=model)
        ctx = RunContext(engine, seeds, recipe.seed, on_fail=lambda row: sink.failed(row))

        async def main() -> None:
            try:
                async for record in generator.generate(config, ctx):
                    records.append(record)
                    engine.meter.rows += 1
                    sink.row(len(records) - 1, record)
                    engine.progress_event()
            finally:
                await engine.aclose()

        try:
            asyncio.run(main())
        except RunStopped as exc:
            status, reason = "stopped", str(exc)
    except Exception as exc:  # noqa: BLE001 - the run folder says why; the caller gets the summary
        status, reason = "failed", f"{type(exc).__name__}: {exc}"
    finally:
        if server is not None:
            server.stop()
        journal.close()

    meter = engine.meter.snapshot() if engine is not None else {}
    version = None
    if save and records and status in ("completed", "stopped"):
        info = ws.write_version(
            recipe.output, records,
            operation={"op": "generate", "generator": recipe.generator, "run_id": run_id, "status": status,
                       "reason": reason, "model": engine.model, "provider": provider.name,
                       "base_url": provider.base_url or "embedded", "config": config.model_dump(mode="json"),
                       "params": recipe.params, "seed": recipe.seed, "rows": len(records),
                       "failed_rows": sink.failed_count, "cost": meter.get("cost", 0.0),
                       "requests_sent": meter.get("answered", 0), "requests_cached": meter.get("cached", 0)},
            parent=seed_ref,
            rejects=[_failed_as_reject(run_id, row) for row in folder.read("failed.jsonl")],
        )
        version = info.id
    summary = RunSummary(run_id, folder.path, status, reason, len(records), sink.failed_count, version,
                         recipe.output, estimate, meter)
    sink({"event": "end", **summary.to_dict(), "run_dir": str(folder.path)})
    folder.write_status(status=status, reason=reason, pid=os.getpid(), finished=time.time(),
                        generator=recipe.generator, output=recipe.output, version=version, rows=len(records),
                        failed_rows=sink.failed_count, cost=meter.get("cost", 0.0), meter=meter)
    return summary


def _failed_as_reject(run_id: str, row: dict[str, Any]) -> dict[str, Any]:
    return {"file": f"generation run {run_id}", "line": None, "index": row.get("source_index"),
            "field": row.get("stage") or None, "message": row.get("error"), "raw": row.get("source")}


class _Sink:
    """Fans events out to the run folder and the caller's ``emit``."""

    def __init__(self, folder: RunFolder, emit: Callable[[dict], None]):
        self.folder = folder
        self.emit = emit
        self.failed_count = 0

    def __call__(self, event: dict[str, Any]) -> None:
        event = {"time": round(time.time(), 3), **event}
        self.folder.append("events.jsonl", event)
        self.emit(event)

    def row(self, index: int, record: Record) -> None:
        row = record.to_row()
        self.folder.append("rows.jsonl", row)
        self.emit({"event": "row", "index": index, "row": row})

    def failed(self, data: dict[str, Any]) -> None:
        self.failed_count += 1
        self.folder.append("failed.jsonl", data)
        self({"event": "row_failed", **{k: v for k, v in data.items() if k != "source"}})
