"""trl 1.12.0's PPO on the benchmark's setup: the reference side of ``bench/bench_ppo.py``.

    bench/envs/trl-1.12.0/bin/python bench/ppo_reference_trl.py SPEC.json OUT.json

Runs in trl's own venv (``bench/reference_env.py``): it imports trl, transformers, peft, datasets and
``ppo_common`` beside it, never the studio. SPEC is written by bench_ppo.py: the model folder, the
tokenized prompts, the planted reward's good tokens and every PPO setting; OUT gets the per-update
scores and KL, the seconds of ``trainer.train()`` and the memory figures.
"""
from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from ppo_common import (PlantedRewardModel, held_tensor_bytes, import_model_libraries, rss_baseline,  # noqa: E402
                        rss_peak, timed_training)


def main(spec_path: str, out_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    torch.set_num_threads(spec["threads"])
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer, TrainerCallback
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    import_model_libraries()
    baseline = rss_baseline()
    load_start = time.perf_counter()
    torch.manual_seed(spec["seed"])
    tokenizer = AutoTokenizer.from_pretrained(spec["model"])
    pad = tokenizer.pad_token_id
    width = max(len(p) for p in spec["prompts"])
    # left-padded to one length: trl takes tokenized prompts, and the response then starts at `width`
    rows = [[pad] * (width - len(p)) + p for p in spec["prompts"]]
    dataset = Dataset.from_dict({"input_ids": rows})
    policy = AutoModelForCausalLM.from_pretrained(spec["model"], dtype=torch.float32)
    ref = None if spec["lora"] else AutoModelForCausalLM.from_pretrained(spec["model"], dtype=torch.float32)
    value = AutoModelForSequenceClassification.from_pretrained(spec["model"], num_labels=1, dtype=torch.float32)
    value.config.pad_token_id = pad
    with torch.no_grad():  # the same start as the studio's value_init "policy": a zero head
        value.score.weight.zero_()
    reward = PlantedRewardModel(spec["good"], len(tokenizer), width, tokenizer.eos_token_id)
    peft_config = None
    if spec["lora"]:
        from peft import LoraConfig

        peft_config = LoraConfig(r=spec["lora"]["r"], lora_alpha=spec["lora"]["alpha"], lora_dropout=0.0,
                                 target_modules=spec["lora"]["target_modules"], task_type="CAUSAL_LM")
    batch = spec["batch_size"]
    config = PPOConfig(
        output_dir=tempfile.mkdtemp(prefix="trl-ppo-"), use_cpu=True, bf16=False, fp16=False,
        gradient_checkpointing=False, report_to="none", disable_tqdm=True, save_strategy="no",
        logging_steps=1, seed=spec["seed"], data_seed=spec["seed"],
        per_device_train_batch_size=batch, gradient_accumulation_steps=1, per_device_eval_batch_size=batch,
        num_mini_batches=spec["num_mini_batches"], num_ppo_epochs=spec["num_ppo_epochs"],
        total_episodes=spec["updates"] * batch, local_rollout_forward_batch_size=batch,
        response_length=spec["response_length"], stop_token="eos", temperature=spec["temperature"],
        missing_eos_penalty=spec["missing_eos_penalty"], learning_rate=spec["learning_rate"],
        lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, adam_epsilon=spec["adam_epsilon"],
        kl_coef=spec["kl_coef"], kl_estimator=spec["kl_estimator"], cliprange=spec["cliprange"],
        cliprange_value=spec["cliprange_value"], vf_coef=spec["vf_coef"], gamma=spec["gamma"], lam=spec["lam"],
        num_sample_generations=0,
        dataloader_num_workers=0,
    )
    memory: dict = {}

    class Measure(TrainerCallback):
        """The held tensors once the optimiser has state (after the first update); the scan's own
        seconds are taken off the timing."""
        scan_seconds = 0.0

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 1:
                start = time.perf_counter()
                memory.update(held_tensor_bytes())
                Measure.scan_seconds += time.perf_counter() - start

    trainer = PPOTrainer(args=config, processing_class=tokenizer, model=policy, ref_model=ref, reward_model=reward,
                         value_model=value, train_dataset=dataset, eval_dataset=dataset, peft_config=peft_config,
                         callbacks=[Measure()])
    load_seconds = time.perf_counter() - load_start
    seconds, cpu_seconds, profile = timed_training(trainer.train, spec.get("profile", False))
    seconds -= Measure.scan_seconds
    cpu_seconds -= Measure.scan_seconds
    logs = [entry for entry in trainer.state.log_history if "objective/scores" in entry]
    out = {
        "side": "trl", "version": __import__("trl").__version__,
        "scores": [entry["objective/scores"] for entry in logs],
        "kl": [entry["objective/kl"] for entry in logs],
        "ratio": [entry["val/ratio"] for entry in logs],
        "seconds": seconds, "cpu_seconds": cpu_seconds, "load_seconds": load_seconds, "episodes": len(logs) * batch,
        "memory": memory, "rss_baseline": baseline, "rss_peak": rss_peak(), "profile": profile,
        "trainable_parameters": sum(p.numel() for p in trainer.model.parameters() if p.requires_grad),
    }
    Path(out_path).write_text(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
