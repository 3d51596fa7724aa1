"""Chat templates for SFT: the ``chat_template`` option, the check that the template can mark
assistant tokens, and the preview of one record (which tokens carry loss).

No heavy imports at module level: the preflight checks run in the CLI/TUI process.
"""
from __future__ import annotations

from typing import Any

from studio.models.inspect import has_generation_marks, marked_chat_template

TEMPLATE_NAMES = ("chatml",)


def named_template(name: str) -> str:
    # The studio's ChatML: the embedded model's template, whose assistant content and closing
    # <|im_end|> sit inside {% generation %} marks.
    from studio.models.embedded import CHAT_TEMPLATE

    if name == "chatml":
        return CHAT_TEMPLATE
    raise ValueError(f"unknown chat template name {name!r}; names: {', '.join(TEMPLATE_NAMES)}")


def override_problems(option: str | None, assistant_only_loss: bool) -> list[str]:
    """Problems with ``config.chat_template`` that need no tokenizer."""
    if option is None or option in TEMPLATE_NAMES:
        return []
    if "{{" not in option and "{%" not in option:
        return [f"config.chat_template: {option[:40]!r} is neither a template name ({', '.join(TEMPLATE_NAMES)}) "
                "nor a Jinja template"]
    if assistant_only_loss and not has_generation_marks(option):
        return [no_marks_message("the chat_template given in the config")]
    return []


def no_marks_message(whose: str) -> str:
    return (f"config.assistant_only_loss: {whose} has no {{% generation %}} marks, so the assistant tokens cannot "
            "be told apart from the rest. Set config.chat_template: chatml (the studio's ChatML, marked), give a "
            "template with {% generation %}...{% endgeneration %} around each assistant reply and its end-of-turn "
            "token, or set config.assistant_only_loss: false (loss on every token; add config.completion_only_loss: "
            "true for loss on the last reply only, which works with any template)")


def prepare_template(tokenizer, config, model_ref: str) -> str:
    """Put the template training uses on ``tokenizer`` (it is saved with the result) and return its
    name: 'chatml', 'custom', 'model' or 'model, patched by trl'. Raises ValueError when
    assistant-only loss is asked for and the template cannot mark assistant tokens."""
    option = config.chat_template
    if option is not None:
        tokenizer.chat_template = named_template(option) if option in TEMPLATE_NAMES else option
        name = option if option in TEMPLATE_NAMES else "custom"
    else:
        if isinstance(tokenizer.chat_template, dict):
            tokenizer.chat_template = tokenizer.chat_template.get("default")
        if not tokenizer.chat_template:
            raise ValueError(f"config.chat_template: the tokenizer of {model_ref} has no chat template; set "
                             "config.chat_template: chatml (or a Jinja template)")
        name = "chatml" if tokenizer.chat_template == named_template("chatml") else "model"
    if config.assistant_only_loss and not has_generation_marks(tokenizer.chat_template):
        # trl knows marked versions of some popular templates (Qwen, Llama 3, Gemma, Phi...).
        patched = marked_chat_template(tokenizer)
        if not patched:
            whose = "the chat template given in the config" if option else f"the chat template of {model_ref}"
            raise ValueError(no_marks_message(whose))
        tokenizer.chat_template = patched
        name = "model, patched by trl"
    return name


def _prompt_length(tokenizer, messages: list[dict[str, str]]) -> int:
    """Tokens before the last assistant reply, as trl's completion-only loss counts them."""
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    prompt = tokenizer.apply_chat_template(messages[:last], tokenize=True, return_dict=True,
                                           add_generation_prompt=True)["input_ids"]
    full = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
    n = 0
    while n < min(len(prompt), len(full)) and prompt[n] == full[n]:
        n += 1
    return n


def preview_record(tokenizer, messages: list[dict[str, str]], config, template_name: str) -> dict[str, Any]:
    """The rendered record, cut into runs of tokens that do / do not carry loss."""
    marks = bool(config.assistant_only_loss)
    encoded = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True,
                                            return_assistant_tokens_mask=marks)
    ids = list(encoded["input_ids"])
    loss = list(encoded["assistant_masks"]) if marks else [1] * len(ids)
    if config.completion_only_loss:
        start = _prompt_length(tokenizer, messages)
        loss = [bit if i >= start else 0 for i, bit in enumerate(loss)]
    if loss:
        loss[0] = 0  # nothing comes before the first token to predict it from
    segments: list[dict[str, Any]] = []
    start = 0
    for i in range(1, len(ids) + 1):
        if i == len(ids) or bool(loss[i]) != bool(loss[start]):
            text = tokenizer.decode(ids[start:i], skip_special_tokens=False, clean_up_tokenization_spaces=False)
            segments.append({"text": text, "loss": bool(loss[start])})
            start = i
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    return {"text": text, "segments": segments, "tokens": len(ids),
            "loss_tokens": sum(1 for bit in loss if bit), "template": template_name}
