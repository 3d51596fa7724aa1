"""One way to name a model anywhere in the studio, and one loader for it.

A model reference is, tried in this order:
  - ``embedded`` or ``embedded:<size>``: the embedded default model, built on first use;
  - a local folder holding a model (``config.json``) or a PEFT adapter (``adapter_config.json``);
  - a studio run folder: its ``final/`` or ``model/`` subfolder is the model;
  - a run of the workspace, by its id or a unique part of it (what `studio runs ls` shows);
  - anything else is a Hugging Face hub id (needs the hub, or a populated cache).
A reference that none of these finds fails with a message listing what was tried.

Remote code is never executed unless the caller passes ``trust_remote_code=True``: passing an
explicit False also keeps transformers from prompting on a terminal.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from studio.models.progress import quiet_progress

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


class ModelNotFound(ValueError):
    """No model behind a reference; the message lists every place that was tried."""


def _looks_like_path(ref: str) -> bool:
    return ref.startswith((".", "/", "~")) or ref.endswith(("/", "\\")) or "\\" in ref


# A workspace, or a callable that opens one only when a run id has to be looked up.
WorkspaceSource = Any


def _workspace_of(source: WorkspaceSource):
    return source() if callable(source) else source


def _run_folder(ref: str, ws) -> Path | None:
    if ws is None or _looks_like_path(ref):
        return None
    from studio.run_files import RunFiles, find_run_folder, training_runs_dir

    try:
        folder = find_run_folder(training_runs_dir(ws), ref)
    except ValueError as exc:
        if "matches" in str(exc):  # ambiguous: say so rather than fall through to the hub
            raise ModelNotFound(str(exc)) from None
        return None
    if not any((folder / name).is_dir() for name in RUN_SUBFOLDERS):
        raise ModelNotFound(f"run {folder.name} has no trained model yet (status: "
                            f"{RunFiles(folder).status().get('status')}); it is written to {folder / 'final'} "
                            f"when the run completes")
    return folder


def _tried(ref: str, ws) -> str:
    runs = f"a run of the workspace {ws.root}" if ws is not None else "a run id (no workspace to look in)"
    return (f"tried the embedded model (`embedded`, `embedded:<size>`), a local folder {Path(ref).expanduser()}, "
            f"{runs}, and a Hugging Face hub id")


def resolve_model_ref(ref: str | Path, build: bool = True, workspace: WorkspaceSource = None) -> str:
    """A location ``from_pretrained`` accepts: a local folder path or a hub id.

    ``workspace`` (or a callable returning it) is where run ids are looked up. With
    ``build=False`` the embedded model is not built; its cache path is returned as it is."""
    ref = str(ref)
    size = embedded_size(ref)
    if size is not None:
        from studio.models.embedded import embedded_path, ensure_embedded_model

        return str(ensure_embedded_model(size) if build else embedded_path(size))
    path = Path(ref).expanduser()
    if path.is_dir():
        return str(model_folder(path))
    if _looks_like_path(ref) or path.exists():
        raise ModelNotFound(f"no model folder at {path}")
    run = _run_folder(ref, _workspace_of(workspace))
    if run is not None:
        return str(model_folder(run))
    return ref


def is_hub_id(location: str) -> bool:
    return not Path(location).is_dir()


def hub_failure(ref: str, exc: Exception, workspace: WorkspaceSource = None) -> ModelNotFound:
    """The error for a reference that reached the hub and failed there: what was tried, and why
    the hub gave nothing (offline, unknown id, ...)."""
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return ModelNotFound(f"no model {ref!r}: {_tried(ref, _workspace_of(workspace))}; as a hub id: {reason}")


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def load_model(path_or_id: str | Path, trust_remote_code: bool = False, device: str | None = None,
               workspace: WorkspaceSource = None):
    """Load ``(model, tokenizer)`` for a model reference (see the module docstring), in eval mode.

    ``device`` defaults to CUDA when available, else CPU. A PEFT adapter is loaded on top of its
    base model (itself any reference), with the adapter folder's tokenizer when it has one."""
    location = resolve_model_ref(path_or_id, workspace=workspace)
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
            try:
                model = AutoModelForCausalLM.from_pretrained(location, trust_remote_code=trust_remote_code,
                                                             dtype=dtype)
            except OSError as exc:
                if is_hub_id(location):
                    raise hub_failure(str(path_or_id), exc, workspace) from None
                raise
            tokenizer_location = location
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_location, trust_remote_code=trust_remote_code)
    model.to(device)
    model.eval()
    return model, tokenizer
