"""The evaluation recipe: models (the first is the base the others are compared with) and tasks.

    models: [embedded, sft-chat-lora]        # any model reference; endpoint:URL#name for generative tasks
    tasks:
      - task: arc_challenge
        path: datasets/eval/arc_challenge.jsonl
        num_fewshot: 25
      - task: mmlu
        path: datasets/eval/mmlu              # a folder with dev/val/test, or one subject's CSV
    limit: 100

Each task entry's keys other than ``task`` are that evaluator's options, validated by its
``config_model`` (``studio eval tasks`` lists them). The same schema drives ``studio eval run``
flags, ``studio eval RECIPE key=value`` overrides and the Evaluate screen's form.
"""
from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field


class EvalTask(BaseModel):
    # The task's own options are checked against its evaluator's config model, not here.
    model_config = ConfigDict(extra="allow")

    task: str = Field(description="registered evaluator (`studio eval tasks`)")

    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class EvalRecipe(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Option names inside each task whose values are data paths (resolved like a recipe's data files).
    TASK_DATA_FIELDS: ClassVar[tuple[str, ...]] = ("path", "fewshot_from", "references", "train_data")

    models: list[str] = Field(default_factory=lambda: ["embedded"], min_length=1,
                              description="models to evaluate; the first is the base the others are compared with")
    labels: list[str] | None = Field(None, description="display names for the models (default: their references)")
    tasks: list[EvalTask] = Field(min_length=1, description="evaluators and their options")
    name: str | None = Field(None, description="evaluation name (part of its id)")
    limit: int | None = Field(None, ge=1, description="score only the first N items of each task")
    batch_size: int = Field(16, ge=1, description="sequences per forward pass")
    seed: int = Field(0, description="seed for sampled generations and bootstrap tests")
    judge: str | dict[str, Any] | None = Field(None, description="OpenAI-compatible judge for judged tasks: a saved "
                                               "provider name or an inline provider mapping")
    budget: float | None = Field(None, ge=0, description="spending cap for judge requests, in the provider's prices")
    reward_model: str | None = Field(None, description="studio reward run scoring answers for win rates")
    allow_code_execution: bool = Field(False, description="run model-written code (HumanEval) in a sandbox")
    trust_remote_code: bool = Field(False, description="run model code shipped with a hub model")
    device: str | None = Field(None, description="cpu, cuda, ... (default: CUDA when available)")
