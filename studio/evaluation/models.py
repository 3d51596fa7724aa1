"""The models an evaluation scores: anything the studio loads, or an OpenAI-compatible endpoint.

    open_model("embedded", workspace=ws)              # embedded, run id, run folder, HF folder, hub id
    open_model("endpoint:http://127.0.0.1:8000/v1#served-name")   # generative tasks only
    open_model("endpoint:myprovider", workspace=ws)   # a saved provider profile

``fingerprint`` names the exact weights (content hashes of the model files, the adapter's and its
base's), so cached per-item results are reused only for the same model.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Callable

ENDPOINT_PREFIX = "endpoint:"
# Files hashed in full up to this size; bigger ones by size plus their first and last blocks.
FULL_HASH_LIMIT = 64 * 1024 * 1024
EDGE_BLOCK = 4 * 1024 * 1024
Progress = Callable[[int, int], None]


def _file_digest(path: Path) -> str:
    size = path.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with path.open("rb") as fh:
        if size <= FULL_HASH_LIMIT:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        else:
            h.update(fh.read(EDGE_BLOCK))
            fh.seek(size - EDGE_BLOCK)
            h.update(fh.read(EDGE_BLOCK))
    return h.hexdigest()


def folder_fingerprint(folder: Path) -> str:
    """A hash of what defines the model in a folder: weights, configs and tokenizer files."""
    h = hashlib.sha256()
    for path in sorted(folder.iterdir()):
        if path.is_file() and (path.suffix in (".safetensors", ".bin", ".json", ".model", ".txt", ".jinja")):
            if path.name in ("trainer_state.json", "training_args.bin", "status.json"):
                continue
            h.update(path.name.encode())
            h.update(_file_digest(path).encode())
    return h.hexdigest()[:24]


class EvalModel:
    """One model under evaluation. Tasks call the three scoring methods; ``kind`` says which work."""

    kind = "local"

    def __init__(self, ref: str, label: str | None = None):
        self.ref = ref
        self.label = label or ref
        self.fingerprint = ""

    def describe(self) -> dict[str, Any]:
        return {"ref": self.ref, "label": self.label, "kind": self.kind, "fingerprint": self.fingerprint}

    def supports(self, use: str) -> bool:
        return True

    def loglikelihood(self, requests: list[tuple[str, str]], batch_size: int = 16,
                      progress: Progress | None = None) -> list[tuple[float, bool]]:
        """(sum of log P(continuation | context), whether the continuation is the greedy one)."""
        raise NotImplementedError

    def generate(self, prompts: list[str], *, until: list[str], max_new_tokens: int, batch_size: int = 16,
                 n: int = 1, temperature: float = 0.0, seed: int = 0,
                 progress: Progress | None = None) -> list[list[str]]:
        """n completions per plain-text prompt, each cut before the first stop string."""
        raise NotImplementedError

    def chat(self, conversations: list[list[dict[str, str]]], *, max_new_tokens: int, batch_size: int = 16,
             temperature: float = 0.0, seed: int = 0, progress: Progress | None = None) -> list[str]:
        """The next assistant message for each conversation (role/content dicts)."""
        raise NotImplementedError

    def close(self) -> None:
        pass


class LocalModel(EvalModel):
    """A model loaded in this process through the studio's one model resolver."""

    kind = "local"

    def __init__(self, ref: str, label: str | None = None, workspace: Any = None, trust_remote_code: bool = False,
                 device: str | None = None):
        from studio.models.loading import resolve_model_ref

        super().__init__(ref, label)
        self.workspace = workspace
        self.trust_remote_code = trust_remote_code
        self.device = device
        self.location = resolve_model_ref(ref, workspace=workspace)
        self.fingerprint = self._fingerprint()
        self._loaded: tuple[Any, Any] | None = None

    def _fingerprint(self) -> str:
        import json

        folder = Path(self.location)
        if not folder.is_dir():
            return "hub:" + self.location
        digest = folder_fingerprint(folder)
        adapter = folder / "adapter_config.json"
        if adapter.is_file():
            from studio.models.loading import resolve_model_ref

            base = json.loads(adapter.read_text(encoding="utf-8")).get("base_model_name_or_path") or ""
            base_location = Path(resolve_model_ref(base)) if base else None
            base_digest = folder_fingerprint(base_location) if base_location and base_location.is_dir() else base
            digest = hashlib.sha256(f"{digest}+{base_digest}".encode()).hexdigest()[:24]
        return digest

    @property
    def model(self):
        return self._load()[0]

    @property
    def tokenizer(self):
        return self._load()[1]

    def _load(self) -> tuple[Any, Any]:
        if self._loaded is None:
            from studio.models.loading import load_model

            self._loaded = load_model(self.location, trust_remote_code=self.trust_remote_code, device=self.device,
                                      workspace=self.workspace)
        return self._loaded

    def loglikelihood(self, requests, batch_size=16, progress=None):
        from studio.evaluation.loglikelihood import score_requests

        return score_requests(self.model, self.tokenizer, requests, batch_size=batch_size, progress=progress)

    def generate(self, prompts, *, until, max_new_tokens, batch_size=16, n=1, temperature=0.0, seed=0,
                 progress=None):
        from studio.evaluation.generation import generate_texts

        return generate_texts(self.model, self.tokenizer, prompts, until=until, max_new_tokens=max_new_tokens,
                              batch_size=batch_size, n=n, temperature=temperature, seed=seed, progress=progress)

    def chat(self, conversations, *, max_new_tokens, batch_size=16, temperature=0.0, seed=0, progress=None):
        from studio.evaluation.generation import chat_prompt, generate_texts

        prompts = [chat_prompt(self.tokenizer, conversation) for conversation in conversations]
        outs = generate_texts(self.model, self.tokenizer, prompts, until=[], max_new_tokens=max_new_tokens,
                              batch_size=batch_size, n=1, temperature=temperature, seed=seed, progress=progress,
                              chat=True)
        return [texts[0] for texts in outs]

    def close(self) -> None:
        self._loaded = None


class EndpointModel(EvalModel):
    """An OpenAI-compatible endpoint, for generative and judged tasks (no log-likelihoods)."""

    kind = "endpoint"

    def __init__(self, ref: str, label: str | None = None, workspace: Any = None):
        from studio.generation.provider import ProviderConfig, resolve_provider

        super().__init__(ref, label)
        spec = ref[len(ENDPOINT_PREFIX):]
        if spec.startswith(("http://", "https://")):
            url, _, model = spec.partition("#")
            self.provider = ProviderConfig(name="endpoint", base_url=url, model=model or "default")
        else:
            root = getattr(workspace, "root", None)
            self.provider = resolve_provider(spec, root)
        self.workspace = workspace
        self.fingerprint = "endpoint:" + hashlib.sha256(
            f"{self.provider.base_url}#{self.provider.model}".encode()).hexdigest()[:16]

    def supports(self, use: str) -> bool:
        return use != "loglikelihood"

    def generate(self, prompts, *, until, max_new_tokens, batch_size=16, n=1, temperature=0.0, seed=0,
                 progress=None):
        from studio.evaluation.generation import endpoint_generate

        return endpoint_generate(self, prompts, until=until, max_new_tokens=max_new_tokens, n=n,
                                 temperature=temperature, seed=seed, progress=progress)

    def chat(self, conversations, *, max_new_tokens, batch_size=16, temperature=0.0, seed=0, progress=None):
        from studio.evaluation.generation import endpoint_chat

        return endpoint_chat(self, conversations, max_new_tokens=max_new_tokens, temperature=temperature,
                             seed=seed, progress=progress)


def open_model(ref: str, label: str | None = None, workspace: Any = None, trust_remote_code: bool = False,
               device: str | None = None) -> EvalModel:
    if ref.startswith(ENDPOINT_PREFIX):
        return EndpointModel(ref, label, workspace)
    return LocalModel(ref, label, workspace, trust_remote_code=trust_remote_code, device=device)
