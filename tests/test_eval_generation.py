"""Batched generation for evaluation: local models (greedy and seeded sampling, stop strings, end of
sequence, left padding and truncation) and OpenAI-compatible endpoints through the request engine."""
from __future__ import annotations

import functools
import threading
from types import SimpleNamespace

import pytest
import torch

from studio.evaluation.generation import (
    chat_prompt, cut_at_stop, encode_prompt, endpoint_chat, endpoint_generate, generate_texts, stop_token_ids,
)
from studio.evaluation.models import EndpointModel
from studio.models.embedded import build_embedded_model
from studio.models.loading import load_model
from studio.serving.scripted import ScriptedServer

PROMPTS = [
    "Question: Sam has 5 marbles. He wins 12 more. How many marbles does he have?\nAnswer:",
    "Hello",
    "The studio reads datasets in many formats, curates them and",
    "x",
    "Write a short greeting to a friend who has just moved to a new city far away from home.",
    "1 2 3 4 5",
]


@pytest.fixture(scope="module")
def untrained(tmp_path_factory):
    # Large random weights: every token depends strongly on what came before (a padding token seen by
    # mistake changes the answer), and the model practically never ends a text by itself, so the
    # token limit, stop strings and padding decide what comes out.
    folder = build_embedded_model(tmp_path_factory.mktemp("gen") / "untrained", pretrain_steps=0)
    model, tokenizer = load_model(str(folder))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() >= 2:
                parameter.normal_(0.0, 0.25, generator=generator)
    return model, tokenizer


def hf_greedy(model, tokenizer, prompts, max_new_tokens):
    """What lm-eval's HF back-end does: transformers' generate on a left-padded batch."""
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        batch = tokenizer(prompts, return_tensors="pt", padding="longest")
    finally:
        tokenizer.padding_side = side
    with torch.inference_mode():
        out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id)
    width = batch["input_ids"].shape[1]
    return [tokenizer.decode(row[width:], skip_special_tokens=True) for row in out.tolist()]


def test_batched_greedy_equals_one_at_a_time_and_transformers_generate(untrained):
    model, tokenizer = untrained
    batched = generate_texts(model, tokenizer, PROMPTS, until=[], max_new_tokens=20, batch_size=4)
    single = [generate_texts(model, tokenizer, [p], until=[], max_new_tokens=20, batch_size=1)[0] for p in PROMPTS]
    assert batched == single
    assert all(len(texts) == 1 and texts[0] for texts in batched)
    assert len({texts[0] for texts in batched}) > 1  # different prompts, different answers
    assert [texts[0] for texts in batched] == hf_greedy(model, tokenizer, PROMPTS, 20)


def test_greedy_n_repeats_the_one_answer(untrained):
    model, tokenizer = untrained
    out = generate_texts(model, tokenizer, PROMPTS[:2], until=[], max_new_tokens=8, n=3)
    assert [len(texts) for texts in out] == [3, 3] and all(len(set(texts)) == 1 for texts in out)


def test_stop_strings_cut_the_text_and_end_the_batch_early(untrained):
    model, tokenizer = untrained
    free = generate_texts(model, tokenizer, PROMPTS[:2], until=[], max_new_tokens=24)
    # A stop string from the middle of each free answer (its 4th to 6th characters).
    stops = [texts[0][3:6] for texts in free]
    calls = []
    original = model.forward

    @functools.wraps(original)
    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    model.forward = counted
    try:
        cut = generate_texts(model, tokenizer, PROMPTS[:2], until=stops, max_new_tokens=200)
    finally:
        del model.forward
    for texts, full in zip(cut, free):
        assert full[0].startswith(texts[0]) and not any(s in texts[0] for s in stops)
        assert texts[0] == cut_at_stop(full[0], stops)
    # Both rows met a stop within the first 24 tokens: the loop ended long before 200 steps.
    assert len(calls) <= 25


def test_left_truncation_keeps_the_end_of_a_long_prompt(untrained):
    model, tokenizer = untrained
    long_prompt = " ".join(f"word{i}" for i in range(400))
    saved = model.config.max_position_embeddings
    model.config.max_position_embeddings = 64
    try:
        out = generate_texts(model, tokenizer, [long_prompt], until=[], max_new_tokens=16)[0][0]
        # Asking for the whole context leaves half of it to the prompt.
        capped = generate_texts(model, tokenizer, [long_prompt], until=[], max_new_tokens=64)[0][0]
    finally:
        model.config.max_position_embeddings = saved
    kept = encode_prompt(tokenizer, long_prompt)[-(64 - 16):]
    with torch.inference_mode():
        reference = model.generate(torch.tensor([kept]), max_new_tokens=16, do_sample=False,
                                   pad_token_id=tokenizer.pad_token_id)
    assert out == tokenizer.decode(reference[0, len(kept):], skip_special_tokens=True)
    half = encode_prompt(tokenizer, long_prompt)[-32:]
    with torch.inference_mode():
        reference = model.generate(torch.tensor([half]), max_new_tokens=32, do_sample=False,
                                   pad_token_id=tokenizer.pad_token_id)
    assert capped == tokenizer.decode(reference[0, len(half):], skip_special_tokens=True)


def test_sampling_is_seeded_per_prompt_whatever_the_batch(untrained):
    model, tokenizer = untrained
    args = dict(until=[], max_new_tokens=12, temperature=1.0)
    together = generate_texts(model, tokenizer, PROMPTS[:3], n=3, seed=7, batch_size=4, **args)
    alone = generate_texts(model, tokenizer, [PROMPTS[1]], n=3, seed=7, batch_size=1, **args)
    assert together[1] == alone[0]
    assert len(set(together[0])) > 1  # three draws, not one repeated
    other_seed = generate_texts(model, tokenizer, [PROMPTS[1]], n=3, seed=8, **args)
    assert other_seed[0] != alone[0]


def test_prompt_tokens_follow_lm_eval(untrained):
    _, tokenizer = untrained
    ids = encode_prompt(tokenizer, "Question: hi")
    assert ids[0] == tokenizer.bos_token_id and ids.count(tokenizer.bos_token_id) == 1
    # A prompt that already starts with BOS (a chat template's output) gets no second one.
    templated = chat_prompt(tokenizer, [{"role": "user", "content": "hi"}])
    assert templated.startswith(tokenizer.bos_token) and templated.endswith("<|im_start|>assistant\n")
    assert encode_prompt(tokenizer, templated).count(tokenizer.bos_token_id) == 1


def test_chat_stops_at_the_end_of_turn_token_even_when_it_is_not_eos(untrained):
    model, tokenizer = untrained
    end_of_text = tokenizer.convert_tokens_to_ids("<|end_of_text|>")
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    prompt = chat_prompt(tokenizer, [{"role": "user", "content": "What is two plus two?"}])
    # The logits at position p choose the token at p + 1: the 4th generated token ends the turn.
    turn_ends_at = len(encode_prompt(tokenizer, prompt)) + 2

    calls = []

    def end_turn(module, args, kwargs, output):
        calls.append(1)
        if int(kwargs["position_ids"][0, -1]) == turn_ends_at:
            output.logits[:, -1, im_end] = 1e4
        return output

    saved = tokenizer.eos_token, model.generation_config.eos_token_id, model.config.eos_token_id
    hook = model.register_forward_hook(end_turn, with_kwargs=True)
    # A model whose end of sequence is <|end_of_text|>: only chat=True also stops at <|im_end|>.
    tokenizer.eos_token = "<|end_of_text|>"
    model.generation_config.eos_token_id = model.config.eos_token_id = end_of_text
    try:
        assert im_end not in stop_token_ids(model, tokenizer)
        assert im_end in stop_token_ids(model, tokenizer, chat=True)
        chat = generate_texts(model, tokenizer, [prompt], until=[], max_new_tokens=12, chat=True)[0][0]
        chat_calls = len(calls)
        plain = generate_texts(model, tokenizer, [prompt], until=[], max_new_tokens=12)[0][0]
        plain_calls = len(calls) - chat_calls
        first_three = generate_texts(model, tokenizer, [prompt], until=[], max_new_tokens=3)[0][0]
    finally:
        hook.remove()
        tokenizer.eos_token, model.generation_config.eos_token_id, model.config.eos_token_id = saved
    # Three tokens, then the turn ends (4 forward passes); without the end-of-turn stop the model
    # goes on past it.
    assert chat == first_three and plain.startswith(chat)
    assert chat_calls == 4 and plain_calls > 4


def test_cut_at_stop_takes_the_earliest_stop():
    assert cut_at_stop("a\nb#c\nd", ["\nd", "#"]) == "a\nb"
    assert cut_at_stop("abc", ["", "z"]) == "abc"


# --- endpoints --------------------------------------------------------------------------------


def responder(endpoint, body, choice):
    if endpoint == "chat":
        return f"reply {choice}: " + body["messages"][-1]["content"]
    return f" answer {choice} to [{body['prompt'][-6:]}]\nQuestion: more text"


def test_endpoint_generation_cuts_stops_and_the_journal_answers_repeats(tmp_path):
    bodies = []

    def recording(endpoint, body, choice):
        bodies.append(body)
        return responder(endpoint, body, choice)

    with ScriptedServer(responder=recording) as server:
        workspace = SimpleNamespace(root=tmp_path / "ws")
        model = EndpointModel(f"endpoint:{server.base_url}#scripted-model", workspace=workspace)
        seen = []
        out = model.generate(["one", "two"], until=["Question:"], max_new_tokens=16,
                             progress=lambda done, total: seen.append((done, total)))
        assert out == [[" answer 0 to [one]\n"], [" answer 0 to [two]\n"]]
        assert seen[-1] == (2, 2)
        assert len(server.answered()) == 2 and all(b["stop"] == ["Question:"] for b in bodies)
        # The same requests again (a resumed evaluation): answered from the workspace's journal.
        again = EndpointModel(f"endpoint:{server.base_url}#scripted-model", workspace=workspace)
        assert again.generate(["one", "two"], until=["Question:"], max_new_tokens=16) == out
        assert len(server.answered()) == 2
        assert (tmp_path / "ws" / "generation" / "journal.sqlite").is_file()


def test_endpoint_sampling_and_chat(tmp_path):
    with ScriptedServer(responder=responder) as server:
        model = EndpointModel(f"endpoint:{server.base_url}#scripted-model")
        out = endpoint_generate(model, ["p"], until=["\n"], max_new_tokens=8, n=3, temperature=0.8, seed=1)
        assert out == [[" answer 0 to [p]", " answer 1 to [p]", " answer 2 to [p]"]]
        replies = endpoint_chat(model, [[{"role": "user", "content": "hi"}], [{"role": "user", "content": "yo"}]],
                                max_new_tokens=8)
        assert replies == ["reply 0: hi", "reply 0: yo"]


def test_endpoint_failure_names_the_endpoint():
    with ScriptedServer(responder=responder) as server:
        model = EndpointModel(f"endpoint:{server.base_url}#scripted-model")
        model.provider = model.provider.model_copy(update={"max_retries": 0})
        with pytest.raises(RuntimeError, match=server.base_url):
            model.generate(["[[400]] bad"], until=[], max_new_tokens=4)


def test_studio_serve_gives_the_same_greedy_answers_as_the_local_model(untrained):
    from studio.serving.model_server import make_server

    model, tokenizer = untrained
    server = make_server(model, tokenizer, "untrained")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        remote = EndpointModel(f"endpoint:{server.base_url}#untrained")
        prompts = PROMPTS[:3]
        local = generate_texts(model, tokenizer, prompts, until=["e"], max_new_tokens=12, batch_size=3)
        assert remote.generate(prompts, until=["e"], max_new_tokens=12) == local
    finally:
        server.shutdown()
        server.server_close()
