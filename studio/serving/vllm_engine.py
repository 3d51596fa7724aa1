"""`studio serve --engine vllm`: hand a model folder to vLLM's OpenAI-compatible server.

vLLM batches on the GPU with paged attention, far beyond what the studio's own server does, but
it needs a CUDA GPU and its own install, and it reads a plain Hugging Face model folder: an
adapter has to be merged into its base first (``studio model export RUN merged/``). Each of those
is checked up front, so a refusal is one line that says which one is missing.
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable

VLLM_SERVER_MODULE = "vllm.entrypoints.openai.api_server"
VLLM_KEY_VARIABLE = "VLLM_API_KEY"  # vLLM reads the key from here: it never shows on a command line


class VllmUnavailable(RuntimeError):
    """vLLM can't serve this model here; the message says why, in one line."""


def vllm_installed() -> bool:
    return importlib.util.find_spec("vllm") is not None


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def vllm_refusal(model_dir: str | Path, installed: Callable[[], bool] | None = None,
                 gpu: Callable[[], bool] | None = None) -> str | None:
    """Why vLLM can't serve ``model_dir`` on this machine, or None when it can (``installed`` and
    ``gpu`` default to looking at this machine)."""
    installed, gpu = installed or vllm_installed, gpu or cuda_available
    folder = Path(model_dir)
    if not folder.is_dir():
        return (f"--engine vllm serves a model folder; {model_dir} is not one (a hub id works with "
                f"vLLM directly: python -m {VLLM_SERVER_MODULE} --model ID)")
    if (folder / "adapter_config.json").is_file() and not (folder / "config.json").is_file():
        return (f"{folder} is an adapter; merge it into its base first (studio model export {folder} merged/) "
                f"and serve merged/ with --engine vllm")
    if not (folder / "config.json").is_file():
        return f"{folder} holds no config.json, so vLLM can't load it"
    if not installed():
        return "--engine vllm needs the vllm package, which is not installed (pip install vllm)"
    if not gpu():
        return "--engine vllm needs a CUDA GPU and none is visible; serve without --engine to use the studio's server"
    return None


def vllm_command(model_dir: str | Path, host: str, port: int, name: str, trust_remote_code: bool = False,
                 python: str = sys.executable) -> list[str]:
    """The command line that starts vLLM's OpenAI server on ``model_dir`` under the model name ``name``."""
    command = [python, "-m", VLLM_SERVER_MODULE, "--model", str(model_dir), "--host", host, "--port", str(port),
               "--served-model-name", name]
    if trust_remote_code:
        command.append("--trust-remote-code")
    return command


def serve_with_vllm(model_dir: str | Path, host: str, port: int, name: str, api_key: str | None = None,
                    trust_remote_code: bool = False) -> int:
    """Run vLLM's server in a subprocess until it exits (or Ctrl-C); returns its exit status."""
    why = vllm_refusal(model_dir)
    if why is not None:
        raise VllmUnavailable(why)
    env = dict(os.environ)
    if api_key:
        env[VLLM_KEY_VARIABLE] = api_key
    process = subprocess.Popen(vllm_command(model_dir, host, port, name, trust_remote_code), env=env)
    try:
        return process.wait()
    except KeyboardInterrupt:
        process.terminate()
        try:
            return process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            return process.wait()
