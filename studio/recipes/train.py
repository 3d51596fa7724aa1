"""The training recipe: one schema for YAML files, ``studio run`` overrides and the Train screen.

Sections shared by every back-end live here (model, data, the optimisation loop, adapters,
launcher, expectations); each back-end's own options sit under ``config`` and are validated by
that back-end's pydantic ``config_model``.
"""
from __future__ import annotations

import typing
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from studio.recipes.evaluate import EvalTask

# Every way of choosing which weights train; back-ends list the subset they support.
AdapterMethod = Literal["none", "lora", "dora", "qlora", "prompt_tuning", "freeze"]
ADAPTER_METHODS: tuple[str, ...] = typing.get_args(AdapterMethod)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TrainingSettings(_Section):
    """The optimisation loop, mapped onto the trainer's arguments by every back-end."""

    max_steps: int = Field(60, ge=1, description="optimizer steps (wins over epochs)")
    batch_size: int = Field(8, ge=1, description="examples per device per step")
    grad_accum: int = Field(1, ge=1, description="gradient accumulation steps")
    learning_rate: float = Field(1e-3, gt=0, description="peak learning rate")
    scheduler: str = Field("cosine", description="learning-rate schedule (linear, cosine, constant, ...)")
    warmup_ratio: float = Field(0.0, ge=0, le=1, description="fraction of steps spent warming up")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    max_grad_norm: float = Field(1.0, ge=0, description="gradient clipping")
    max_length: int | None = Field(256, ge=8, description="token limit per example (None = no limit)")
    logging_steps: int = Field(5, ge=1, description="log metrics every N steps")
    save_steps: int = Field(20, ge=1, description="write a checkpoint every N steps (resume point)")
    save_total_limit: int | None = Field(2, ge=1, description="checkpoints kept")
    eval_steps: int | None = Field(None, ge=1, description="evaluate every N steps (None = at the end only)")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="auto: bf16 on a GPU that supports it, fp32 on CPU")
    gradient_checkpointing: bool = Field(False, description="trade compute for memory")
    report_to: list[str] = Field(default_factory=lambda: ["tensorboard"],
                                 description="trackers: tensorboard, wandb, mlflow, trackio, or [] for none")


class AdapterSettings(_Section):
    """Which weights train: all of them, a LoRA/DoRA adapter, soft prompts or the last layers."""

    method: AdapterMethod = Field(
        "none", description="none = full fine-tuning")
    r: int = Field(8, ge=1, description="LoRA rank")
    alpha: int = Field(16, ge=1, description="LoRA alpha")
    dropout: float = Field(0.0, ge=0, lt=1, description="LoRA dropout")
    target_modules: str | list[str] = Field("all-linear", description="modules LoRA wraps")
    num_virtual_tokens: int = Field(8, ge=1, description="soft-prompt length (prompt_tuning)")
    prompt_init_text: str | None = Field(None, description="initialise soft prompts from this text")
    train_last_layers: int | None = Field(None, ge=0, description="freeze: train only the last N decoder layers")
    train_modules: list[str] = Field(default_factory=list,
                                     description="freeze: also train parameters whose name contains one of these")


class LauncherSettings(_Section):
    kind: Literal["none", "accelerate", "torchrun"] = Field("none", description="how the run process starts")
    nproc: int = Field(1, ge=1, description="processes (one per GPU; gloo on CPU)")
    config_file: str | None = Field(None, description="accelerate / DeepSpeed / FSDP config passed through")


class Expectation(_Section):
    """A learning check the run evaluates at its end (recipes use them to prove learning)."""

    metric: str = Field(description="a logged metric (loss, rewards/margins, ...) or a final one (eval_accuracy)")
    falls_by: float | None = Field(None, description="last logged value <= first * (1 - falls_by)")
    rises_by: float | None = Field(None, description="last logged value >= first + rises_by")
    above: float | None = Field(None, description="final value > this")
    below: float | None = Field(None, description="final value < this")


class TrainRecipe(_Section):
    """A training recipe (``studio run RECIPE [key=value ...]``)."""

    DATA_FIELDS: ClassVar[tuple[str, ...]] = ("dataset", "eval_dataset")

    backend: str = Field(description="registered tuning back-end (`studio plugins list`)")
    model: str = Field("embedded", description="base model: embedded[:small], a local folder, a run, or a hub id")
    dataset: str = Field(description="stored dataset NAME[@VERSION] or a data file path")
    eval_dataset: str | None = Field(None, description="held-out data (stored name or file); default: split off")
    eval_fraction: float = Field(0.1, ge=0, lt=1, description="held-out share when eval_dataset is not given")
    format_options: dict[str, Any] = Field(default_factory=dict,
                                           description="options for the data file's format, e.g. {pairs: best_each} "
                                                       "for scored multi-response rows (as `--option` on import)")
    limit: int | None = Field(None, ge=1, description="use only the first N training records")
    name: str | None = Field(None, description="run name (part of the run id)")
    seed: int = Field(0, description="seed for data order and initialisation")
    trust_remote_code: bool = Field(False, description="run model code shipped with a hub model")
    training: TrainingSettings = Field(default_factory=TrainingSettings)
    adapter: AdapterSettings = Field(default_factory=AdapterSettings)
    launcher: LauncherSettings = Field(default_factory=LauncherSettings)
    expect: list[Expectation] = Field(default_factory=list, description="learning checks run at the end")
    eval: list[EvalTask] = Field(default_factory=list,
                                 description="evaluation tasks (as in an evaluate recipe) run on the base model and on "
                                             "the trained one when the run completes, into one report")
    config: dict[str, Any] = Field(default_factory=dict, description="the back-end's own options")
