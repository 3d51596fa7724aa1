"""Evaluation reports in the workspace, and comparisons between the models they hold.

    <workspace>/evaluations/<id>/          id: 20261206-203000-arc-embedded-vs-sft
        config.yaml      the resolved recipe; every model pinned (ref, location, fingerprint), every
                         data file pinned by sha256, each task's full options and config digest
        status.json      running | completed | stopped | failed
        events.jsonl     what the run reported, as it happened
        samples/<label>/<task>.jsonl   one sample per item: prompt, choices, scores, prediction, metrics
        metrics.json     {"id", "models", "tasks": {task: {label: {metric: {value, stderr, n}}}},
                          "comparisons", "pairwise", "overlap"}

A comparison pairs two models' samples of one task by item id. For each metric it gives the delta,
a paired test on the per-item values (McNemar for 0/1 metrics, a paired bootstrap otherwise), whether
the change is significant at 0.05, and the items that flipped either way. It works inside one
report (the base, the first model, against each other) and across two reports.
"""
from __future__ import annotations

import json
import math
import re
import secrets
import time
from pathlib import Path
from typing import Any

from studio.evaluation.stats import paired_test
from studio.run_files import RunFiles, find_run_folder

EVALUATIONS_DIR = "evaluations"
SIGNIFICANCE = 0.05


def evaluations_dir(ws) -> Path:
    return Path(ws.root) / EVALUATIONS_DIR


def _slug(text: str, limit: int = 24) -> str:
    return re.sub(r"[^A-Za-z0-9._]+", "-", text).strip("-._")[:limit].strip("-._") or "x"


def label_slug(label: str) -> str:
    """A model label as a folder name (``samples/<label>/``)."""
    return _slug(label, 60)


def new_report_id(ws, name: str | None, tasks: list[str], labels: list[str]) -> str:
    what = _slug(name) if name else _slug("+".join(dict.fromkeys(tasks)), 24)
    who = "-vs-".join(_slug(label, 16) for label in labels[:3]) + ("-etc" if len(labels) > 3 else "")
    base = f"{time.strftime('%Y%m%d-%H%M%S')}-{what}-{who}"
    folder = evaluations_dir(ws)
    report_id = base
    while (folder / report_id).exists():
        report_id = f"{base}-{secrets.token_hex(2)}"
    return report_id


class EvalReport(RunFiles):
    """One evaluation's folder."""

    def config(self) -> dict[str, Any]:
        import yaml

        path = self.path / "config.yaml"
        return yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else {}

    def write_config(self, config: dict[str, Any]) -> None:
        import yaml

        text = f"# evaluation {self.run_id}: the resolved recipe, models and data pinned\n"
        text += yaml.safe_dump(plain_json(config), sort_keys=False, allow_unicode=True)
        tmp = self.path / "config.yaml.tmp"
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(self.path / "config.yaml")

    def metrics(self) -> dict[str, Any]:
        path = self.path / "metrics.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}

    def write_metrics(self, metrics: dict[str, Any]) -> None:
        tmp = self.path / "metrics.json.tmp"
        tmp.write_text(json.dumps(plain_json(metrics), indent=2, ensure_ascii=False), encoding="utf-8")
        tmp.replace(self.path / "metrics.json")

    def samples_path(self, label: str, task: str) -> Path:
        return self.path / "samples" / label_slug(label) / f"{task}.jsonl"

    def write_samples(self, label: str, task: str, samples: list[dict[str, Any]]) -> None:
        path = self.samples_path(label, task)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".jsonl.tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            for sample in samples:
                fh.write(json.dumps(sample, ensure_ascii=False, default=str) + "\n")
        tmp.replace(path)

    def samples(self, label: str, task: str) -> list[dict[str, Any]]:
        path = self.samples_path(label, task)
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]

    def labels(self) -> list[str]:
        return [m["label"] for m in self.config().get("models", [])]

    def tasks(self) -> list[str]:
        return [t["task"] for t in self.config().get("tasks", [])]

    def task_info(self, task: str) -> dict[str, Any]:
        return next((t for t in self.config().get("tasks", []) if t["task"] == task), {})


def plain_json(value: Any) -> Any:
    """JSON-able, with NaN (a stderr of one item) written as null."""
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    if isinstance(value, dict):
        return {str(k): plain_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_json(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def create_report(ws, report_id: str) -> EvalReport:
    report = EvalReport(evaluations_dir(ws) / report_id)
    report.path.mkdir(parents=True)
    return report


def find_report(ws, report_id: str) -> EvalReport:
    """A report by its id, or by a unique part of it (what `studio eval ls` shows)."""
    folder = evaluations_dir(ws)
    try:
        return EvalReport(find_run_folder(folder, report_id, marker="config.yaml"))
    except ValueError as exc:
        raise ValueError(str(exc).replace("(see `studio runs ls`)", "(see `studio eval ls`)")) from None


load_report = find_report


def list_reports(ws) -> list[dict[str, Any]]:
    folder = evaluations_dir(ws)
    if not folder.is_dir():
        return []
    rows = []
    for path in sorted(folder.iterdir(), reverse=True):
        if not (path / "config.yaml").is_file():
            continue
        report = EvalReport(path)
        status = report.status()
        config = report.config()
        rows.append({"id": report.run_id, "status": status.get("status"), "created": status.get("started"),
                     "models": [m["label"] for m in config.get("models", [])],
                     "tasks": [t["task"] for t in config.get("tasks", [])],
                     "primary": _primary_values(report.metrics(), config)})
    return rows


def _primary_values(metrics: dict[str, Any], config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """task -> label -> the task's primary metric value (for listings)."""
    out: dict[str, dict[str, Any]] = {}
    for task in config.get("tasks", []):
        primary = task.get("primary_metric")
        for label, values in (metrics.get("tasks", {}).get(task["task"]) or {}).items():
            value = (values.get(primary) or {}).get("value") if primary else None
            out.setdefault(task["task"], {})[label] = value
    return out


# --- comparisons -----------------------------------------------------------------------------


def _per_item(samples: list[dict[str, Any]], metric: str) -> dict[str, float]:
    out = {}
    for sample in samples:
        value = (sample.get("metrics") or {}).get(metric)
        if isinstance(value, (int, float)) and not (isinstance(value, float) and math.isnan(value)):
            out[str(sample["id"])] = float(value)
    return out


def compare_samples(task: str, base_label: str, tuned_label: str, base_samples: list[dict[str, Any]],
                    tuned_samples: list[dict[str, Any]], base_metrics: dict[str, dict[str, Any]],
                    tuned_metrics: dict[str, dict[str, Any]], lower_is_better: tuple[str, ...] | list[str] = (),
                    primary: str | None = None) -> list[dict[str, Any]]:
    """One comparison per metric both sides report: the delta (tuned - base), the paired test
    over the items both scored, and the ids of the items that got better and worse."""
    out = []
    for metric in [m for m in base_metrics if m in tuned_metrics]:
        base_value = base_metrics[metric].get("value")
        tuned_value = tuned_metrics[metric].get("value")
        delta = tuned_value - base_value if base_value is not None and tuned_value is not None else None
        lower = metric in lower_is_better
        a, b = _per_item(base_samples, metric), _per_item(tuned_samples, metric)
        shared = [i for i in a if i in b]
        row = {"task": task, "metric": metric, "base": base_label, "tuned": tuned_label,
               "base_value": base_value, "tuned_value": tuned_value, "delta": delta,
               "lower_is_better": lower, "primary": metric == primary, "n_paired": len(shared),
               "test": None, "p_value": None, "significant": False, "better": None, "gained": [], "lost": []}
        if shared and (len(shared) != len(a) or len(shared) != len(b)):
            # Different item sets (a limit, another file version): compare like with like.
            base_value = sum(a[i] for i in shared) / len(shared)
            tuned_value = sum(b[i] for i in shared) / len(shared)
            delta = tuned_value - base_value
            row.update(base_value=base_value, tuned_value=tuned_value, delta=delta, paired_only=True)
        if shared:
            result = paired_test([a[i] for i in shared], [b[i] for i in shared])
            row["test"], row["p_value"] = result["test"], result["p_value"]
            if "ci95" in result:
                row["ci95"] = result["ci95"]
            row["significant"] = result["p_value"] < SIGNIFICANCE
            up = [i for i in shared if b[i] > a[i]]
            down = [i for i in shared if b[i] < a[i]]
            row["gained"], row["lost"] = (down, up) if lower else (up, down)
        if delta is not None and delta != 0:
            row["better"] = (delta < 0) if lower else (delta > 0)
        out.append(row)
    if primary:
        out.sort(key=lambda r: not r["primary"])
    return out


def _default_label(report: EvalReport, label: str | None, index: int) -> str:
    labels = report.labels()
    if label is None:
        return labels[index if index < len(labels) else 0]
    if label not in labels:
        raise ValueError(f"report {report.run_id} has no model {label!r} (it has: {', '.join(labels)})")
    return label


def compare(base: EvalReport, tuned: EvalReport, base_label: str | None = None,
            tuned_label: str | None = None) -> dict[str, Any]:
    """Two models' samples compared task by task, pairing items by id: one model of each report
    (default: the base, the first model, of ``base``; of ``tuned``, its second model when it is the
    same report, else its first)."""
    same = base.path == tuned.path
    base_label = _default_label(base, base_label, 0)
    tuned_label = _default_label(tuned, tuned_label, 1 if same else 0)
    base_metrics, tuned_metrics = base.metrics().get("tasks", {}), tuned.metrics().get("tasks", {})
    comparisons, notes = [], []
    for task in [t for t in base.tasks() if t in tuned.tasks()]:
        a_info, b_info = base.task_info(task), tuned.task_info(task)
        if a_info.get("digest") != b_info.get("digest"):
            notes.append(f"{task}: the two reports ran it with different options; items are paired by id")
        comparisons += compare_samples(
            task, base_label, tuned_label, base.samples(base_label, task), tuned.samples(tuned_label, task),
            (base_metrics.get(task) or {}).get(base_label, {}), (tuned_metrics.get(task) or {}).get(tuned_label, {}),
            a_info.get("lower_is_better", ()), a_info.get("primary_metric"))
    if not comparisons:
        notes.append("the two reports share no task")
    return {"base": {"report": base.run_id, "label": base_label},
            "tuned": {"report": tuned.run_id, "label": tuned_label}, "comparisons": comparisons, "notes": notes}


def flip_details(base: EvalReport, tuned: EvalReport, comparison: dict[str, Any],
                 limit: int | None = None) -> dict[str, list[dict[str, Any]]]:
    """The flipped items of one comparison with what both models did on them (drill-down)."""
    task = comparison["task"]
    a = {str(s["id"]): s for s in base.samples(comparison["base"], task)}
    b = {str(s["id"]): s for s in tuned.samples(comparison["tuned"], task)}
    metric = comparison["metric"]

    def item(i: str) -> dict[str, Any]:
        x, y = a.get(i, {}), b.get(i, {})
        return {"id": i, "prompt": x.get("prompt", y.get("prompt")), "choices": x.get("choices", y.get("choices")),
                "target": x.get("target", y.get("target")),
                "base_prediction": x.get("prediction"), "tuned_prediction": y.get("prediction"),
                "base_scores": x.get("scores"), "tuned_scores": y.get("scores"),
                "base_value": (x.get("metrics") or {}).get(metric), "tuned_value": (y.get("metrics") or {}).get(metric)}

    return {side: [item(i) for i in comparison[side][:limit]] for side in ("gained", "lost")}
