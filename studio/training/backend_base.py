"""The contract of a tuning back-end plugin, and the context the run process hands it.

A back-end is a small object: ``name``, ``title``, ``summary``, a pydantic ``config_model`` (its
own options, the ``config:`` section of a recipe), the record kinds it trains on and
``train(ctx) -> dict`` returning its final metrics. Everything around the trainer is the host's:
the run folder, the data (loaded, checked and split before the run starts), the model
reference, the optimisation settings, adapters, events, cancellation, checkpoints and resume.
``TrainContext`` gives a trl/transformers back-end all of it in a few calls::

    def train(self, ctx):
        model, tokenizer = ctx.load_causal_lm()
        args = trl.SFTConfig(**ctx.trainer_args(), assistant_only_loss=True)
        trainer = trl.SFTTrainer(model=model, args=args, train_dataset=ctx.dataset("conversation"),
                                 eval_dataset=ctx.eval_dataset("conversation"), processing_class=tokenizer,
                                 peft_config=ctx.peft_config(), callbacks=ctx.callbacks())
        return ctx.fit(trainer)

Back-ends run only inside the run subprocess (``studio.training.worker``), never in the TUI.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

from pydantic import BaseModel

from studio.records import Record
from studio.recipes.train import TrainRecipe

Emit = Callable[..., None]
TINY_PARAMS = 2_000_000


class Backend:
    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    config_model: ClassVar[type[BaseModel]]
    # Record kinds it trains on (studio.training.data.DATA_KINDS); the first is converted to.
    data_kind: ClassVar[str] = "conversation"
    # Adapter methods it supports; the host refuses the others before the run starts.
    adapter_methods: ClassVar[tuple[str, ...]] = ("none", "lora", "dora", "qlora", "freeze")

    def check(self, recipe: TrainRecipe, config: BaseModel) -> list[str]:
        """Extra problems with this recipe, found before the run starts (no torch needed)."""
        return []

    def needs_chat_template(self, config: BaseModel) -> bool:
        """Whether records reach the model through its chat template (checked before the run)."""
        return True

    def train(self, ctx: "TrainContext") -> dict[str, Any]:
        raise NotImplementedError

    def preview(self, ctx: "TrainContext", record: Record) -> dict[str, Any] | None:
        """How one record reaches the model (text and which tokens carry loss), if meaningful."""
        return None


@dataclass
class TrainContext:
    recipe: TrainRecipe
    config: BaseModel
    run_dir: Path
    train_records: list[Record]
    eval_records: list[Record]
    emit: Emit = lambda name, **fields: None
    cancelled: Callable[[], bool] = lambda: False
    resume: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    # -- locations -------------------------------------------------------------------------
    @property
    def checkpoints_dir(self) -> Path:
        return self.run_dir / "checkpoints"

    @property
    def final_dir(self) -> Path:
        return self.run_dir / "final"

    @property
    def is_main_process(self) -> bool:
        return int(os.environ.get("RANK", "0")) == 0

    def model_location(self) -> str:
        from studio.models.loading import resolve_model_ref

        return resolve_model_ref(self.recipe.model)

    # -- data ------------------------------------------------------------------------------
    def dataset(self, kind: str):
        from studio.training.data import to_dataset

        return to_dataset(self.train_records, kind)

    def eval_dataset(self, kind: str):
        from studio.training.data import to_dataset

        return to_dataset(self.eval_records, kind) if self.eval_records else None

    # -- models ----------------------------------------------------------------------------
    def load_tokenizer(self, location: str | None = None):
        from transformers import AutoTokenizer

        from studio.models.loading import quiet_progress

        with quiet_progress():
            tokenizer = AutoTokenizer.from_pretrained(location or self.model_location(),
                                                      trust_remote_code=self.recipe.trust_remote_code)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        return tokenizer

    def load_causal_lm(self, location: str | None = None):
        """``(model, tokenizer)`` in training precision, with a freeze applied when asked for.

        A LoRA adapter (say, the SFT run a DPO run starts from) is merged into its base first,
        so the new run trains a plain model and may add an adapter of its own."""
        from transformers import AutoModelForCausalLM

        from studio.models.loading import quiet_progress, resolve_model_ref

        location = location or self.model_location()
        self.seed_everything()
        adapter_file = Path(location) / "adapter_config.json"
        with quiet_progress():
            if adapter_file.is_file():
                import json

                from peft import PeftModel

                base = resolve_model_ref(json.loads(adapter_file.read_text())["base_model_name_or_path"])
                model = AutoModelForCausalLM.from_pretrained(base, trust_remote_code=self.recipe.trust_remote_code,
                                                             **self.model_kwargs())
                # Loaded for inference, peft freezes the base; the merged model trains in full.
                model = PeftModel.from_pretrained(model, location).merge_and_unload().requires_grad_(True)
                self.emit("info", message=f"merged the adapter {location} into its base {base}")
            else:
                model = AutoModelForCausalLM.from_pretrained(location, trust_remote_code=self.recipe.trust_remote_code,
                                                             **self.model_kwargs())
        self.apply_freeze(model)
        self.tune_threads(model)
        return model, self.load_tokenizer(location)

    def tune_threads(self, model) -> None:
        """One CPU thread for tiny models: thread start-up and contention cost more than the
        matrix products gain below a couple of million parameters (measured 2-8x faster)."""
        import torch

        if torch.cuda.is_available() or "OMP_NUM_THREADS" in os.environ or torch.get_num_threads() == 1:
            return
        count = sum(p.numel() for p in model.parameters())
        if count < TINY_PARAMS:
            torch.set_num_threads(1)
            self.emit("info", message=f"{count:,}-parameter model on a CPU: training on one thread")

    def model_kwargs(self) -> dict[str, Any]:
        """dtype and (QLoRA) quantisation for ``from_pretrained``."""
        import torch

        kwargs: dict[str, Any] = {"dtype": torch.float32}
        if self.recipe.adapter.method == "qlora":
            from transformers import BitsAndBytesConfig

            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=torch.bfloat16)
            kwargs["dtype"] = torch.bfloat16
        return kwargs

    def seed_everything(self) -> None:
        from transformers import set_seed

        set_seed(self.recipe.seed)

    def peft_config(self, task_type: str = "CAUSAL_LM"):
        """The peft config of the recipe's adapter section, or None for full/frozen training."""
        from studio.training.adapters import peft_config

        return peft_config(self.recipe.adapter, task_type, self.model_location())

    def apply_freeze(self, model) -> dict[str, int]:
        from studio.training.adapters import apply_freeze

        counts = apply_freeze(model, self.recipe.adapter)
        if counts:
            self.emit("info", message=f"freeze: training {counts['trainable']:,} of {counts['total']:,} parameters",
                      **counts)
        return counts

    # -- the trainer -----------------------------------------------------------------------
    def trainer_args(self, **overrides: Any) -> dict[str, Any]:
        """Keyword arguments shared by every trl ``*Config`` (a ``TrainingArguments`` subclass)."""
        from studio.training.adapters import precision_args

        t = self.recipe.training
        has_eval = bool(self.eval_records)
        args: dict[str, Any] = {
            "output_dir": str(self.checkpoints_dir),
            "run_name": self.run_dir.name,
            "max_steps": t.max_steps,
            "per_device_train_batch_size": t.batch_size,
            "per_device_eval_batch_size": t.batch_size,
            "gradient_accumulation_steps": t.grad_accum,
            "learning_rate": t.learning_rate,
            "lr_scheduler_type": t.scheduler,
            "warmup_steps": t.warmup_ratio,
            "weight_decay": t.weight_decay,
            "max_grad_norm": t.max_grad_norm,
            "logging_steps": t.logging_steps,
            "logging_first_step": True,
            "save_strategy": "steps",
            "save_steps": t.save_steps,
            "save_total_limit": t.save_total_limit,
            "eval_strategy": "steps" if has_eval and t.eval_steps else "no",
            "eval_steps": t.eval_steps,
            "seed": self.recipe.seed,
            "data_seed": self.recipe.seed,
            "report_to": list(t.report_to),
            "disable_tqdm": True,
            "dataloader_num_workers": 0,
            "dataloader_pin_memory": _cuda(),
            "activation_checkpointing": t.gradient_checkpointing,
            **precision_args(t.precision),
        }
        if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not _cuda():
            # Several CPU processes (torchrun/accelerate): accelerate joins them over gloo only
            # when told the run is a CPU run.
            args.update(use_cpu=True, ddp_backend="gloo")
        launcher = self.recipe.launcher
        if launcher.kind == "torchrun" and (launcher.config_file or "").endswith(".json"):
            args["deepspeed"] = launcher.config_file  # a DeepSpeed config under torchrun
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(self.run_dir / "tensorboard")
        args.update(overrides)
        return args

    def callbacks(self) -> list:
        from studio.training.callbacks import EventsCallback

        return [EventsCallback(self.emit, self.cancelled)]

    def fit(self, trainer, save_final: bool = True) -> dict[str, Any]:
        """Train (from the last checkpoint when resuming), evaluate held-out data, save the
        final model or adapter with its tokenizer, and return the metrics."""
        from studio.training.adapters import last_checkpoint

        checkpoint = last_checkpoint(self.checkpoints_dir) if self.resume else None
        if self.resume and checkpoint is None:
            self.emit("warning", message="no checkpoint yet: starting from step 0")
        result = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
        metrics = {k: v for k, v in result.metrics.items() if isinstance(v, (int, float))}
        if self.cancelled():
            return metrics
        if trainer.eval_dataset is not None:
            metrics.update(trainer.evaluate())
        if save_final:
            trainer.save_model(str(self.final_dir))
            processing = getattr(trainer, "processing_class", None)
            if processing is not None and trainer.is_world_process_zero():
                processing.save_pretrained(str(self.final_dir))
        return metrics


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()
