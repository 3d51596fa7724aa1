"""Self-Instruct generator: ROUGE-L, list parsing, the published filters, and whole runs against a
scripted context (tests/generation_fakes.py)."""
from __future__ import annotations

import itertools
import random
import re

import pytest
from pydantic import ValidationError

from generation_fakes import FakeContext, Request, failed, route, run_generator
from studio.generation.generator_base import RunStopped
from studio.records import Record, Turn
from studio_generate_self_instruct.generator import SelfInstruct, SelfInstructConfig, seed_instruction
from studio_generate_self_instruct.rouge import RougePool, lcs_length, rouge_l, rouge_tokens
from studio_generate_self_instruct.tasks import (
    DEFAULT_BLACKLIST, blacklist_pattern, parse_instance, parse_numbered_list, screen,
)

# --- ROUGE-L -----------------------------------------------------------------------------------


def test_rouge_l_known_values():
    assert rouge_l("Write a poem about the sea.", "write a poem about the sea") == 1.0
    assert rouge_l("Sort these numbers", "Translate into French") == 0.0
    # LCS of [the cat sat on the mat] and [the cat lay on a mat] is "the cat on mat" (4 of 6 + 6 tokens).
    assert rouge_l("The cat sat on the mat.", "the cat lay on a mat") == pytest.approx(2 * 4 / 12)
    # Unequal lengths: LCS "a b" of 2 and 4 tokens -> 2*2/(2+4).
    assert rouge_l("a b", "a x b y") == pytest.approx(4 / 6)
    assert rouge_l("", "anything") == 0.0
    assert rouge_tokens("Don't STOP, 2 times!") == ["don", "t", "stop", "2", "times"]


def _lcs_reference(a, b):
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            table[i + 1][j + 1] = table[i][j] + 1 if x == y else max(table[i][j + 1], table[i + 1][j])
    return table[-1][-1]


def test_bit_parallel_lcs_matches_dynamic_programming():
    rng = random.Random(7)
    for _ in range(300):
        a = [rng.choice("abcde") for _ in range(rng.randint(0, 40))]
        b = [rng.choice("abcde") for _ in range(rng.randint(0, 40))]
        assert lcs_length(a, b) == _lcs_reference(a, b)


def test_rouge_pool_finds_the_same_best_match_as_brute_force():
    rng = random.Random(3)
    vocab = [f"w{i}" for i in range(40)] + ["the", "a", "of", "to"]
    texts = [" ".join(rng.choice(vocab) for _ in range(rng.randint(3, 15))) for _ in range(400)]
    pool = RougePool()
    for text in texts[:300]:
        pool.add(text)
    for query in texts[300:]:
        best, index = pool.most_similar(query)
        expected = max(rouge_l(query, t) for t in texts[:300])
        assert best == pytest.approx(expected)
        assert index is not None and rouge_l(query, pool.texts[index]) == pytest.approx(expected)
    assert pool.most_similar("zzz qqq") == (0.0, None)


# --- parsing and filters -----------------------------------------------------------------------


def test_numbered_list_parsing_tolerates_preamble_markdown_and_continuations():
    answer = ("Sure! Here are more tasks:\n\n"
              "9. Explain photosynthesis to a child.\n"
              "10) **Write a haiku about rain.**\n"
              "  It should mention the city.\n"
              "**11.** Task: classify the tweet as positive or negative\n"
              "12 . Translate \"good morning\" into Spanish\n"
              "13. Give three reasons why")
    items = parse_numbered_list(answer)
    assert items == ["Explain photosynthesis to a child.",
                     "Write a haiku about rain. It should mention the city.",
                     "Classify the tweet as positive or negative",
                     'Translate "good morning" into Spanish',
                     "Give three reasons why"]
    # An answer cut at max_tokens loses its (possibly cut) last item.
    assert parse_numbered_list(answer, truncated=True)[-1] == 'Translate "good morning" into Spanish'
    assert parse_numbered_list("no list here, just words") == []
    assert parse_numbered_list("") == []


def test_filters_reject_what_the_paper_rejects():
    blacklist = blacklist_pattern(DEFAULT_BLACKLIST)

    def why(text):
        return screen(text, 3, 150, blacklist)

    assert why("Explain how vaccines train the immune system.") is None
    assert why("Summarise it") == "too short"
    assert why(" ".join(["word"] * 151)) == "too long"
    assert why(" ".join(["word"] * 150)) is None
    assert why("Draw a cat sitting on a fence") == "blacklisted keyword"
    assert why("Describe the picture in detail") == "blacklisted keyword"
    assert why("Tell me how to GO TO the station") == "blacklisted keyword"
    assert why("Open the attached file and list names") == "blacklisted keyword"
    assert why("Write a user profile for a dating site") is None  # "file" only as a whole word
    assert why("Plan a roadmap for learning Python") is None  # "map" inside a word is fine
    assert why("- Write a list of fruits") == "starts with punctuation"
    assert why("¿Cómo se dice hello en español?") == "starts with non-ascii"
    assert why("") == "empty"


def test_instance_parsing_input_first_and_output_first():
    parsed = parse_instance("Input: none\nOutput: Paris is the capital.", classification=False)
    assert (parsed.input, parsed.output) == ("", "Paris is the capital.")
    parsed = parse_instance("**Input:** 3, 1, 2\n**Output:** 1, 2, 3", classification=False)
    assert (parsed.input, parsed.output) == ("3, 1, 2", "1, 2, 3")
    parsed = parse_instance("Class label: Positive\nInput: I loved every minute.", classification=True)
    assert (parsed.input, parsed.output) == ("I loved every minute.", "Positive")
    assert parse_instance("gibberish without fields", classification=False) == "no output in the answer"
    assert parse_instance("Input: x", classification=True) == "no class label in the answer"


def test_seed_instruction_drops_the_input_a_reader_folded_in():
    seed = Record([Turn("user", "Sort the numbers.\n\n3, 1, 2"), Turn("assistant", "1, 2, 3")],
                  meta={"_layout": {"format": "self_instruct", "input": "3, 1, 2"}})
    assert seed_instruction(seed) == "Sort the numbers."
    assert seed_instruction(Record([Turn("user", "Just this")])) == "Just this"
    assert seed_instruction(Record([Turn("assistant", "no user")])) is None


def test_config_bounds():
    with pytest.raises(ValidationError):
        SelfInstructConfig(min_words=10, max_words=5)
    with pytest.raises(ValidationError):
        SelfInstructConfig(human_examples=9, num_prompt_instructions=8)
    with pytest.raises(ValidationError):
        SelfInstructConfig(rouge_threshold=1.5)
    assert SelfInstructConfig().num_prompt_instructions == 8
    assert SelfInstructConfig().rouge_threshold == 0.7


# --- whole runs ----------------------------------------------------------------------------------

ANIMALS = ["cat", "dog", "frog", "bird", "horse", "whale", "tiger", "lion", "otter", "crow"]


def seeds() -> list[Record]:
    out = [Record([Turn("user", f"Write a short story about a {a} that learns to swim"), Turn("assistant", "...")])
           for a in ANIMALS]
    out.append(Record([Turn("user", "Classify the sentiment of the sentence.\n\nI love it"),
                       Turn("assistant", "positive")],
                      meta={"is_classification": True, "_layout": {"format": "self_instruct", "input": "I love it"}}))
    return out


NEW = ["Explain why the sky looks blue during the day",
       "Give three tips for staying focused while studying",
       "Tell whether the movie review below is positive or negative",
       "Suggest a name for a bakery that sells only bread",
       "Convert the temperature from Celsius to Fahrenheit and explain each step",
       "List the planets of the solar system in order from the sun"]


def brainstorm_answer(request: Request) -> str:
    # Each prompt gets the next new tasks, and the same junk the filters must catch every time.
    start = int(re.search(r"numbered (\d+) to", request.last_user).group(1))
    fresh = NEW[(len(brainstorm_answer.calls) * 2) % len(NEW):][:2]
    brainstorm_answer.calls.append(request)
    items = fresh + ["Draw a picture of a sunset over the sea", "Write a short story about a cat that learns to swim",
                     "Write a short story about a cat that learns to swim fast", "ok", "# heading as task"]
    return "\n".join(f"{start + i}. {item}" for i, item in enumerate(items))


def answers(classification_words=("review", "positive or negative")):
    def classify(request: Request) -> str:
        task = request.last_user.rsplit("Task:", 1)[1]
        return "Yes" if any(w in task for w in classification_words) else "No"

    brainstorm_answer.calls = []
    return route([
        ("Extend the list", brainstorm_answer),
        ("Classification (answer Yes or No)", classify),
        ("Class label: <the label>", "Class label: positive\nInput: What a wonderful film!"),
        ("Output: <the output>", "Input: none\nOutput: A worked answer."),
    ])


def test_self_instruct_run_filters_and_makes_instances():
    ctx = FakeContext(answers(), seeds=seeds())
    records = run_generator(SelfInstruct(), ctx, target_instructions=4, requests_per_round=1)
    instructions = [r.meta["generation"]["instruction"] for r in records]
    assert instructions == NEW[:4]
    # Rounds stop at the target: 2 new tasks per answer, 1 request per round -> 2 rounds.
    assert len([r for r in ctx.requests if "Extend the list" in r.text]) == 2
    # Round 1's progress counts every filter.
    round1 = next(m for _, _, m in ctx.progress_events if m.startswith("round 1"))
    assert "2 kept of 7 parsed" in round1
    for reason in ("blacklisted keyword 1", "duplicate 1", "too similar (ROUGE-L) 1", "too short 1",
                   "starts with punctuation 1"):
        assert reason in round1
    by_instruction = {r.meta["generation"]["instruction"]: r for r in records}
    review = by_instruction["Tell whether the movie review below is positive or negative"]
    assert review.messages[0].content == ("Tell whether the movie review below is positive or negative"
                                          "\n\nWhat a wonderful film!")
    assert review.messages[1].content == "positive"
    assert review.meta["is_classification"] is True
    assert review.meta["generation"]["instance_order"] == "output-first"
    sky = by_instruction["Explain why the sky looks blue during the day"]
    assert [t.content for t in sky.messages] == ["Explain why the sky looks blue during the day", "A worked answer."]
    assert sky.meta["generation"]["instance_order"] == "input-first"
    assert sky.meta["generation"]["generator"] == "self_instruct" and sky.meta["generation"]["round"] == 1
    assert sky.meta["generation"]["classification"] is False
    assert ctx.failures == []


def test_prompts_mix_human_and_machine_instructions():
    ctx = FakeContext(answers(), seeds=seeds())
    run_generator(SelfInstruct(), ctx, target_instructions=6, requests_per_round=1, identify_classification=False)
    prompts = [r.last_user for r in ctx.requests if "Extend the list" in r.text]
    first, second = prompts[0], prompts[1]
    listed = lambda p: re.findall(r"^\d+\. (.*)$", p, flags=re.M)  # noqa: E731
    assert len(listed(first)) == 8 and not set(listed(first)) & set(NEW)
    machine = [t for t in listed(second) if t in NEW]
    assert len(listed(second)) == 8 and len(machine) == 2
    assert "numbered 9 to 16" in first
    # Without classification, no classify requests are sent.
    assert not any("Classification (answer" in r.text for r in ctx.requests)


def test_gibberish_model_makes_no_rows_and_stops_after_empty_rounds():
    ctx = FakeContext(lambda r: "zq xv blorp 7 ,,, ## ll", seeds=seeds())
    records = run_generator(SelfInstruct(), ctx, target_instructions=50, max_rounds=20, stop_after_empty_rounds=3)
    assert records == []
    assert len(ctx.requests) == 3 * 4  # three empty rounds of four requests, then it stops
    assert any("rounds in a row added no instruction" in m for _, _, m in ctx.progress_events)
    assert any("answers held no numbered list" in m for _, _, m in ctx.progress_events)


def test_failed_requests_are_recorded_per_row():
    base = answers()
    first = []

    def answer(request):
        if "Extend the list" in request.text and not first:
            first.append(request)  # the first brainstorm request fails
            return failed(503)
        if "Output: <the output>" in request.text and "sky" in request.text:
            return failed(500, "server error")
        return base(request)

    ctx = FakeContext(answer, seeds=seeds())
    records = run_generator(SelfInstruct(), ctx, target_instructions=4, requests_per_round=1,
                            identify_classification=False)
    assert [f.stage for f in ctx.failures] == ["instructions", "instance"]
    assert ctx.failures[1].source.messages[0].content == "Explain why the sky looks blue during the day"
    assert len(records) == 3


def test_unparseable_instances_fail_with_the_reason():
    ctx = FakeContext(route([("Extend the list", brainstorm_answer)], default="blah blah"), seeds=seeds())
    brainstorm_answer.calls = []
    records = run_generator(SelfInstruct(), ctx, target_instructions=2, requests_per_round=1,
                            identify_classification=False)
    assert records == []
    assert [f.stage for f in ctx.failures] == ["instance", "instance"]
    assert "no output in the answer" in ctx.failures[0].message


def test_same_seed_and_answers_send_the_same_requests():
    runs = []
    for seed in (1, 1, 2):
        ctx = FakeContext(answers(), seeds=seeds(), seed=seed)
        records = run_generator(SelfInstruct(), ctx, target_instructions=4, requests_per_round=2)
        runs.append((ctx.sent(), [r.to_row() for r in records]))
    assert runs[0] == runs[1]
    assert runs[0][0] != runs[2][0]  # another seed draws other example tasks


def test_no_seed_tasks_stops_the_run():
    with pytest.raises(RunStopped, match="seed tasks"):
        run_generator(SelfInstruct(), FakeContext(seeds=[Record([Turn("assistant", "x")])]))


def test_estimate_is_an_upper_bound_with_notes():
    config = SelfInstructConfig(target_instructions=10, max_rounds=5, requests_per_round=2)
    estimate = SelfInstruct().estimate(config, seeds(), lambda text: len(text) // 4 + 1)
    assert estimate.requests == 5 * 2 + 10 * 2
    assert estimate.completion_tokens == 5 * 2 * config.max_tokens + 10 * (config.instance_max_tokens + 5)
    assert estimate.prompt_tokens > 0
    assert any("upper bound" in n for n in estimate.notes)


def test_pool_scales_to_thousands():
    # Not a timing assertion: checks the pruned search still answers exactly on a big pool.
    rng = random.Random(0)
    words = [f"t{i}" for i in range(500)] + ["the", "a", "an", "of", "to", "and", "write", "explain"]
    pool = RougePool()
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(5, 25))) for _ in range(3000)]
    for text in texts:
        pool.add(text)
    for text in itertools.islice(texts, 0, 3000, 300):
        assert pool.most_similar(text)[0] == 1.0
