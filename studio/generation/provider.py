"""Where generation requests go: an OpenAI-compatible endpoint, its limits and its prices.

The API key is never part of a provider: ``api_key_env`` names the environment variable that
holds it, so recipes, run folders, logs and datasets can't leak it. A provider with no
``base_url`` is the embedded default: the studio serves its own model on loopback.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

EMBEDDED = "embedded"
PROVIDERS_FILE = "providers.yaml"


class Price(BaseModel):
    model_config = ConfigDict(extra="forbid")
    input: float = Field(0.0, ge=0, description="price per 1M prompt tokens")
    output: float = Field(0.0, ge=0, description="price per 1M completion tokens")


class ProviderConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(EMBEDDED, description="name of this provider profile")
    base_url: str | None = Field(None, description="OpenAI-compatible base URL (…/v1); empty = the embedded local model")
    model: str = Field(EMBEDDED, description="model name sent with each request")
    api_key_env: str | None = Field(None, description="environment variable holding the API key (the key is never stored)")
    headers: dict[str, str] = Field(default_factory=dict, description="extra HTTP headers")
    prices: dict[str, Price] = Field(default_factory=dict, description="per-model prices per 1M tokens")
    concurrency: int = Field(8, ge=1, le=1024, description="the most requests in flight at once (from 8, it grows "
                             "to this or to just under the server's first 429)")
    rpm: int | None = Field(None, ge=1, description="requests per minute limit (token bucket)")
    tpm: int | None = Field(None, ge=1, description="tokens per minute limit (prompt + max completion)")
    timeout: float = Field(120.0, gt=0, description="seconds per request before it is retried")
    max_retries: int = Field(6, ge=0, le=50, description="retries for 429, 5xx, timeouts and broken responses")
    serve_model: str = Field(EMBEDDED, description="what the embedded endpoint serves (model path or id) when base_url is empty")

    @model_validator(mode="before")
    @classmethod
    def _no_inline_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key in data:
                if str(key).lower().replace("-", "_") in ("api_key", "key", "token", "secret", "authorization"):
                    raise ValueError(f"{key!r}: API keys are never stored; put the key in an environment "
                                     f"variable and name it with api_key_env")
        return data

    @field_validator("headers")
    @classmethod
    def _no_auth_header(cls, headers: dict[str, str]) -> dict[str, str]:
        for name in headers:
            if name.lower() in ("authorization", "api-key", "x-api-key"):
                raise ValueError(f"header {name!r} would store a key; use api_key_env instead")
        return headers

    @property
    def embedded(self) -> bool:
        return not self.base_url

    def api_key(self) -> str:
        if not self.api_key_env:
            return "unused"  # the openai client insists on some key; local servers ignore it
        value = os.environ.get(self.api_key_env)
        if not value:
            raise ValueError(f"provider {self.name!r}: environment variable {self.api_key_env} is not set")
        return value

    def price(self, model: str | None = None) -> Price | None:
        return self.prices.get(model or self.model)

    def cost(self, prompt_tokens: int, completion_tokens: int, model: str | None = None) -> float:
        price = self.price(model)
        if price is None:
            return 0.0
        return (prompt_tokens * price.input + completion_tokens * price.output) / 1_000_000


def load_providers(workspace_root: Path | None) -> dict[str, ProviderConfig]:
    """The workspace's saved provider profiles plus the embedded default."""
    import yaml

    providers = {EMBEDDED: ProviderConfig()}
    if workspace_root is not None and (workspace_root / PROVIDERS_FILE).is_file():
        data = yaml.safe_load((workspace_root / PROVIDERS_FILE).read_text()) or {}
        for name, body in (data.get("providers") or {}).items():
            providers[name] = ProviderConfig(**{**body, "name": name})
    return providers


def save_provider(workspace_root: Path, provider: ProviderConfig) -> None:
    import yaml

    path = workspace_root / PROVIDERS_FILE
    data = (yaml.safe_load(path.read_text()) if path.is_file() else None) or {}
    data.setdefault("providers", {})[provider.name] = provider.model_dump(exclude={"name"}, exclude_defaults=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(data, sort_keys=False))
    tmp.replace(path)


def resolve_provider(spec: str | dict | ProviderConfig | None, workspace_root: Path | None) -> ProviderConfig:
    """A provider from a recipe: a saved profile name, an inline mapping, or nothing (embedded)."""
    if isinstance(spec, ProviderConfig):
        return spec
    if spec is None or spec == "":
        return ProviderConfig()
    if isinstance(spec, dict):
        base = spec.get("use")
        if base:
            known = load_providers(workspace_root)
            if base not in known:
                raise ValueError(f"unknown provider {base!r}; saved providers: {', '.join(sorted(known))}")
            merged = {**known[base].model_dump(), **{k: v for k, v in spec.items() if k != "use"}}
            return ProviderConfig(**merged)
        return ProviderConfig(**spec)
    known = load_providers(workspace_root)
    if spec not in known:
        raise ValueError(f"unknown provider {spec!r}; saved providers: {', '.join(sorted(known))} "
                         f"(add one with `studio providers add`)")
    return known[spec]
