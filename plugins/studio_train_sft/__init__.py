"""Supervised fine-tuning back-end (minimal: being extended)."""
from pydantic import BaseModel, ConfigDict, Field

from studio.hookspecs import hookimpl
from studio.training.backend_base import Backend


class SFTOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    assistant_only_loss: bool = Field(True, description="loss only on assistant tokens")


class SFTBackend(Backend):
    name = "sft"
    title = "Supervised fine-tuning"
    summary = "trl SFTTrainer"
    config_model = SFTOptions
    data_kind = "conversation"

    def train(self, ctx):
        from trl import SFTConfig, SFTTrainer

        model, tokenizer = ctx.load_causal_lm()
        args = SFTConfig(**ctx.trainer_args(), max_length=ctx.recipe.training.max_length,
                         assistant_only_loss=ctx.config.assistant_only_loss)
        trainer = SFTTrainer(model=model, args=args, train_dataset=ctx.dataset("conversation"),
                             eval_dataset=ctx.eval_dataset("conversation"), processing_class=tokenizer,
                             peft_config=ctx.peft_config(), callbacks=ctx.callbacks())
        return ctx.fit(trainer)


@hookimpl
def register_backends(register):
    register(SFTBackend())
