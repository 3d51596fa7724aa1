"""Export a trained model in plain Hugging Face format: a LoRA/DoRA adapter merged into its
base (so any HF tool, `studio serve` or another trainer loads it with no peft), or a full model
copied with its tokenizer, chat template and generation settings."""
from __future__ import annotations

import json
import time
import warnings
from pathlib import Path
from typing import Any


def export_model(ref: str, out: Path, merge: bool = True, trust_remote_code: bool = False,
                 workspace=None) -> dict[str, Any]:
    """``ref`` is any model reference (:mod:`studio.models.loading`); ``workspace`` (or a callable
    opening it) is where run ids are looked up."""
    from studio.models.loading import load_model, quiet_progress, resolve_model_ref

    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"{out} is not empty")
    source = Path(resolve_model_ref(ref, workspace=workspace))
    adapter = json.loads((source / "adapter_config.json").read_text()) if (source / "adapter_config.json").is_file() else None
    if adapter and adapter.get("peft_type") not in ("LORA",) and merge:
        raise ValueError(f"a {adapter.get('peft_type')} adapter cannot be merged into its base (only LoRA/DoRA "
                         "can); export it with --no-merge, or load it with peft")
    # The original reference, so a failed hub download is worded with what was tried.
    model, tokenizer = load_model(ref if not source.is_dir() else str(source), trust_remote_code=trust_remote_code,
                                  device="cpu", workspace=workspace)
    merged = False
    if adapter and merge:
        model = model.merge_and_unload()
        merged = True
    out.mkdir(parents=True, exist_ok=True)
    with quiet_progress(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # transformers' own deprecation notices
        model.save_pretrained(str(out))
        tokenizer.save_pretrained(str(out))
    info = {"exported_from": str(source), "merged_adapter": merged, "at": time.time(),
            "base": adapter.get("base_model_name_or_path") if adapter else None,
            "parameters": sum(p.numel() for p in model.parameters())}
    (out / "studio_export.json").write_text(json.dumps(info, indent=2), encoding="utf-8")
    return {"path": str(out), **info}
