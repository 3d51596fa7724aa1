"""`/v1/completions` with ``echo`` and ``logprobs``: the protocol lm-eval's ``local-completions`` speaks.

A real server on 127.0.0.1 (in this process, so the test can run the same model directly) serving a
tiny embedded model with random weights; every log-probability it reports is checked against a plain
forward pass of that model."""
from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")
openai = pytest.importorskip("openai")

from studio.evaluation.loglikelihood import encode_requests, score_requests  # noqa: E402
from studio.models.embedded import build_embedded_model  # noqa: E402
from studio.models.loading import load_model  # noqa: E402
from studio.serving.model_server import make_server  # noqa: E402
from studio.serving.token_logprobs import (FLOOR_LOGPROB, TokenScore, char_offsets, join_logprobs,  # noqa: E402
                                           legacy_logprobs)

TOLERANCE = 1e-4
PAIRS = [("Question: What do plants need to grow?\nAnswer:", " sunlight and water"),
         ("The capital of France is", " Paris"),
         ("Once", " upon a time, there was a cat who liked to sleep in the sun all day long.")]


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    folder = build_embedded_model(tmp_path_factory.mktemp("serve-logprobs") / "tiny", pretrain_steps=0)
    model, tokenizer = load_model(str(folder))
    return model, tokenizer


def running(model, tokenizer, name: str = "tiny", api_key: str | None = None):
    server = make_server(model, tokenizer, name, api_key=api_key)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, thread


@pytest.fixture(scope="module")
def server(loaded):
    server, thread = running(*loaded)
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def post(server, body: dict | None, path: str = "/v1/completions") -> tuple[int, dict]:
    """POST ``body`` (GET when None) to ``path`` on the server; (status, JSON answer)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(server.base_url.removesuffix("/v1") + path, data=data,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def complete(server, **body) -> dict:
    status, reply = post(server, {"model": "tiny", "temperature": 0, **body})
    assert status == 200, reply
    return reply


def encode(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def direct_logprobs(model, ids: list[int]) -> torch.Tensor:
    """log p(token i | tokens before it) for i >= 1, from one unpadded forward of the model."""
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([ids])).logits[0].float()
    return torch.log_softmax(logits[:-1], dim=-1)


def lm_eval_reading(choice: dict, ctxlen: int) -> tuple[float, bool]:
    """What lm-eval's local-completions makes of a choice: the continuation's entries are [ctxlen:-1]."""
    values = choice["logprobs"]["token_logprobs"][ctxlen:-1]
    tops = choice["logprobs"]["top_logprobs"][ctxlen:-1]
    return sum(values), all(value == max(top.values()) for value, top in zip(values, tops))


# --- echo of token-id prompts: lm-eval's loglikelihood requests ----------------------------------


def test_echoed_token_prompts_score_like_a_forward_pass(server, loaded):
    model, tokenizer = loaded
    requests = [(encode(tokenizer, c), encode(tokenizer, x)) for c, x in PAIRS]
    prompts = [context + continuation for context, continuation in requests]
    # One request with every prompt (padded into one batch), as lm-eval sends with batch_size > 1.
    reply = complete(server, prompt=prompts, echo=True, logprobs=1, max_tokens=1)
    assert [c["index"] for c in reply["choices"]] == [0, 1, 2]
    for (context, continuation), ids, choice in zip(requests, prompts, reply["choices"]):
        logprobs = choice["logprobs"]
        assert len(logprobs["tokens"]) == len(logprobs["token_logprobs"]) == len(ids) + 1
        assert logprobs["token_logprobs"][0] is None and logprobs["top_logprobs"][0] is None
        expected = direct_logprobs(model, ids)
        wanted = expected.gather(1, torch.tensor(ids[1:])[:, None])[:, 0]
        got = torch.tensor(logprobs["token_logprobs"][1:len(ids)])
        assert torch.allclose(got, wanted, atol=TOLERANCE, rtol=0)
        # The continuation's log-likelihood and greediness, read the way lm-eval reads them.
        total, greedy = lm_eval_reading(choice, len(context))
        assert abs(total - float(wanted[len(context) - 1:].sum())) < TOLERANCE * len(continuation)
        argmax = expected.argmax(dim=-1)[len(context) - 1:]
        assert greedy == bool((argmax == torch.tensor(continuation)).all())
        # top_logprobs holds the most likely token at every position, and the token itself.
        for position in range(1, len(ids)):
            top = logprobs["top_logprobs"][position]
            assert max(top.values()) == pytest.approx(float(expected[position - 1].max()), abs=TOLERANCE)
            assert top[logprobs["tokens"][position]] == logprobs["token_logprobs"][position]


def test_echo_gives_what_the_studio_log_likelihood_scorer_gives(server, loaded):
    # lm-eval's tokenisation of each (context, continuation), sent as token ids: the server's answer
    # read the way lm-eval reads it equals the studio's own scorer's (the one evaluations use).
    model, tokenizer = loaded
    pairs = encode_requests(tokenizer, PAIRS)
    reply = complete(server, prompt=[context + continuation for context, continuation in pairs], echo=True,
                     logprobs=1, max_tokens=1)
    served = [lm_eval_reading(choice, len(context)) for choice, (context, _) in zip(reply["choices"], pairs)]
    for (total, greedy), (expected, expected_greedy) in zip(served, score_requests(model, tokenizer, PAIRS)):
        assert abs(total - expected) < TOLERANCE and greedy == expected_greedy


def greedy_ids(model, ids: list[int], count: int) -> list[int]:
    """The model's own greedy continuation, one full forward per token."""
    out = list(ids)
    with torch.inference_mode():
        for _ in range(count):
            out.append(int(model(input_ids=torch.tensor([out])).logits[0, -1].argmax()))
    return out[len(ids):]


def test_a_greedy_continuation_is_recognised_as_greedy(server, loaded):
    model, tokenizer = loaded
    context = encode(tokenizer, "Question: which is larger, 3 or 7?\nAnswer:")
    continuation = greedy_ids(model, context, 3)
    reply = complete(server, prompt=[context + continuation, context + continuation[:2] + [continuation[0] + 1]],
                     echo=True, logprobs=1, max_tokens=1)
    assert lm_eval_reading(reply["choices"][0], len(context))[1] is True
    assert lm_eval_reading(reply["choices"][1], len(context))[1] is False


def test_max_tokens_zero_with_echo_scores_the_prompt_only(server, loaded):
    _, tokenizer = loaded
    ids = encode(tokenizer, "The capital of France is Paris")
    only = complete(server, prompt=ids, echo=True, logprobs=2, max_tokens=0)
    one = complete(server, prompt=ids, echo=True, logprobs=2, max_tokens=1)
    choice = only["choices"][0]
    assert choice["text"] == tokenizer.decode(ids) and choice["finish_reason"] == "length"
    assert len(choice["logprobs"]["tokens"]) == len(ids)
    assert choice["logprobs"]["token_logprobs"] == one["choices"][0]["logprobs"]["token_logprobs"][:len(ids)]
    assert only["usage"] == {"prompt_tokens": len(ids), "completion_tokens": 0, "total_tokens": len(ids)}
    status, body = post(server, {"model": "tiny", "prompt": ids, "max_tokens": 0})
    assert status == 400 and body["error"]["param"] == "max_tokens" and "echo" in body["error"]["message"]


# --- string prompts, lists, generated tokens -------------------------------------------------------


def test_string_prompts_echo_their_text_and_offsets_point_into_it(server, loaded):
    model, tokenizer = loaded
    prompts = ["Hello there, general", "A short one"]
    reply = complete(server, prompt=prompts, echo=True, logprobs=0, max_tokens=4, n=2)
    assert len(reply["choices"]) == 4
    for i, choice in enumerate(reply["choices"]):
        prompt = prompts[i // 2]
        ids = tokenizer(prompt)["input_ids"]  # as the server tokenizes a string: with the BOS token
        text, logprobs = choice["text"], choice["logprobs"]
        assert text.startswith(prompt)
        assert len(logprobs["tokens"]) == len(ids) + 4
        # Every token's text sits at its offset (the BOS token has no text in the echo).
        assert logprobs["text_offset"][0] == logprobs["text_offset"][1] == 0
        for token, offset in list(zip(logprobs["tokens"], logprobs["text_offset"]))[1:]:
            assert text[offset:offset + len(token)] == token
        # logprobs 0: no alternatives, only the token itself.
        assert all(list(top) == [token] for token, top in zip(logprobs["tokens"][1:], logprobs["top_logprobs"][1:]))
        expected = direct_logprobs(model, ids).gather(1, torch.tensor(ids[1:])[:, None])[:, 0]
        assert torch.allclose(torch.tensor(logprobs["token_logprobs"][1:len(ids)]), expected, atol=TOLERANCE, rtol=0)
    assert reply["choices"][0]["text"] == reply["choices"][1]["text"]  # greedy: both choices agree
    assert reply["usage"]["prompt_tokens"] == sum(len(tokenizer(p)["input_ids"]) for p in prompts)


def test_generated_tokens_carry_their_logprobs_without_echo(server, loaded):
    model, tokenizer = loaded
    prompt = encode(tokenizer, "Tell me a story about")
    choice = complete(server, prompt=prompt, logprobs=3, max_tokens=6)["choices"][0]
    logprobs = choice["logprobs"]
    assert len(logprobs["tokens"]) == 6 and logprobs["text_offset"][0] == 0
    assert "".join(logprobs["tokens"]) == choice["text"]
    for value, top in zip(logprobs["token_logprobs"], logprobs["top_logprobs"]):
        assert 3 <= len(top) <= 4 and value == max(top.values())  # greedy: the token is the top one
    # The model's greedy tokens, with the values of a forward pass over the prompt and them.
    generated = greedy_ids(model, prompt, 6)
    assert logprobs["tokens"] == [tokenizer.decode([token]) for token in generated]
    ids = prompt + generated
    expected = direct_logprobs(model, ids).gather(1, torch.tensor(ids[1:])[:, None])[:, 0][len(prompt) - 1:]
    assert torch.allclose(torch.tensor(logprobs["token_logprobs"]), expected, atol=TOLERANCE, rtol=0)


def test_a_stop_string_leaves_out_the_tokens_it_cut(server, loaded):
    _, tokenizer = loaded
    # Seeded sampling: the same tokens every time, and less repetitive than a random model's greedy text.
    ask = {"prompt": encode(tokenizer, "The weather today"), "logprobs": 0, "max_tokens": 12, "temperature": 1.0,
           "seed": 5}
    full = complete(server, **ask)["choices"][0]
    text, tokens, offsets = full["text"], full["logprobs"]["tokens"], full["logprobs"]["text_offset"]
    # Stop at the start of a token's text, on a piece that occurs nowhere earlier.
    cut_token = next(j for j in range(1, len(tokens)) if 0 < offsets[j] < len(text) - 1
                     and text.find(text[offsets[j]:offsets[j] + 2]) == offsets[j])
    cut = offsets[cut_token]
    stopped = complete(server, **ask, stop=[text[cut:cut + 2]])["choices"][0]
    assert stopped["text"] == text[:cut] and stopped["finish_reason"] == "stop"
    assert stopped["logprobs"]["tokens"] == tokens[:cut_token]


def stream(server, body: dict) -> list[dict]:
    """The chunks of a streamed completion, [DONE] checked and left out."""
    request = urllib.request.Request(server.base_url + "/completions", headers={"Content-Type": "application/json"},
                                     data=json.dumps({"model": "tiny", **body, "stream": True}).encode())
    with urllib.request.urlopen(request, timeout=60) as response:
        events = [line[len("data: "):] for line in response.read().decode().splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    return [json.loads(event) for event in events[:-1]]


def test_a_stream_adds_up_to_the_whole_answer_with_its_logprobs(server, loaded):
    _, tokenizer = loaded
    ids = encode(tokenizer, "The weather today")
    ask = {"prompt": ids, "echo": True, "logprobs": 2, "max_tokens": 12, "temperature": 1.0, "seed": 5}
    whole = complete(server, **ask)["choices"][0]
    # Also cut by a stop string: held-back text and the tokens it cuts must not reach the stream.
    offsets = whole["logprobs"]["text_offset"]
    cut = offsets[len(ids) + 4]
    stop = whole["text"][cut:cut + 2]
    for extra in ({}, {"stop": [stop]}):
        plain = complete(server, **ask, **extra)["choices"][0]
        chunks = [chunk["choices"][0] for chunk in stream(server, {**ask, **extra})]
        assert chunks[0]["text"] == tokenizer.decode(ids)  # the echo comes first
        assert "".join(c["text"] for c in chunks) == plain["text"]
        assert join_logprobs([c["logprobs"] for c in chunks if c["logprobs"]]) == plain["logprobs"]
        assert chunks[-1]["finish_reason"] == plain["finish_reason"]
        assert [c["finish_reason"] for c in chunks[:-1]] == [None] * (len(chunks) - 1)
    assert len(plain["text"]) < len(whole["text"]) and plain["finish_reason"] == "stop"


def test_the_openai_client_reads_the_logprobs_object(server, loaded):
    _, tokenizer = loaded
    # Not the strict client: its types say float where the API (OpenAI's legacy one, vLLM, this
    # server) sends null for a prompt's first token, which nothing predicts.
    client = openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0)
    ids = encode(tokenizer, "The capital of France is Paris")
    reply = client.completions.create(model="tiny", prompt=[ids], echo=True, logprobs=1, max_tokens=1, temperature=0)
    logprobs = reply.choices[0].logprobs
    assert len(logprobs.tokens) == len(logprobs.text_offset) == len(ids) + 1
    assert logprobs.token_logprobs[0] is None and isinstance(logprobs.top_logprobs[1], dict)


# --- refusals --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("change", "param"), [
    ({"logprobs": -1}, "logprobs"),
    ({"logprobs": 21}, "logprobs"),
    ({"logprobs": True}, "logprobs"),
    ({"logprobs": "1"}, "logprobs"),
    ({"logprobs": 1.5}, "logprobs"),
    ({"echo": "yes"}, "echo"),
    ({"prompt": []}, "prompt"),
    ({"prompt": [[]]}, "prompt"),
    ({"prompt": [1, "a"]}, "prompt"),
    ({"prompt": [[1, 2], 3]}, "prompt"),
    ({"prompt": [1, True]}, "prompt"),
    ({"prompt": [[5, 10 ** 9]]}, "prompt"),
    ({"prompt": [-1]}, "prompt"),
    ({"max_tokens": -1}, "max_tokens"),
])
def test_bad_values_are_refused_naming_the_parameter(server, change, param):
    body = {"model": "tiny", "prompt": [5, 6, 7], "echo": True, "logprobs": 1, "max_tokens": 1, **change}
    status, reply = post(server, body)
    assert status == 400, reply
    assert set(reply["error"]) == {"message", "type", "param", "code"}
    assert reply["error"]["type"] == "invalid_request_error" and reply["error"]["param"] == param


# --- the end-of-text token stays in the answer's tokens --------------------------------------------


class AlwaysEnds(torch.nn.Module):
    """A model whose most likely next token is always ``end`` (and that takes padded batches)."""

    def __init__(self, vocab: int, end: int):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.vocab, self.end = vocab, end
        self.config = SimpleNamespace(max_position_embeddings=64, vocab_size=vocab)
        self.generation_config = SimpleNamespace(eos_token_id=end)

    def forward(self, input_ids, attention_mask=None, past_key_values=None, use_cache=False):
        logits = torch.linspace(0, 1, self.vocab).repeat(*input_ids.shape, 1)
        logits[..., self.end] = 5.0
        return SimpleNamespace(logits=logits, past_key_values=None)


def test_an_end_of_text_token_is_scored_so_lm_eval_offsets_stay_right(loaded):
    # lm-eval drops the last entry of every answer as the generated token: if the model's pick is
    # the end of text, that entry must still be there or the continuation loses its last token.
    _, tokenizer = loaded
    server, thread = running(AlwaysEnds(len(tokenizer), tokenizer.eos_token_id), tokenizer, "ends")
    try:
        ids = encode(tokenizer, "a b c")
        status, reply = post(server, {"model": "ends", "prompt": ids, "echo": True, "logprobs": 1, "max_tokens": 1,
                                      "temperature": 0})
        assert status == 200
        choice = reply["choices"][0]
        assert choice["finish_reason"] == "stop" and choice["text"] == tokenizer.decode(ids)
        assert len(choice["logprobs"]["tokens"]) == len(ids) + 1
        assert choice["logprobs"]["tokens"][-1] == tokenizer.decode([tokenizer.eos_token_id])
        assert choice["logprobs"]["text_offset"][-1] == len(choice["text"])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


# --- the logprobs object itself --------------------------------------------------------------------


def test_offsets_of_a_split_character_point_at_its_start(loaded):
    _, tokenizer = loaded
    ids = encode(tokenizer, "ok 🙂 yes")
    text = tokenizer.decode(ids)
    offsets = char_offsets(lambda part: tokenizer.decode(part, skip_special_tokens=True), ids)
    emoji = text.index("🙂")
    pieces = [i for i, token in enumerate(ids) if "\ufffd" in tokenizer.decode([token])]
    assert len(pieces) >= 2 and all(offsets[i] == emoji for i in pieces)
    # Whole tokens sit at their offsets, and the one after the character starts right after it.
    for token, offset in zip(ids, offsets):
        if "\ufffd" not in tokenizer.decode([token]):
            assert text[offset:].startswith(tokenizer.decode([token]))
    assert offsets[pieces[-1] + 1] == emoji + 1
    # The offsets of a tail (a completion after its prompt), counted from where it starts, are the whole's.
    assert char_offsets(lambda part: tokenizer.decode(part), ids, start=4, base=offsets[4]) == offsets[4:]


def test_the_legacy_object_keeps_the_likelier_of_two_same_text_tokens_and_has_no_infinity():
    text = {1: "a", 2: "a", 3: "b"}.__getitem__
    scores = [TokenScore(3, None), TokenScore(2, -2.0, [(1, -0.5), (2, -2.0)]),
              TokenScore(3, float("-inf"), [(1, -0.1)])]
    built = legacy_logprobs(text, scores, [0, 1, 2])
    assert built["tokens"] == ["b", "a", "b"]
    assert built["token_logprobs"] == [None, -2.0, FLOOR_LOGPROB]
    assert built["top_logprobs"] == [None, {"a": -0.5}, {"a": -0.1, "b": FLOOR_LOGPROB}]
    json.dumps(built, allow_nan=False)
    with pytest.raises(ValueError):
        legacy_logprobs(text, scores, [0, 1])


# --- vLLM's tokenizer endpoints, which lm-eval's local-completions looks for -----------------------


def test_tokenizer_endpoints_answer_as_lm_eval_s_remote_tokenizer_expects(server, loaded):
    _, tokenizer = loaded
    status, info = post(server, None, "/tokenizer_info")
    assert status == 200 and info["eos_token"] == tokenizer.eos_token and info["bos_token"] == tokenizer.bos_token
    assert info["chat_template"] == tokenizer.chat_template
    text = "Question: why is the sky blue?"
    status, plain = post(server, {"prompt": text, "add_special_tokens": False}, "/tokenize")
    assert status == 200 and plain["tokens"] == encode(tokenizer, text) and plain["count"] == len(plain["tokens"])
    _, special = post(server, {"prompt": text}, "/tokenize")
    assert special["tokens"] == tokenizer(text)["input_ids"] != plain["tokens"]  # the BOS token, by default
    # lm-eval finds the end-of-text token's id by tokenizing its text.
    _, eos = post(server, {"prompt": info["eos_token"], "add_special_tokens": False}, "/tokenize")
    assert eos["tokens"] == [tokenizer.eos_token_id]
    status, back = post(server, {"tokens": plain["tokens"]}, "/detokenize")
    assert status == 200 and back["prompt"] == text
    for path, body, param in [("/tokenize", {"prompt": 5}, "prompt"),
                              ("/tokenize", {"prompt": "x", "add_special_tokens": "no"}, "add_special_tokens"),
                              ("/detokenize", {"tokens": [1, 10 ** 9]}, "tokens")]:
        status, reply = post(server, body, path)
        assert status == 400 and reply["error"]["param"] == param


def test_tokenizer_endpoints_need_the_key_when_there_is_one(loaded):
    server, thread = running(*loaded, api_key="sk-tokenizer-test")
    try:
        assert post(server, {"prompt": "hi"}, "/tokenize")[0] == 401
        assert post(server, None, "/tokenizer_info")[0] == 401
        assert post(server, None, "/health")[0] == 200
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
