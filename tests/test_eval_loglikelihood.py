"""The log-likelihood scorer: lm-eval 0.4.13's tokenisation rules, and the fast path (shared contexts,
shared prefixes, batched continuations) held to a naive one-forward-per-pair computation."""
from __future__ import annotations

import random

import pytest

torch = pytest.importorskip("torch")

from studio.evaluation import loglikelihood  # noqa: E402
from studio.evaluation.loglikelihood import (  # noqa: E402
    ModelForward, RequestEncoder, encode_requests, model_max_length, plan_shared_prefixes, score_requests,
    score_requests_plain,
)

WORDS = ("the cat sat on a mat and then ran to the red house where seven small birds sang about rain "
         "under grey clouds while children played near an old stone bridge").split()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from studio.models.embedded import ensure_embedded_model
    from studio.models.loading import load_model

    # The same home the autouse fixture gives each test, so the embedded build is shared.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("STUDIO_HOME", str(tmp_path_factory.getbasetemp() / "studio-home"))
        model, tokenizer = load_model(ensure_embedded_model("tiny"), device="cpu")
    torch.manual_seed(0)
    return model, tokenizer


def naive_scores(model, tokenizer, requests):
    """One unbatched forward per pair over the window lm-eval feeds: the definition, written plainly."""
    window = model_max_length(model, tokenizer)
    out = []
    with torch.no_grad():
        for context, continuation in encode_requests(tokenizer, requests):
            tokens = (context + continuation)[-(window + 1):][:-1]
            logprobs = torch.log_softmax(model(torch.tensor([tokens])).logits[0].float(), dim=-1)
            picked = logprobs[len(tokens) - len(continuation):]
            target = torch.tensor(continuation)
            out.append((picked.gather(1, target[:, None]).sum().item(), bool((picked.argmax(-1) == target).all())))
    return out


def sentence(rnd: random.Random, n: int) -> str:
    return " ".join(rnd.choice(WORDS) for _ in range(n))


def greedy_text(model, tokenizer, context: str, n: int) -> str:
    ids = tokenizer.encode(context)
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), max_new_tokens=n, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(out[0, len(ids):], skip_special_tokens=True)


def varied_requests(model, tokenizer) -> list[tuple[str, str]]:
    rnd = random.Random(7)
    requests = []
    # MMLU-shaped: one k-shot block shared by every question, one-token letter choices.
    block = "The following are questions about weather.\n\n" + "".join(
        f"Question: {sentence(rnd, 9)}?\nAnswer: {rnd.choice('ABCD')}\n\n" for _ in range(4))
    for _ in range(5):
        context = block + f"Question: {sentence(rnd, 7)}?\nAnswer:"
        requests += [(context, f" {letter}") for letter in "ABCD"]
    # ARC/HellaSwag-shaped: distinct contexts, multi-token choices of different lengths; trailing space.
    for _ in range(4):
        context = f"Question: {sentence(rnd, rnd.randint(3, 12))}?\nAnswer: "
        requests += [(context, sentence(rnd, rnd.randint(1, 7))) for _ in range(3)]
    # Continuations the model itself would write, so some are greedy.
    for _ in range(3):
        context = sentence(rnd, 6)
        requests.append((context, greedy_text(model, tokenizer, context, 3)))
    requests += [
        ("", "Hello there, friend."),                      # empty context: the prefix token stands in
        ("", tokenizer.bos_token + "Hello"),              # continuation already starting with BOS
        (tokenizer.bos_token + "Hi there", " you"),       # context already starting with BOS
        ("rain", " falls"),
        (sentence(rnd, 5) + "   ", "three spaces moved"),
        (sentence(rnd, 900), " " + sentence(rnd, 20)),    # longer than the 1024-token window
        (sentence(rnd, 900), " " + sentence(rnd, 3)),
    ]
    return requests


def assert_same(fast, reference):
    assert len(fast) == len(reference)
    for (lp, greedy), (ref_lp, ref_greedy) in zip(fast, reference):
        assert lp == pytest.approx(ref_lp, abs=1e-4)
        assert greedy == ref_greedy


def test_encoder_moves_trailing_spaces_and_splits_the_whole_encoding(tiny):
    _, tokenizer = tiny
    encoder = RequestEncoder(tokenizer)
    context, continuation = encoder.pair("Question: why?\nAnswer:  ", "because")
    assert context == tokenizer.encode("Question: why?\nAnswer:")
    whole = tokenizer.encode("Question: why?\nAnswer:  because")
    assert context + continuation == whole
    assert tokenizer.decode(continuation) == "  because"


def test_encoder_uses_the_prefix_token_for_an_empty_context(tiny):
    _, tokenizer = tiny
    encoder = RequestEncoder(tokenizer)
    bare = tokenizer.encode("Hello", add_special_tokens=False)
    assert encoder.pair("", "Hello") == ([tokenizer.bos_token_id], bare)
    # A continuation that starts with the prefix token gives it up as the context.
    assert encoder.pair("", tokenizer.bos_token + "Hello") == ([tokenizer.bos_token_id], bare)


def test_encoder_adds_no_second_bos(tiny):
    _, tokenizer = tiny
    encoder = RequestEncoder(tokenizer)
    assert tokenizer.encode("Hi")[0] == tokenizer.bos_token_id  # the tokenizer adds BOS on its own
    assert encoder.encode(tokenizer.bos_token + "Hi") == tokenizer.encode("Hi")
    assert encoder.encode("Hi", add_special_tokens=False) == tokenizer.encode("Hi", add_special_tokens=False)


def test_window_comes_from_the_config(tiny):
    model, tokenizer = tiny
    assert model_max_length(model, tokenizer) == model.config.max_position_embeddings == 1024


@pytest.mark.parametrize("packed", [True, False], ids=["continuations-share-a-row", "row-per-continuation"])
def test_fast_path_equals_one_forward_per_pair(tiny, packed, monkeypatch):
    model, tokenizer = tiny
    if not packed:
        monkeypatch.setattr(loglikelihood, "CUSTOM_MASK_ATTENTION", ())
    forward = ModelForward(model)
    assert forward.supports_shared_cache and forward.takes_custom_masks == packed
    requests = varied_requests(model, tokenizer)
    reference = naive_scores(model, tokenizer, requests)
    assert any(greedy for _, greedy in reference) and not all(greedy for _, greedy in reference)
    fast = score_requests(model, tokenizer, requests, batch_size=4)
    assert_same(fast, reference)
    assert_same(score_requests_plain(model, tokenizer, requests, batch_size=4), reference)


def test_results_do_not_depend_on_batch_size_order_or_subset(tiny):
    model, tokenizer = tiny
    requests = varied_requests(model, tokenizer)[:40]
    whole = score_requests(model, tokenizer, requests, batch_size=16)
    assert_same(score_requests(model, tokenizer, requests, batch_size=1), whole)
    shuffled = list(range(len(requests)))
    random.Random(3).shuffle(shuffled)
    part = shuffled[:13]
    assert_same(score_requests(model, tokenizer, [requests[i] for i in part], batch_size=3),
                [whole[i] for i in part])


def test_per_item_argmax_matches_the_naive_computation(tiny):
    model, tokenizer = tiny
    rnd = random.Random(11)
    block = "".join(f"Q: {sentence(rnd, 8)}\nA: {sentence(rnd, 2)}\n\n" for _ in range(5))
    items = [(block + f"Q: {sentence(rnd, 6)}\nA:", [" " + sentence(rnd, rnd.randint(1, 4)) for _ in range(4)])
             for _ in range(6)]
    requests = [(context, choice) for context, choices in items for choice in choices]
    fast = score_requests(model, tokenizer, requests, batch_size=5)
    reference = naive_scores(model, tokenizer, requests)
    for i in range(len(items)):
        chosen = [lp for lp, _ in fast[4 * i:4 * i + 4]]
        expected = [lp for lp, _ in reference[4 * i:4 * i + 4]]
        assert chosen.index(max(chosen)) == expected.index(max(expected))


def test_progress_reaches_the_total(tiny):
    model, tokenizer = tiny
    requests = [("Once upon a time", " there"), ("Once upon a time", " a cat"), ("", "Hi")]
    seen = []
    score_requests(model, tokenizer, requests, progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (3, 3) and all(total == 3 for _, total in seen)


def test_a_continuation_longer_than_the_window_is_refused(tiny):
    model, tokenizer = tiny
    with pytest.raises(ValueError, match="window"):
        score_requests(model, tokenizer, [("Hi", " " + " ".join(["rain"] * 1100))])


def test_shared_prefixes_group_k_shot_blocks():
    block_a = tuple(range(100, 160))
    block_b = tuple(range(300, 340))
    contexts = [block_a + (i, i + 1) for i in range(5)] + [block_b + (i,) * 3 for i in range(4)]
    contexts += [(7, 8, 9), (1,), (500, 501, 502, 503)]
    plan = plan_shared_prefixes(contexts)
    groups = {shared: sorted(members) for shared, members in plan}
    assert groups[60] == sorted(contexts[:5])
    assert groups[40] == sorted(contexts[5:9])
    assert groups[0] == sorted(contexts[9:])
    assert sorted(c for _, members in plan for c in members) == sorted(contexts)


def test_a_prefix_always_leaves_each_context_a_token():
    block = tuple(range(50))
    contexts = [block, block + (1,), block + (2, 3)]
    (shared, members), = plan_shared_prefixes(contexts)
    assert shared == 49 and sorted(members) == sorted(contexts)
