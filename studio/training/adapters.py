"""Which weights train and in what precision: peft configs for LoRA, DoRA, QLoRA and prompt
tuning, layer freezing for transfer learning, precision flags, and the resume point."""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any

from studio.recipes.train import AdapterSettings

LAYER_RE = re.compile(r"(?:^|\.)(?:layers|h|layer|blocks)\.(\d+)\.")


def adapter_problems(adapter: AdapterSettings, allowed: tuple[str, ...], backend: str) -> list[str]:
    """Checks that need no model: run before the run starts."""
    problems = []
    if adapter.method not in allowed:
        problems.append(f"adapter.method: back-end {backend!r} supports {', '.join(allowed)}, not {adapter.method!r}")
    if adapter.method == "qlora":
        problems += qlora_problems()
    if adapter.method == "freeze" and adapter.train_last_layers is None and not adapter.train_modules:
        problems.append("adapter: method 'freeze' needs train_last_layers (N) or train_modules (names)")
    return problems


def qlora_problems() -> list[str]:
    if importlib.util.find_spec("bitsandbytes") is None:
        return ["adapter.method: QLoRA needs the bitsandbytes package (pip install bitsandbytes) and a CUDA "
                "GPU; use method 'lora' on this machine"]
    import torch

    if not torch.cuda.is_available():
        return ["adapter.method: QLoRA needs a CUDA GPU (4-bit weights are a bitsandbytes CUDA feature); "
                "use method 'lora' on this machine"]
    return []


def peft_config(adapter: AdapterSettings, task_type: str, model_location: str):
    method = adapter.method
    if method in ("none", "freeze"):
        return None
    if method in ("lora", "dora", "qlora"):
        from peft import LoraConfig

        return LoraConfig(r=adapter.r, lora_alpha=adapter.alpha, lora_dropout=adapter.dropout,
                          target_modules=adapter.target_modules, use_dora=method == "dora", task_type=task_type)
    if method == "prompt_tuning":
        from peft import PromptTuningConfig, PromptTuningInit

        init = PromptTuningInit.TEXT if adapter.prompt_init_text else PromptTuningInit.RANDOM
        return PromptTuningConfig(task_type=task_type, num_virtual_tokens=adapter.num_virtual_tokens,
                                  prompt_tuning_init=init, prompt_tuning_init_text=adapter.prompt_init_text,
                                  tokenizer_name_or_path=model_location if adapter.prompt_init_text else None)
    raise ValueError(f"unknown adapter method {method!r}")


def apply_freeze(model, adapter: AdapterSettings) -> dict[str, int]:
    """Freeze everything but the last N decoder layers and the named modules; {} when not freezing."""
    if adapter.method != "freeze":
        return {}
    layer_ids = sorted({int(m.group(1)) for name, _ in model.named_parameters() if (m := LAYER_RE.search(name))})
    keep_layers = set(layer_ids[-adapter.train_last_layers:]) if adapter.train_last_layers else set()
    total = trainable = 0
    for name, param in model.named_parameters():
        match = LAYER_RE.search(name)
        train = (match is not None and int(match.group(1)) in keep_layers) or any(
            part in name for part in adapter.train_modules)
        param.requires_grad_(train)
        total += param.numel()
        trainable += param.numel() if train else 0
    if trainable == 0:
        raise ValueError(f"freeze left nothing to train: the model has layers {layer_ids[:3]}...{layer_ids[-1:]} "
                         f"and no parameter name contains any of {adapter.train_modules}")
    return {"trainable": trainable, "total": total, "layers": len(layer_ids), "trained_layers": len(keep_layers)}


def precision_args(precision: str) -> dict[str, Any]:
    import torch

    cuda = torch.cuda.is_available()
    if precision == "auto":
        precision = "bf16" if cuda and torch.cuda.is_bf16_supported() else "fp32"
    if precision == "fp32":
        return {"bf16": False, "fp16": False}
    if precision == "bf16":
        # On a CPU trl refuses bf16 unless it is told the run is meant for the CPU.
        return {"bf16": True, "fp16": False, **({} if cuda else {"use_cpu": True})}
    return {"fp16": True, "bf16": False}


def last_checkpoint(folder: Path) -> Path | None:
    """The newest complete checkpoint (trainer state written) or None."""
    if not folder.is_dir():
        return None
    found = []
    for path in folder.iterdir():
        match = re.fullmatch(r"checkpoint-(\d+)", path.name)
        if match and (path / "trainer_state.json").is_file():
            found.append((int(match.group(1)), path))
    return max(found)[1] if found else None


def checkpoints(folder: Path) -> list[dict[str, Any]]:
    if not folder.is_dir():
        return []
    out = []
    for path in folder.iterdir():
        match = re.fullmatch(r"checkpoint-(\d+)", path.name)
        if match:
            out.append({"step": int(match.group(1)), "path": str(path),
                        "complete": (path / "trainer_state.json").is_file()})
    return sorted(out, key=lambda c: c["step"])
