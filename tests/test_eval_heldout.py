"""Held-out loss and perplexity on exactly the tokens training puts loss on, the split a train
recipe holds out, and the tuned model's win rate under a studio reward model."""
from __future__ import annotations

import json
import math

import pytest

from conftest import DATASETS
from studio.evaluation.base import EvalContext, EvalDataError
from studio.evaluation.heldout import conversation_losses, encode_conversation, marked_template, token_weighted_loss, \
    win_rate
from studio.evaluation.models import EvalModel
from studio_eval_judged.heldout_task import Heldout, HeldoutOptions

SFT_CHAT = DATASETS / "train" / "sft_chat.jsonl"
HELDOUT = DATASETS / "eval" / "planted_heldout.jsonl"


@pytest.fixture(scope="module")
def embedded():
    from studio.evaluation.models import open_model

    return open_model("embedded")


def _chats(n: int) -> list[list[dict[str, str]]]:
    return [json.loads(line)["messages"] for line in SFT_CHAT.read_text(encoding="utf-8").splitlines()[:n]]


# --- the tokens that carry loss ---------------------------------------------------------------------


def test_the_mask_is_the_one_the_sft_preview_shows_and_the_loss_is_the_models_own(embedded):
    import torch

    from studio_train_sft import SFTOptions
    from studio_train_sft.templates import preview_record

    tokenizer = embedded.tokenizer
    chats = _chats(40)
    two_turn = next(c for c in chats if sum(m["role"] == "assistant" for m in c) == 2)
    for messages in (chats[0], two_turn):
        ids, mask = encode_conversation(tokenizer, messages, marked_template(tokenizer))
        # Training's view of the same record: the SFT back-end's preview of which tokens carry loss.
        shown = preview_record(tokenizer, messages, SFTOptions(), "chatml")
        assert sum(mask) == shown["loss_tokens"] and len(ids) == shown["tokens"]
        loss_text = "".join(s["text"] for s in shown["segments"] if s["loss"])
        assert tokenizer.decode([i for i, bit in zip(ids, mask) if bit]) == loss_text
        assert loss_text.endswith("<|im_end|>") and messages[-1]["content"] in loss_text
        # The summed NLL over those tokens is what the model's own loss with -100 labels gives.
        (nll, tokens), = conversation_losses(embedded.model, tokenizer, [messages])
        labels = torch.tensor([[i if bit else -100 for i, bit in zip(ids, mask)]])
        with torch.no_grad():
            reference = embedded.model(input_ids=torch.tensor([ids]), labels=labels).loss.item()
        assert tokens == sum(mask) and nll / tokens == pytest.approx(reference, rel=1e-5)


def test_batching_and_padding_do_not_change_any_loss(embedded):
    chats = _chats(7)
    one_by_one = conversation_losses(embedded.model, embedded.tokenizer, chats, batch_size=1)
    batched = conversation_losses(embedded.model, embedded.tokenizer, chats, batch_size=4)
    assert [t for _, t in one_by_one] == [t for _, t in batched]
    assert [n for n, _ in batched] == pytest.approx([n for n, _ in one_by_one], rel=1e-4)


def test_a_template_without_generation_marks_is_refused(embedded):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(embedded.location)
    tokenizer.chat_template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    with pytest.raises(ValueError, match="no \\{% generation %\\} marks"):
        marked_template(tokenizer, "plain-model")


def test_token_weighted_loss_and_perplexity():
    got = token_weighted_loss([6.0, 2.0, 4.0], [3, 1, 4])
    assert got["loss"]["value"] == pytest.approx(12.0 / 8) and got["loss"]["n"] == 3
    assert got["perplexity"]["value"] == pytest.approx(math.exp(1.5))
    # Ratio-estimator stderr: residuals 6-4.5, 2-1.5, 4-6 over 8 tokens.
    assert got["loss"]["stderr"] == pytest.approx(math.sqrt(3 / 2 * (1.5 ** 2 + 0.5 ** 2 + 2.0 ** 2)) / 8)
    assert got["perplexity"]["stderr"] == pytest.approx(math.exp(1.5) * got["loss"]["stderr"])
    assert set(got) == {"loss", "perplexity"}
    # A conversation with no assistant token has no loss to give and weighs nothing.
    assert token_weighted_loss([6.0, 0.0], [3, 0])["loss"]["value"] == 2.0


# --- the task --------------------------------------------------------------------------------------


def test_the_task_scores_and_aggregates_by_tokens(embedded):
    task = Heldout()
    config = HeldoutOptions(path=str(HELDOUT))
    items = task.load(config)
    assert len(items) == 24 and len({i["id"] for i in items}) == 24
    assert items == task.load(config)  # stable ids
    ctx = EvalContext(model=embedded, config=config, task="heldout", batch_size=8)
    samples = task.score(ctx, items[:5])
    # Any chunking scores an item the same.
    again = task.score(ctx, items[3:5])
    assert [s["metrics"]["loss"] for s in again] == pytest.approx([s["metrics"]["loss"] for s in samples[3:]])
    metrics = task.aggregate(samples, config)
    total = sum(s["nll"] for s in samples) / sum(s["metrics"]["tokens"] for s in samples)
    assert metrics["loss"]["value"] == pytest.approx(total) and metrics["loss"]["n"] == 5
    assert metrics["perplexity"]["value"] == pytest.approx(math.exp(total))
    assert task.lower_is_better == ("loss", "perplexity") and task.primary_metric == "loss"


def test_holdout_fraction_takes_the_records_a_train_recipe_holds_out():
    from studio.training.data import load_records, split_eval

    task = Heldout()
    items = task.load(HeldoutOptions(path=str(SFT_CHAT), holdout_fraction=0.1, seed=0))
    records = load_records(str(SFT_CHAT)).records
    held = split_eval(records, 0.1, 0)[1]
    assert len(items) == len(held) == 32
    assert [i["messages"][-1]["content"] for i in items] == [r.messages[-1].content for r in held]
    other_seed = task.load(HeldoutOptions(path=str(SFT_CHAT), holdout_fraction=0.1, seed=1))
    assert [i["messages"] for i in other_seed] != [i["messages"] for i in items]


def test_a_stored_dataset_is_read_from_the_workspace(tmp_path, monkeypatch):
    from studio.data.workflows import import_file
    from studio.plugins import get_host
    from studio.store import Workspace

    ws = Workspace.init(tmp_path / "ws")
    import_file(ws, HELDOUT, get_host().formats(), name="planted-heldout")
    monkeypatch.setenv("STUDIO_WORKSPACE", str(ws.root))
    task = Heldout()
    stored = task.load(HeldoutOptions(path="planted-heldout"))
    assert [i["messages"] for i in stored] == [i["messages"] for i in task.load(HeldoutOptions(path=str(HELDOUT)))]
    with pytest.raises(EvalDataError, match="no-such-set"):
        task.load(HeldoutOptions(path="no-such-set"))


def test_an_endpoint_model_is_refused_with_a_reason():
    from studio.evaluation.models import open_model

    task = Heldout()
    config = HeldoutOptions(path=str(HELDOUT))
    endpoint = open_model("endpoint:http://127.0.0.1:9/v1#served")
    with pytest.raises(ValueError, match="token log-probabilities"):
        task.score(EvalContext(model=endpoint, config=config), task.load(config)[:1])


# --- win rate under a reward model --------------------------------------------------------------


def test_win_rate_counts_ties_half_and_tests_wins_against_losses():
    got = win_rate([0.0, 0.0, 1.0, 2.0, 5.0], [1.0, 1.0, 1.0, 3.0, 4.0])
    assert (got["wins"], got["losses"], got["ties"], got["n"]) == (3, 1, 1, 5)
    assert got["win_rate"] == pytest.approx(3.5 / 5)
    assert got["p_value"] == pytest.approx(0.625)  # exact two-sided sign test, 3 against 1
    strong = win_rate([0.0] * 12, [1.0] * 12)
    assert strong["win_rate"] == 1.0 and strong["p_value"] < 0.001


class Answering(EvalModel):
    def __init__(self, label: str, reply: str):
        super().__init__(label, label)
        self.reply = reply
        self.asked: list[list[dict[str, str]]] = []

    def chat(self, conversations, *, max_new_tokens, batch_size=16, temperature=0.0, seed=0, progress=None):
        self.asked += conversations
        return [f"{self.reply} {c[-1]['content'][:20]}" for c in conversations]


@pytest.fixture(scope="module")
def reward_folder(tmp_path_factory, embedded):
    # A one-label sequence classifier on the embedded model: what the reward back-end saves.
    import torch
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("reward")
    model = AutoModelForSequenceClassification.from_pretrained(embedded.location, num_labels=1)
    model.config.pad_token_id = embedded.tokenizer.pad_token_id
    model.save_pretrained(folder)
    embedded.tokenizer.save_pretrained(folder)
    return folder


def test_reward_win_rate_scores_both_models_answers(tmp_path, reward_folder):
    from studio.training.reward_workbench import load_reward_model

    task = Heldout()
    config = HeldoutOptions(path=str(HELDOUT), answer_max_tokens=8)
    items = task.load(config)[:6]
    samples = [{"id": i["id"], "prompt": i["messages"]} for i in items]
    base, tuned = Answering("base", "maybe"), Answering("tuned", "indeed, the answer is")
    ctx = EvalContext(model=tuned, config=config, options={"reward_model": str(reward_folder)})
    result = task.pairwise(ctx, samples, samples, base, tuned)["reward_win_rate"]
    # Both models answered each prompt: the conversation up to its last user turn.
    assert base.asked == tuned.asked == [i["messages"][:-1] for i in items]
    scorer = load_reward_model(reward_folder)
    for detail, item in zip(result["details"], items):
        prompt = item["messages"][:-1]
        expected = scorer.score_conversations([prompt + [{"role": "assistant", "content": detail["base"]}],
                                               prompt + [{"role": "assistant", "content": detail["tuned"]}]])
        assert [detail["reward_base"], detail["reward_tuned"]] == pytest.approx(expected, abs=1e-5)
    wins = sum(d["reward_tuned"] > d["reward_base"] for d in result["details"])
    assert result["wins"] == wins and result["n"] == 6 and result["win_rate"] == pytest.approx(
        (wins + 0.5 * result["ties"]) / 6)
    # The same answers from both sides: every prompt a tie, nothing to tell apart.
    same = task.pairwise(ctx, samples, samples, Answering("a", "same"), Answering("b", "same"))["reward_win_rate"]
    assert (same["ties"], same["win_rate"], same["p_value"]) == (6, 0.5, 1.0)
    # Without a reward model there is no pairwise metric.
    assert task.pairwise(EvalContext(model=tuned, config=config), samples, samples, base, tuned) is None
