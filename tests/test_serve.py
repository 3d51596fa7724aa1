"""`studio serve`: the OpenAI-compatible server, checked with the real openai client (strict
response validation) against a real subprocess serving a tiny embedded model, plus the token loop
itself on a scripted model."""
from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")
openai = pytest.importorskip("openai")

from studio.models.embedded import END_OF_TEXT, IM_END, build_embedded_model  # noqa: E402
from studio.serving.launch import ServerStartError, start_background_server  # noqa: E402
from studio.serving.model_server import Choice, Engine, Sampling  # noqa: E402

# Tests that talk to a real `studio serve` subprocess: starting one (torch, transformers, the model)
# takes several seconds, shared by the tests of this module.
needs_server = pytest.mark.slow


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    # Random weights: the model practically never emits an end-of-turn, so max_tokens decides the
    # length and the protocol checks below are deterministic.
    return build_embedded_model(tmp_path_factory.mktemp("serve") / "tiny-serve", pretrain_steps=0)


@pytest.fixture(scope="module")
def server(model_dir):
    with start_background_server(str(model_dir)) as running:
        yield running


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0,
                         _strict_response_validation=True)


def raw_request(server, path: str, data: bytes | None = None, headers: dict | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(server.base_url.removesuffix("/v1") + path, data=data,
                                     headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


# --- the token loop on a scripted model ---------------------------------------------------------


class ScriptedModel(torch.nn.Module):
    """Emits ``script`` token by token (one-hot logits); the 'cache' is just the step number."""

    def __init__(self, script: list[int], vocab: int, stops: list[int]):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.script, self.vocab = script, vocab
        self.config = SimpleNamespace(max_position_embeddings=64)
        self.generation_config = SimpleNamespace(eos_token_id=stops)

    def forward(self, input_ids, past_key_values=None, use_cache=True):
        step = 0 if past_key_values is None else past_key_values + 1
        logits = torch.full((1, input_ids.shape[1], self.vocab), -1e9)
        logits[0, -1, self.script[min(step, len(self.script) - 1)]] = 0.0
        return SimpleNamespace(logits=logits, past_key_values=step)


@pytest.fixture(scope="module")
def tokenizer(model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


def run_engine(tokenizer, text_tokens: list[int], tail: list[int], stop: list[str] | None = None,
               max_new: int = 50) -> tuple[Choice, list[str]]:
    stops = [tokenizer.convert_tokens_to_ids(IM_END), tokenizer.convert_tokens_to_ids(END_OF_TEXT)]
    engine = Engine(ScriptedModel(text_tokens + tail, len(tokenizer), stops), tokenizer, "scripted")
    sampling = Sampling(max_tokens=None, temperature=0.0, top_p=1.0, n=1, stop=stop or [], seed=None)
    choice = Choice()
    deltas = list(engine.generate([tokenizer.bos_token_id], sampling, max_new, None, choice))
    return choice, deltas


def test_token_loop_stops_at_end_of_turn_and_at_the_limit(tokenizer):
    words = tokenizer("Hello there, friend", add_special_tokens=False)["input_ids"]
    end_of_turn = tokenizer.convert_tokens_to_ids(IM_END)
    choice, deltas = run_engine(tokenizer, words, [end_of_turn, *words])
    assert (choice.text, choice.finish_reason, choice.tokens) == ("Hello there, friend", "stop", len(words) + 1)
    assert "".join(deltas) == choice.text
    choice, _ = run_engine(tokenizer, words, [tokenizer.convert_tokens_to_ids(END_OF_TEXT)])
    assert choice.finish_reason == "stop"
    choice, _ = run_engine(tokenizer, words, [end_of_turn], max_new=2)
    assert choice.finish_reason == "length" and choice.tokens == 2
    assert choice.text == tokenizer.decode(words[:2])


def test_stop_strings_are_cut_and_never_streamed(tokenizer):
    words = tokenizer("alpha beta END gamma", add_special_tokens=False)["input_ids"]
    choice, deltas = run_engine(tokenizer, words, [tokenizer.convert_tokens_to_ids(IM_END)], stop=[" END", "zzz"])
    assert (choice.text, choice.finish_reason) == ("alpha beta", "stop")
    assert "".join(deltas) == "alpha beta" and not any("END" in d for d in deltas)
    # A held-back prefix of a stop string that never completes is released at the end.
    words = tokenizer("one two EN", add_special_tokens=False)["input_ids"]
    choice, deltas = run_engine(tokenizer, words, [tokenizer.convert_tokens_to_ids(IM_END)], stop=[" END"])
    assert choice.text == "".join(deltas) == "one two EN"


def test_multibyte_characters_are_not_split_in_a_stream(tokenizer):
    # Byte-level tokens of an emoji: single bytes decode to U+FFFD until the character completes.
    pieces = [tokenizer.convert_tokens_to_ids(t) for t in tokenizer.tokenize("🙂")]
    words = tokenizer("smile ", add_special_tokens=False)["input_ids"] + pieces
    choice, deltas = run_engine(tokenizer, words, [tokenizer.convert_tokens_to_ids(IM_END)])
    assert choice.text == "smile 🙂" and not any("\ufffd" in d for d in deltas)


# --- structured outputs (response_format with a JSON schema) --------------------------------------

VERDICT = {"type": "json_schema", "json_schema": {"name": "verdict", "strict": True, "schema": {
    "type": "object", "additionalProperties": False, "required": ["score", "label", "ok", "why", "extra"],
    "properties": {"score": {"type": "integer", "minimum": 1, "maximum": 10},
                   "label": {"enum": ["good", "bad", None]}, "ok": {"type": "boolean"},
                   "why": {"type": "string", "maxLength": 40, "description": "one sentence"},
                   "extra": {"type": "object", "properties": {"n": {"type": "number", "minimum": 0, "maximum": 3}}}}}}}


def check_verdict(text: str) -> dict:
    data = json.loads(text)
    assert list(data) == ["score", "label", "ok", "why", "extra"] and list(data["extra"]) == ["n"]
    assert data["score"] in range(1, 11) and data["label"] in ("good", "bad", None)
    assert isinstance(data["ok"], bool) and isinstance(data["why"], str) and len(data["why"]) <= 40
    assert data["extra"]["n"] in range(0, 4)
    return data


def test_response_format_plans_and_refusals():
    from studio.serving.structured import Fixed, FreeString, OneOf, SchemaError, plan_for

    assert plan_for(None) is None and plan_for({"type": "text"}) is None
    schema = {"type": "object", "properties": {"a": {"type": "integer", "minimum": 1, "maximum": 3},
                                               "b": {"type": "string"}}}
    assert plan_for({"type": "json_schema", "json_schema": {"schema": schema}}) == [
        Fixed('{"a": '), OneOf(['1, "b": "', '2, "b": "', '3, "b": "']), FreeString(None), Fixed('"}')]
    refused = {
        "json_object": {"type": "json_object"},
        "root must be an object": {"type": "json_schema", "json_schema": {"schema": {"type": "string"}}},
        "schema.tags: type 'array'": {"type": "json_schema", "json_schema": {"schema": {
            "type": "object", "properties": {"tags": {"type": "array", "items": {"type": "string"}}}}}},
        "schema.name: pattern can't be enforced": {"type": "json_schema", "json_schema": {"schema": {
            "type": "object", "properties": {"name": {"type": "string", "pattern": "^a"}}}}},
        "schema.n: an integer needs a whole minimum and maximum": {"type": "json_schema", "json_schema": {
            "schema": {"type": "object", "properties": {"n": {"type": "integer"}}}}},
    }
    for message, response_format in refused.items():
        with pytest.raises(SchemaError, match=re.escape(message)):
            plan_for(response_format)


def run_structured(tokenizer, script: list[int], max_new: int, temperature: float = 0.0) -> tuple[Choice, list[str]]:
    from studio.serving.structured import plan_for

    stops = [tokenizer.convert_tokens_to_ids(IM_END), tokenizer.convert_tokens_to_ids(END_OF_TEXT)]
    engine = Engine(ScriptedModel(script, len(tokenizer), stops), tokenizer, "scripted")
    sampling = Sampling(max_tokens=max_new, temperature=temperature, top_p=1.0, n=1, stop=[], seed=None)
    choice = Choice()
    deltas = list(engine.generate_structured([tokenizer.bos_token_id], plan_for(VERDICT), sampling, max_new,
                                             engine.new_generator(3), choice))
    return choice, deltas


def test_structured_output_follows_the_schema_whatever_the_model_wants(tokenizer):
    # This model only ever wants to write a quote, a backslash or a newline: none of it may go into the
    # answer unescaped, yet the answer is the schema's object.
    wants = [tokenizer.convert_tokens_to_ids(t) for t in tokenizer.tokenize('"\
')]
    choice, deltas = run_structured(tokenizer, wants, max_new=200)
    assert choice.finish_reason == "stop" and "".join(deltas) == choice.text
    check_verdict(choice.text)
    # A model that wants to write words fills the free string with them, up to maxLength.
    words = tokenizer(" the tide rises and falls twice a day", add_special_tokens=False)["input_ids"]
    choice, _ = run_structured(tokenizer, words * 20, max_new=200, temperature=1.0)
    assert check_verdict(choice.text)["why"] and choice.tokens <= 200
    # Too few tokens for the whole object: cut like any answer at its limit, never past it.
    choice, _ = run_structured(tokenizer, words, max_new=6)
    assert choice.finish_reason == "length" and choice.tokens <= 6 and choice.text.startswith('{"score": ')


# --- the real server through the openai client ------------------------------------------------


@needs_server
def test_serving_line_and_models(server, client, model_dir):
    assert re.search(r"^Serving tiny-serve at http://127\.0\.0\.1:\d+/v1$", server.logs(), re.MULTILINE)
    assert server.model_name == "tiny-serve"
    assert [m.id for m in client.models.list().data] == ["tiny-serve"]
    assert client.models.retrieve("tiny-serve").owned_by == "studio"
    assert raw_request(server, "/health") == (200, {"status": "ok", "model": "tiny-serve"})


@needs_server
def test_chat_with_two_choices_and_a_token_limit(client, server):
    reply = client.chat.completions.create(model=server.model_name, n=2, max_tokens=4, seed=1,
                                           messages=[{"role": "system", "content": "Be brief."},
                                                     {"role": "user", "content": "Say something."}])
    assert reply.object == "chat.completion" and reply.id.startswith("chatcmpl-")
    assert [c.index for c in reply.choices] == [0, 1]
    assert all(c.message.role == "assistant" and c.finish_reason == "length" for c in reply.choices)
    assert reply.usage.completion_tokens == 8
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + 8
    assert reply.choices[0].message.content != reply.choices[1].message.content  # sampled twice


@needs_server
def test_chat_stream_adds_up_to_the_plain_answer(client, server):
    # Seeded sampling, not greedy: random weights greedily repeat one token, which would prove little.
    messages = [{"role": "user", "content": "Tell me a story."}]
    plain = client.chat.completions.create(model=server.model_name, messages=messages, max_tokens=10, seed=5)
    chunks = list(client.chat.completions.create(model=server.model_name, messages=messages, max_tokens=10,
                                                 seed=5, stream=True, stream_options={"include_usage": True}))
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content and len(set(text)) > 3
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) > 3
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "length" and set(finishes[:-1]) == {None}
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == plain.usage.completion_tokens == 10


@needs_server
def test_completions_take_raw_prompts(client, server, tokenizer):
    prompts = ["Once upon a time", "The cat"]
    reply = client.completions.create(model=server.model_name, prompt=prompts, n=2, max_tokens=5, temperature=0)
    assert reply.object == "text_completion" and [c.index for c in reply.choices] == [0, 1, 2, 3]
    # Greedy: both choices of one prompt agree; the two prompts lead to different text.
    assert reply.choices[0].text == reply.choices[1].text != reply.choices[2].text == reply.choices[3].text
    assert all(c.finish_reason == "length" for c in reply.choices)
    assert reply.usage.prompt_tokens == sum(len(tokenizer(p)["input_ids"]) for p in prompts)
    assert reply.usage.completion_tokens == 20


@needs_server
def test_completions_stream(server):
    # openai's Completion type requires finish_reason on every chunk, but the API (and this server)
    # sends null until the last one, so the strict client can't read these streams; the default can.
    plain_client = openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0)
    plain = plain_client.completions.create(model=server.model_name, prompt="Hello", max_tokens=6, seed=2)
    chunks = list(plain_client.completions.create(model=server.model_name, prompt="Hello", max_tokens=6,
                                                  seed=2, stream=True))
    assert "".join(c.choices[0].text for c in chunks) == plain.choices[0].text
    assert [c.choices[0].finish_reason for c in chunks][-1] == "length"
    assert {c.choices[0].finish_reason for c in chunks[:-1]} == {None}


@needs_server
def test_seeds_reproduce_sampling_and_greedy_is_deterministic(client, server):
    def ask(**kw) -> str:
        reply = client.chat.completions.create(model=server.model_name, max_tokens=12,
                                               messages=[{"role": "user", "content": "Pick words."}], **kw)
        return reply.choices[0].message.content

    assert ask(temperature=1.0, seed=7) == ask(temperature=1.0, seed=7)
    assert ask(temperature=1.0, seed=7) != ask(temperature=1.0, seed=8)
    assert ask(temperature=1.0, top_p=0.5, seed=7) == ask(temperature=1.0, top_p=0.5, seed=7)
    assert ask(temperature=0) == ask(temperature=0) == ask(temperature=0, seed=123)


@needs_server
def test_stop_strings_end_the_answer(client, server):
    messages = [{"role": "user", "content": "Go on."}]
    full = client.chat.completions.create(model=server.model_name, messages=messages, max_tokens=12,
                                          seed=11).choices[0].message.content
    # The first two-character piece, past the start, that occurs nowhere earlier.
    cut = next(i for i in range(3, len(full) - 2) if full.find(full[i:i + 2]) == i)
    stopped = client.chat.completions.create(model=server.model_name, messages=messages, max_tokens=12,
                                             seed=11, stop=["never-there", full[cut:cut + 2]]).choices[0]
    assert (stopped.message.content, stopped.finish_reason) == (full[:cut], "stop")


@needs_server
def test_bad_requests_get_openai_errors(client, server):
    status, body = raw_request(server, "/v1/chat/completions", data=b"{not json")
    assert status == 400 and body["error"]["type"] == "invalid_request_error" and "JSON" in body["error"]["message"]
    assert set(body["error"]) == {"message", "type", "param", "code"}
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model=server.model_name, messages=[{"role": "user", "content": "x"}],
                                       temperature=5)
    assert bad.value.status_code == 400 and "temperature" in str(bad.value)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=server.model_name, messages=[])
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
    assert missing.value.body["code"] == "model_not_found"
    status, body = raw_request(server, "/v1/embeddings", data=b"{}")
    assert status == 404 and body["error"]["code"] == "not_found"
    status, _ = raw_request(server, "/v1/chat/completions")
    assert status == 405
    # The server keeps serving after all of that.
    assert client.models.list().data[0].id == server.model_name
    assert "POST /v1/chat/completions 400" in server.logs()


@needs_server
def test_chat_with_a_json_schema_always_parses(client, server):
    messages = [{"role": "user", "content": "Grade this answer: the sea is made of soup."}]
    for seed in (1, 2, 3):
        reply = client.chat.completions.create(model=server.model_name, messages=messages, max_tokens=80,
                                               seed=seed, response_format=VERDICT)
        assert reply.choices[0].finish_reason == "stop"
        check_verdict(reply.choices[0].message.content)
    chunks = list(client.chat.completions.create(model=server.model_name, messages=messages, max_tokens=80,
                                                 seed=3, response_format=VERDICT, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == reply.choices[0].message.content
    with pytest.raises(openai.BadRequestError, match="json_object"):
        client.chat.completions.create(model=server.model_name, messages=messages,
                                       response_format={"type": "json_object"})
    with pytest.raises(openai.BadRequestError, match="stop"):
        client.chat.completions.create(model=server.model_name, messages=messages, stop=["x"],
                                       response_format=VERDICT)


@needs_server
def test_api_key_is_required_and_never_logged(model_dir):
    key = "sk-studio-test-5f1c2a9d"
    with start_background_server(str(model_dir), api_key=key, name="guarded") as guarded:
        assert key not in " ".join(guarded.process.args)  # passed through the environment
        wrong = openai.OpenAI(base_url=guarded.base_url, api_key="sk-wrong", max_retries=0,
                              _strict_response_validation=True)
        with pytest.raises(openai.AuthenticationError):
            wrong.models.list()
        with pytest.raises(openai.AuthenticationError):
            wrong.chat.completions.create(model="guarded", messages=[{"role": "user", "content": "hi"}])
        status, _ = raw_request(guarded, "/v1/models")  # no Authorization header at all
        assert status == 401
        right = openai.OpenAI(base_url=guarded.base_url, api_key=key, max_retries=0, _strict_response_validation=True)
        reply = right.chat.completions.create(model="guarded", max_tokens=3,
                                              messages=[{"role": "user", "content": key}])
        assert reply.choices[0].message.role == "assistant"
    logs = guarded.logs()
    assert "GET /v1/models 401" in logs and "POST /v1/chat/completions 200" in logs
    assert key not in logs and "sk-wrong" not in logs and "Bearer" not in logs


def test_a_server_that_cannot_start_says_why(tmp_path):
    with pytest.raises(ServerStartError, match="no model folder"):
        start_background_server(str(tmp_path / "missing-model"), timeout=120)


def test_serve_refuses_an_unset_key_variable(monkeypatch, capsys):
    from studio.cli import main

    monkeypatch.delenv("STUDIO_TEST_NO_SUCH_KEY", raising=False)
    assert main(["serve", "embedded", "--api-key-env", "STUDIO_TEST_NO_SUCH_KEY"]) == 1
    assert "STUDIO_TEST_NO_SUCH_KEY is not set" in capsys.readouterr().err


def test_serving_and_model_modules_import_no_heavy_library():
    # `studio --help`, `studio serve --help` and the generator's launcher must not pay for torch.
    import subprocess
    import sys

    code = ("import sys, studio.cli, studio.cli.model, studio.models.embedded, studio.models.loading, "
            "studio.serving.model_server, studio.serving.launch; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'peft')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"
