"""The continuous batcher (studio.serving.batching) and the batching `studio serve`.

A tiny embedded Llama whose weights are re-drawn large, so greedy answers depend on their context
(the random init of a fresh model repeats one token whatever the prompt); in float32 on the CPU.
The server runs in this process on 127.0.0.1 and is spoken to over real HTTP."""
from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
import warnings

import pytest

torch = pytest.importorskip("torch")

from studio.models.embedded import build_embedded_model  # noqa: E402
from studio.models.loading import load_model  # noqa: E402
from studio.serving.batching import Batcher, QueueFull, SamplingParams, generate_all  # noqa: E402
from studio.serving.model_server import Choice, Engine, Sampling, make_server  # noqa: E402
from studio.serving.vllm_engine import VLLM_SERVER_MODULE, vllm_command, vllm_refusal  # noqa: E402

PROMPTS = ["Hi", "The capital of France is", "Once upon a time there was a cat who liked to sleep in the sun",
           "Two plus two", "Write a short greeting for a friend who has just moved to a new city far away",
           "Why", "List three colours and a fruit", "A tokenizer splits text into tokens and maps each one"]


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    folder = build_embedded_model(tmp_path_factory.mktemp("batching") / "tiny", pretrain_steps=0)
    model, tokenizer = load_model(str(folder))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() >= 2:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
    assert next(model.parameters()).dtype == torch.float32
    return model, tokenizer


@pytest.fixture(scope="module")
def prompts(loaded):
    tokenizer = loaded[1]
    return [tokenizer(p)["input_ids"] for p in PROMPTS]


@pytest.fixture
def batcher(loaded):
    running = Batcher(*loaded, max_batch=16, max_queued=16)
    yield running
    running.close()


def unbatched(loaded, ids: list[int], max_new: int, temperature: float = 0.0, seed: int | None = None,
              stop: list[str] | None = None) -> Choice:
    """The server's one-request token loop: the reference the batcher must match."""
    engine = Engine(*loaded, "reference")
    sampling = Sampling(max_tokens=max_new, temperature=temperature, top_p=1.0, n=1, stop=stop or [], seed=seed)
    choice = Choice()
    for _ in engine.generate(ids, sampling, max_new, engine.new_generator(seed), choice):
        pass
    return choice


def test_greedy_batched_equals_unbatched_for_prompts_of_different_lengths(loaded, prompts, batcher):
    expected = [unbatched(loaded, ids, 24) for ids in prompts]
    assert len({tuple(c.ids) for c in expected}) == len(prompts)  # the answers depend on the prompt
    assert all(len(set(c.ids)) > 5 for c in expected)
    # All at once: every prompt joins the same batch, left-padded to the longest.
    together = generate_all(batcher, prompts, SamplingParams(temperature=0.0, max_tokens=24))
    assert [r.ids for r in together] == [c.ids for c in expected]
    assert [r.text for r in together] == [c.text for c in expected]
    # Joining mid-generation: the short prompts arrive while the long ones are decoding, so the
    # running batch is padded on the left for a longer newcomer, and newcomers for a longer batch.
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    first = [batcher.submit(prompts[i], SamplingParams(temperature=0.0, max_tokens=24)) for i in order[::2]]
    next(iter(first[-1]))  # the first wave is running
    second = [batcher.submit(prompts[i], SamplingParams(temperature=0.0, max_tokens=24)) for i in order[1::2]]
    results = dict(zip(order[::2] + order[1::2], [h.wait() for h in first + second]))
    assert [results[i].ids for i in range(len(prompts))] == [c.ids for c in expected]


def test_seeded_sampling_is_the_same_alone_and_in_a_batch(loaded, prompts, batcher):
    params = SamplingParams(temperature=1.0, max_tokens=16, seed=7)
    alone = batcher.submit(prompts[2], params).wait()
    assert alone.ids == unbatched(loaded, prompts[2], 16, temperature=1.0, seed=7).ids
    crowd = batcher.submit_all([(ids, SamplingParams(temperature=0.8, top_p=0.9, max_tokens=20, seed=i))
                                for i, ids in enumerate(prompts)] + [(prompts[2], params)])
    assert crowd[-1].wait().ids == alone.ids
    other_seed = batcher.submit(prompts[2], SamplingParams(temperature=1.0, max_tokens=16, seed=8)).wait()
    assert other_seed.ids != alone.ids


def test_each_request_keeps_its_own_limits_and_stop_strings(loaded, prompts, batcher):
    full = unbatched(loaded, prompts[1], 20)
    cut = next(i for i in range(3, len(full.text) - 2) if full.text.find(full.text[i:i + 2]) == i)
    stop = full.text[cut:cut + 2]
    handles = batcher.submit_all([(prompts[1], SamplingParams(temperature=0.0, max_tokens=20, stop=[stop])),
                                  (prompts[1], SamplingParams(temperature=0.0, max_tokens=3)),
                                  (prompts[0], SamplingParams(temperature=0.0, max_tokens=20))])
    stopped = handles[0]
    streamed = "".join(step.text for step in stopped)
    assert (stopped.result.text, stopped.result.finish_reason) == (full.text[:cut], "stop")
    assert streamed == stopped.result.text and stop not in streamed
    assert stopped.result.text == unbatched(loaded, prompts[1], 20, stop=[stop]).text
    short = handles[1].wait()
    assert (short.tokens, short.finish_reason, short.ids) == (3, "length", full.ids[:3])
    assert handles[2].wait().tokens == 20


def test_a_cancelled_generation_leaves_the_batch(loaded, prompts, batcher):
    long = batcher.submit(prompts[0], SamplingParams(temperature=0.0, max_tokens=500))
    short = batcher.submit(prompts[1], SamplingParams(temperature=0.0, max_tokens=12))
    steps = iter(long)
    next(steps)
    long.cancel()
    rest = list(steps)  # the iteration ends: the generation left at the next step
    assert long.result.finish_reason == "cancelled" and long.result.tokens < 500 and len(rest) < 499
    assert short.wait().ids == unbatched(loaded, prompts[1], 12).ids  # its neighbour is unharmed
    assert until(lambda: batcher.stats()["batch_size"] == 0) and batcher.stats()["cancelled_total"] == 1


def test_the_queue_is_bounded(loaded, prompts):
    small = Batcher(*loaded, max_batch=1, max_queued=1)
    try:
        # A group larger than the queue, on an idle batcher, is slow rather than refused forever.
        handles = small.submit_all([(prompts[0], SamplingParams(temperature=0.0, max_tokens=2))] * 3)
        assert [h.wait().tokens for h in handles] == [2, 2, 2]
        long = small.submit(prompts[0], SamplingParams(temperature=0.0, max_tokens=500))
        next(iter(long))  # it holds the one batch slot
        with pytest.raises(QueueFull) as full:
            small.submit_all([(prompts[1], SamplingParams(max_tokens=2))] * 2)
        assert full.value.retry_after >= 1 and small.stats()["rejected_total"] == 2
        waiting = small.submit(prompts[1], SamplingParams(temperature=0.0, max_tokens=2))  # one may wait
        long.cancel()
        assert waiting.wait().tokens == 2 and long.wait().finish_reason == "cancelled"
    finally:
        small.close()


def test_logprobs_of_sampled_tokens_match_a_plain_forward(loaded, prompts, batcher):
    # What PPO rollouts need: each sampled token's log-probability under the model (before temperature).
    handles = batcher.submit_all([(ids, SamplingParams(temperature=1.0, max_tokens=8, seed=3, logprobs=True))
                                  for ids in prompts[:4]])
    model = loaded[0]
    for ids, handle in zip(prompts[:4], handles):
        result = handle.wait()
        assert len(result.logprobs) == result.tokens
        with torch.inference_mode():
            logits = model(input_ids=torch.tensor([ids + result.ids])).logits[0, len(ids) - 1:-1]
        expected = torch.log_softmax(logits.float(), dim=-1).gather(1, torch.tensor(result.ids)[:, None])[:, 0]
        assert torch.allclose(torch.tensor(result.logprobs), expected, atol=1e-4)


def test_a_prompt_that_fails_fails_alone(loaded, prompts, batcher):
    outside = [len(loaded[1]) + 10_000]  # a token id past the embedding table: the forward raises
    bad, good = batcher.submit_all([(outside, SamplingParams(max_tokens=4)),
                                    (prompts[1], SamplingParams(temperature=0.0, max_tokens=4))])
    with pytest.raises(IndexError):
        bad.wait()
    with pytest.raises(IndexError):
        list(bad)
    assert good.wait().ids == unbatched(loaded, prompts[1], 4).ids
    assert batcher.submit(prompts[0], SamplingParams(max_tokens=2)).wait().tokens == 2


def test_generation_draws_no_deprecation_warning(loaded, prompts):
    # transformers 5.25 renamed the cache argument; the old name warns on every forward.
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        unbatched(loaded, prompts[0], 3)
        batcher = Batcher(*loaded)
        try:
            assert generate_all(batcher, prompts[:2], SamplingParams(temperature=0.0, max_tokens=3))[0].tokens == 3
        finally:
            batcher.close()


# --- the HTTP server ------------------------------------------------------------------------------


def start(loaded, **options):
    server = make_server(*loaded, "tiny", **options)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def stop(server) -> None:
    server.shutdown()
    server.server_close()


def request(server, path: str, body: dict | None = None) -> tuple[int, dict, object]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(server.base_url.removesuffix("/v1") + path, data=data,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as response:
            raw = response.read()
            return response.status, json.loads(raw) if path != "/metrics" else raw.decode(), response.headers
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read()), exc.headers


def metrics(server) -> dict[str, float]:
    text = request(server, "/metrics")[1]
    return {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines() if not line.startswith("#")}


def until(condition, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_concurrent_chat_requests_get_their_unbatched_answers(loaded):
    server = start(loaded)
    try:
        bodies = [{"model": "tiny", "messages": [{"role": "user", "content": p}], "temperature": 0, "max_tokens": 16}
                  for p in PROMPTS]
        alone = [request(server, "/v1/chat/completions", b)[1]["choices"][0]["message"]["content"] for b in bodies]
        answers: list[str | None] = [None] * len(bodies)

        def ask(i: int) -> None:
            answers[i] = request(server, "/v1/chat/completions", bodies[i])[1]["choices"][0]["message"]["content"]

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(bodies))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert answers == alone and len(set(alone)) == len(alone)
        values = metrics(server)
        assert values["studio_generations_total"] == 2 * len(bodies)
        assert values["studio_generated_tokens_total"] == 2 * 16 * len(bodies)
        assert values["studio_queue_depth"] == 0 and values["studio_max_batch_size"] == 16
        assert {"studio_batch_size", "studio_tokens_per_second", "studio_rejected_requests_total"} <= set(values)
    finally:
        stop(server)


def test_a_full_queue_answers_429_and_a_gone_client_leaves_the_batch(loaded):
    server = start(loaded, max_batch=1, max_queued=0)
    server.engine.stop_ids = set()  # no end of turn: only max_tokens or the hang-up ends the answer
    try:
        # A raw connection asks for a long answer, then hangs up without reading it.
        body = json.dumps({"model": "tiny", "prompt": "Hi", "max_tokens": 1000, "temperature": 0}).encode()
        host, port = server.server_address[:2]
        gone = socket.create_connection((host, port))
        gone.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        assert until(lambda: metrics(server)["studio_batch_size"] == 1)
        status, error, headers = request(server, "/v1/chat/completions",
                                         {"model": "tiny", "messages": [{"role": "user", "content": "x"}]})
        assert status == 429 and error["error"]["type"] == "rate_limit_error"
        assert int(headers["Retry-After"]) >= 1
        gone.close()
        assert until(lambda: metrics(server)["studio_batch_size"] == 0)
        values = metrics(server)
        assert values["studio_rejected_requests_total"] == 1
        assert values["studio_cancelled_generations_total"] == 1
        assert values["studio_generated_tokens_total"] < 1000  # it left the batch before its end
        status, reply, _ = request(server, "/v1/completions", {"model": "tiny", "prompt": "Hi", "max_tokens": 2})
        assert status == 200 and reply["usage"]["completion_tokens"] == 2
    finally:
        stop(server)


# --- studio serve options and --engine vllm -------------------------------------------------------


def test_serve_passes_threads_and_batch_limits(monkeypatch, tmp_path):
    from studio.cli import main
    from studio.serving import model_server

    seen = {}
    monkeypatch.setattr(model_server, "serve", lambda model, **kw: seen.update(kw, model=model))
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    assert main(["serve", str(folder), "--threads", "1", "--max-batch", "4", "--max-queued", "8"]) == 0
    assert (seen["threads"], seen["max_batch"], seen["max_queued"]) == (1, 4, 8)
    assert 1 <= model_server.default_threads() <= 4


def test_vllm_refusals_say_why_in_one_line(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    yes, no = (lambda: True), (lambda: False)
    assert vllm_refusal(model, installed=yes, gpu=yes) is None
    assert "not installed" in vllm_refusal(model, installed=no, gpu=yes)
    assert "CUDA GPU" in vllm_refusal(model, installed=yes, gpu=no)
    assert "merge it" in vllm_refusal(adapter, installed=yes, gpu=yes)
    assert "not one" in vllm_refusal(tmp_path / "missing", installed=yes, gpu=yes)
    assert all("\n" not in why for why in (vllm_refusal(model, installed=no, gpu=no),
                                            vllm_refusal(adapter, installed=no, gpu=no)))


def test_vllm_command_line(tmp_path):
    assert vllm_command(tmp_path, "127.0.0.1", 8001, "mine", python="py") == [
        "py", "-m", VLLM_SERVER_MODULE, "--model", str(tmp_path), "--host", "127.0.0.1", "--port", "8001",
        "--served-model-name", "mine"]
    assert vllm_command(tmp_path, "::1", 1, "m", trust_remote_code=True)[-1] == "--trust-remote-code"


def test_serve_engine_vllm_refuses_here_with_one_line(monkeypatch, tmp_path, capsys):
    from studio.cli import main
    from studio.serving import vllm_engine

    monkeypatch.setattr(vllm_engine, "cuda_available", lambda: False)
    monkeypatch.setattr(vllm_engine, "vllm_installed", lambda: False)
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    assert main(["serve", str(folder), "--engine", "vllm"]) == 1
    err = capsys.readouterr().err.strip()
    assert "vllm" in err and "not installed" in err and len(err.splitlines()) == 1
