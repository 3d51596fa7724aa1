"""The SFT back-end: its four shipped recipes run as real runs and prove learning, the preview
marks exactly the assistant tokens, packed rows keep examples apart, and wrong data, QLoRA
without CUDA and unmarked chat templates are refused before training."""
from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from conftest import DATASETS, ROOT
from studio.records import Record, Turn
from studio.store import Workspace
from studio.training import runs
from studio.training.backend_base import TrainContext
from studio.recipes import load_recipe
from studio.recipes.train import AdapterSettings
from studio_train_sft import SFTBackend, SFTOptions

RECIPES = {"lora": "train-sft-lora.yaml", "full": "train-sft-full.yaml", "prompt_tuning": "train-prompt-tuning.yaml",
           "freeze": "train-freeze.yaml"}
UNMARKED_TEMPLATE = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
                     "{% endfor %}")


def recipe(name: str, overrides: list[str] | None = None):
    return load_recipe(ROOT / "recipes" / RECIPES.get(name, name), overrides)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return Workspace.init(tmp_path_factory.mktemp("sft") / "ws")


@pytest.fixture(scope="module")
def finished(workspace):
    """Each recipe run once, as `studio run` runs it: prepared, started as a subprocess, followed."""
    done = {}
    for name in RECIPES:
        run = runs.prepare_run(workspace, recipe(name))
        events = list(runs.follow(run, runs.start(run)))
        done[name] = (run, events)
    return done


# --- the recipes ---------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", list(RECIPES))
def test_recipe_runs_and_its_learning_checks_pass(finished, name):
    run, events = finished[name]
    assert run.status()["status"] == "completed", run.log_tail()
    metrics = run.metrics()
    checks = metrics["checks"]
    assert {c["metric"] for c in checks} == {"loss", "eval_loss"}
    assert all(c["passed"] for c in checks), checks
    losses = [e["values"]["loss"] for e in events if e["event"] == "metrics" and "loss" in e["values"]]
    assert len(losses) >= 5 and losses[-1] < losses[0]
    final = run.final_dir
    if name in ("lora", "prompt_tuning"):
        assert (final / "adapter_config.json").is_file() and not (final / "config.json").exists()
    else:
        assert (final / "config.json").is_file() and (final / "model.safetensors").is_file()
    assert (final / "tokenizer.json").is_file()
    info = [e["message"] for e in events if e["event"] == "info"]
    if name == "prompt_tuning":
        assert any("packing is off" in m for m in info)
    else:
        assert any("packed 288 examples" in m and "separate rows" in m for m in info), info


@pytest.mark.slow
def test_recipe_headers_name_their_command():
    for file in RECIPES.values():
        text = (ROOT / "recipes" / file).read_text()
        assert text.startswith(f"# studio run recipes/{file}\n")
        assert recipe(file).backend == "sft" and recipe(file).expect


@pytest.mark.slow
def test_the_trained_lora_adapter_loads_and_generates(finished):
    import torch

    from studio.models.loading import load_model

    run, _ = finished["lora"]
    model, tokenizer = load_model(run.path, device="cpu")
    assert type(model).__name__.startswith("Peft")
    trained = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert trained and any(p.abs().sum() > 0 for p in trained)  # lora_B starts at zero
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "What is the opposite of hot?"}],
                                           add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**prompt, max_new_tokens=12, do_sample=False)
    new = out[0, prompt["input_ids"].shape[1]:]
    assert len(new) > 0 and tokenizer.decode(new, skip_special_tokens=True).strip()


@pytest.mark.slow
def test_the_freeze_run_changed_only_the_last_layer_and_the_norm(finished):
    from safetensors.torch import load_file

    from studio.models.embedded import ensure_embedded_model

    run, _ = finished["freeze"]
    before = load_file(str(ensure_embedded_model("tiny") / "model.safetensors"))
    after = load_file(str(run.final_dir / "model.safetensors"))
    changed = {name for name in before if not before[name].equal(after[name])}
    assert changed and all(n.startswith("model.layers.1.") or n == "model.norm.weight" for n in changed), changed
    assert "model.embed_tokens.weight" not in changed and not any(n.startswith("model.layers.0.") for n in changed)


def test_freeze_makes_only_the_asked_parameters_trainable():
    from transformers import AutoModelForCausalLM

    from studio.models.embedded import ensure_embedded_model
    from studio.training.adapters import apply_freeze

    model = AutoModelForCausalLM.from_pretrained(ensure_embedded_model("tiny"))
    counts = apply_freeze(model, AdapterSettings(method="freeze", train_last_layers=1, train_modules=["model.norm"]))
    trainable = {n: p.numel() for n, p in model.named_parameters() if p.requires_grad}
    assert set(trainable) == {n for n, _ in model.named_parameters()
                              if n.startswith("model.layers.1.") or n == "model.norm.weight"}
    assert counts["trainable"] == sum(trainable.values()) < counts["total"] // 4
    assert counts["total"] == sum(p.numel() for p in model.parameters())


# --- preview ---------------------------------------------------------------------------------------


def preview(record: Record, **options):
    ctx = TrainContext(recipe=recipe("lora"), config=SFTOptions(**options), run_dir=Path(tempfile.mkdtemp()),
                       train_records=[], eval_records=[])
    return SFTBackend().preview(ctx, record)


CHAT = Record(messages=[Turn("system", "You are a terse assistant."), Turn("user", "Hello, I am Ada."),
                        Turn("assistant", "Hello Ada! How can I help? Done."), Turn("user", "What is my name?"),
                        Turn("assistant", "Your name is Ada. Done.")])


def test_preview_marks_exactly_the_assistant_replies_and_their_end_of_turn():
    shown = preview(CHAT)
    assert shown["template"] == "chatml"
    assert "".join(s["text"] for s in shown["segments"]) == shown["text"]
    assert [s["text"] for s in shown["segments"] if s["loss"]] == [
        "Hello Ada! How can I help? Done.<|im_end|>", "Your name is Ada. Done.<|im_end|>"]
    unmarked = "".join(s["text"] for s in shown["segments"] if not s["loss"])
    for turn in CHAT.messages:
        if turn.role != "assistant":
            assert turn.content in unmarked
    assert 0 < shown["loss_tokens"] < shown["tokens"]


def test_preview_follows_the_loss_options():
    last_only = preview(CHAT, completion_only_loss=True)
    assert [s["text"] for s in last_only["segments"] if s["loss"]] == ["Your name is Ada. Done.<|im_end|>"]
    everything = preview(CHAT, assistant_only_loss=False)
    assert everything["loss_tokens"] == everything["tokens"] - 1  # the first token has nothing to predict it from
    assert [s["loss"] for s in everything["segments"]] == [False, True]


def test_preview_needs_only_the_tokenizer_and_refuses_a_record_without_a_reply():
    with pytest.raises(ValueError, match="no assistant turn"):
        preview(Record(messages=[Turn("user", "Hello?")]))


# --- packed rows -----------------------------------------------------------------------------------


def test_packed_rows_give_each_example_the_loss_it_has_alone():
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from studio.models.embedded import ensure_embedded_model
    from studio_train_sft.packing import PackedRowsCollator

    path = ensure_embedded_model("tiny")
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    texts = [[{"role": "user", "content": f"Count to {n}."}, {"role": "assistant", "content": "One, two. Done."}]
             for n in ("two", "three", "four")]
    ids = [tokenizer.apply_chat_template(t, tokenize=True, return_dict=True)["input_ids"] for t in texts]
    with torch.no_grad():
        alone = sum(model(input_ids=torch.tensor([x]), labels=torch.tensor([x])).loss * (len(x) - 1) for x in ids)
        # Two packed rows, the second shorter, so it carries padding too.
        rows = [{"input_ids": ids[0] + ids[1], "labels": ids[0] + ids[1], "seq_lengths": [len(ids[0]), len(ids[1])]},
                {"input_ids": ids[2], "labels": ids[2], "seq_lengths": [len(ids[2])]}]
        batch = PackedRowsCollator(tokenizer.pad_token_id)(rows)
        assert batch.pop("num_real_tokens").item() == sum(map(len, ids))
        assert batch["position_ids"][0].tolist() == list(range(len(ids[0]))) + list(range(len(ids[1])))
        logits = model(**batch, use_cache=False).logits
        packed = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)),
                                                   batch["labels"][:, 1:].reshape(-1), reduction="sum")
    assert (batch["labels"] != -100).sum().item() == sum(len(x) - 1 for x in ids)
    assert packed.item() == pytest.approx(alone.item(), rel=1e-4)


# --- refused before training -------------------------------------------------------------------------


def test_preference_only_data_is_refused_naming_the_record_and_field(workspace):
    with pytest.raises(ValueError) as caught:
        runs.prepare_run(workspace, recipe("lora", [f"dataset={DATASETS / 'trl_preference_standard.jsonl'}"]))
    message = str(caught.value)
    assert "record 1: field 'messages'" in message and "preference record" in message


def test_qlora_is_refused_at_preflight_without_bitsandbytes_and_cuda(workspace):
    with pytest.raises(ValueError, match="QLoRA"):
        runs.prepare_run(workspace, recipe("lora", ["adapter.method=qlora"]))


def test_unmarked_chat_template_is_refused_before_and_at_run_start(workspace):
    with pytest.raises(ValueError, match="generation"):
        runs.prepare_run(workspace, recipe("lora", [f"config.chat_template={UNMARKED_TEMPLATE}"]))
    # Allowed when no assistant mask is needed.
    runs.prepare_run(workspace, recipe("lora", [f"config.chat_template={UNMARKED_TEMPLATE}",
                                                "config.assistant_only_loss=false"]))
    # The model's own template is checked when the tokenizer is loaded: a clear message, not a trl traceback.
    from transformers import AutoTokenizer

    from studio.models.embedded import ensure_embedded_model
    from studio_train_sft.templates import prepare_template

    tokenizer = AutoTokenizer.from_pretrained(ensure_embedded_model("tiny"))
    tokenizer.chat_template = UNMARKED_TEMPLATE
    with pytest.raises(ValueError, match="config.assistant_only_loss: the chat template of embedded has no"):
        prepare_template(tokenizer, SFTOptions(), "embedded")
    assert prepare_template(tokenizer, SFTOptions(chat_template="chatml"), "embedded") == "chatml"


def test_options_that_cannot_work_are_refused(workspace):
    with pytest.raises(ValueError, match="prompt tuning prepends"):
        runs.prepare_run(workspace, recipe("prompt_tuning", ["config.padding_free=true", "training.max_length=null"]))
    with pytest.raises(ValueError, match="padding_free"):
        runs.prepare_run(workspace, recipe("lora", ["config.packing=false", "config.padding_free=true"]))
    with pytest.raises(ValueError, match="packing fills rows"):
        runs.prepare_run(workspace, recipe("lora", ["training.max_length=null"]))
    with pytest.raises(ValueError, match="packign"):
        runs.prepare_run(workspace, recipe("lora", ["config.packign=false"]))
