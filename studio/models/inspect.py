"""What a model folder holds, read from its JSON and safetensors headers only (no torch): for
`studio model info` and the checks that run before a training run starts."""
from __future__ import annotations

import json
import re
import struct
from pathlib import Path
from typing import Any

from studio.models.loading import ModelNotFound, WorkspaceSource, embedded_size, resolve_model_ref


def _json_file(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def safetensors_parameters(folder: Path) -> int | None:
    """Parameter count from the safetensors headers alone: 8-byte length, then JSON."""
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return None
    total = 0
    for path in files:
        with open(path, "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(length))
        for key, tensor in header.items():
            if key != "__metadata__":
                count = 1
                for dim in tensor["shape"]:
                    count *= dim
                total += count
    return total


def chat_template_of(folder: Path) -> str | None:
    """The chat template a model or adapter folder brings (an adapter without a tokenizer of its
    own uses its base's), or None."""
    folder = Path(folder)
    if (folder / "chat_template.jinja").is_file():
        return (folder / "chat_template.jinja").read_text(encoding="utf-8")
    template = (_json_file(folder / "tokenizer_config.json") or {}).get("chat_template")
    if isinstance(template, list):  # named templates: the default one is what chat rendering uses
        template = next((t.get("template") for t in template if t.get("name") == "default"), None)
    if template:
        return template
    adapter = _json_file(folder / "adapter_config.json")
    if adapter and not (folder / "tokenizer_config.json").is_file() and adapter.get("base_model_name_or_path"):
        base = Path(resolve_model_ref(adapter["base_model_name_or_path"], build=False))
        return chat_template_of(base) if base.is_dir() else None
    return None


def local_model_folder(ref: str, workspace: WorkspaceSource = None) -> Path:
    """The folder behind a reference, without building or downloading anything."""
    folder = Path(resolve_model_ref(ref, build=False, workspace=workspace))
    if not folder.is_dir():
        if embedded_size(ref) is not None:
            raise ModelNotFound(f"{ref} is not built yet: it is built on first use (`studio serve {ref}`), or "
                                f"build a copy with `studio model init`")
        raise ModelNotFound(f"{ref} is not a local model: not the embedded model, a folder or a run of the "
                            f"workspace (a hub model is inspected after it is downloaded)")
    return folder


def model_summary(ref: str, workspace: WorkspaceSource = None) -> dict[str, Any]:
    """What ``studio model info`` shows."""
    folder = local_model_folder(ref, workspace)
    config = _json_file(folder / "config.json") or {}
    adapter = _json_file(folder / "adapter_config.json")
    tokenizer = _json_file(folder / "tokenizer_config.json") or {}
    summary: dict[str, Any] = {
        "path": str(folder),
        "kind": "adapter" if adapter else "model",
        "parameters": safetensors_parameters(folder),
    }
    if config:
        summary.update({key: config.get(key) for key in (
            "model_type", "architectures", "hidden_size", "num_hidden_layers", "num_attention_heads",
            "vocab_size", "max_position_embeddings", "dtype") if config.get(key) is not None})
    if adapter:
        summary["adapter"] = {key: adapter.get(key) for key in (
            "base_model_name_or_path", "peft_type", "task_type", "r", "lora_alpha", "target_modules")}
    summary["tokenizer"] = {
        "bos": tokenizer.get("bos_token"), "eos": tokenizer.get("eos_token"), "pad": tokenizer.get("pad_token"),
        "chat_template": chat_template_of(folder) is not None,
    }
    studio = _json_file(folder / "studio_model.json")
    if studio:
        summary["studio"] = studio
    return summary


# The {% generation %} marks that let a chat template tell which tokens the assistant wrote.
GENERATION_MARK = re.compile(r"\{%-?\s*generation\s*-?%\}")


def has_generation_marks(template: str | None) -> bool:
    return bool(template) and GENERATION_MARK.search(template) is not None


def marked_chat_template(tokenizer) -> str | None:
    """A chat template that marks the assistant's tokens: the tokenizer's own when it has the
    marks, else trl's marked version of a popular template it recognises, else None. Training
    (assistant-only loss) and held-out evaluation use the same one."""
    template = tokenizer.chat_template
    if isinstance(template, dict):
        template = template.get("default")
    if not template:
        return None
    if has_generation_marks(template):
        return template
    from trl.chat_template_utils import get_training_chat_template

    try:
        return get_training_chat_template(tokenizer) or None
    except ValueError:
        return None
