"""One way to name a model anywhere in the studio, and one loader for it.

A model reference is one of:
  - ``embedded`` or ``embedded:<size>``: the embedded default model, built on first use;
  - a local folder holding a model (``config.json``) or a PEFT adapter (``adapter_config.json``);
  - a studio run folder: its ``final/`` or ``model/`` subfolder is the model;
  - anything else is a Hugging Face hub id (needs the hub, or a populated cache).

Remote code is never executed unless the caller passes ``trust_remote_code=True``: passing an
explicit False also keeps transformers from prompting on a terminal.
"""
from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any, Iterator

EMBEDDED = "embedded"
MODEL_MARKERS = ("config.json", "adapter_config.json")
RUN_SUBFOLDERS = ("final", "model")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")


def embedded_size(ref: str) -> str | None:
    """``"tiny"`` for ``embedded``, the size for ``embedded:<size>``, None for other references."""
    name, _, size = str(ref).partition(":")
    if name != EMBEDDED:
        return None
    from studio.models.embedded import SIZES

    size = size or "tiny"
    if size not in SIZES:
        raise ValueError(f"unknown embedded model size {size!r} in {ref!r}; choose one of: {', '.join(SIZES)}")
    return size


def _holds_model(folder: Path) -> bool:
    return any((folder / marker).is_file() for marker in MODEL_MARKERS)


def model_folder(folder: Path) -> Path:
    """The folder itself when it holds a model or adapter, else a run folder's final/ or model/."""
    if _holds_model(folder):
        return folder
    for name in RUN_SUBFOLDERS:
        if _holds_model(folder / name):
            return folder / name
    raise ValueError(f"{folder} holds no model: expected config.json or adapter_config.json in it "
                     f"or in a {' or '.join(n + '/' for n in RUN_SUBFOLDERS)} subfolder")


def _looks_like_path(ref: str) -> bool:
    return ref.startswith((".", "/", "~")) or ref.endswith(("/", "\\")) or "\\" in ref


def resolve_model_ref(ref: str | Path, build: bool = True) -> str:
    """A location ``from_pretrained`` accepts: a local folder path or a hub id.

    With ``build=False`` the embedded model is not built; its cache path is returned as it is."""
    ref = str(ref)
    size = embedded_size(ref)
    if size is not None:
        from studio.models.embedded import embedded_path, ensure_embedded_model

        return str(ensure_embedded_model(size) if build else embedded_path(size))
    path = Path(ref).expanduser()
    if path.is_dir():
        return str(model_folder(path))
    if _looks_like_path(ref) or path.exists():
        raise ValueError(f"no model folder at {ref}")
    return ref


@contextlib.contextmanager
def quiet_progress() -> Iterator[None]:
    """Silence transformers' progress bars (loading/saving shards) for the duration."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def load_model(path_or_id: str | Path, trust_remote_code: bool = False, device: str | None = None):
    """Load ``(model, tokenizer)`` for a model reference (see the module docstring), in eval mode.

    ``device`` defaults to CUDA when available, else CPU. A PEFT adapter is loaded on top of its
    base model (itself any reference), with the adapter folder's tokenizer when it has one."""
    location = resolve_model_ref(path_or_id)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    # Full precision on CPU (bf16 matmuls are slow there for small models); checkpoint dtype elsewhere.
    dtype = torch.float32 if device == "cpu" else "auto"
    folder = Path(location)
    with quiet_progress():
        if (folder / "adapter_config.json").is_file():
            from peft import PeftModel

            base_ref = _read_json(folder / "adapter_config.json").get("base_model_name_or_path")
            if not base_ref:
                raise ValueError(f"{folder / 'adapter_config.json'} names no base_model_name_or_path")
            base_location = resolve_model_ref(base_ref)
            base = AutoModelForCausalLM.from_pretrained(base_location, trust_remote_code=trust_remote_code,
                                                        dtype=dtype)
            model = PeftModel.from_pretrained(base, str(folder))
            has_tokenizer = any((folder / name).is_file() for name in TOKENIZER_FILES)
            tokenizer_location = str(folder) if has_tokenizer else base_location
        else:
            model = AutoModelForCausalLM.from_pretrained(location, trust_remote_code=trust_remote_code, dtype=dtype)
            tokenizer_location = location
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_location, trust_remote_code=trust_remote_code)
    model.to(device)
    model.eval()
    return model, tokenizer
