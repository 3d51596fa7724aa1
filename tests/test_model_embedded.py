"""The embedded default model: tokenizer, ChatML template and assistant mask, stopping at the end
of a turn, deterministic builds, the cached copy, the loader and `studio model`."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from studio.models import embedded  # noqa: E402
from studio.models.embedded import (  # noqa: E402
    BOS, END_OF_TEXT, IM_END, IM_START, PAD, build_embedded_model, ensure_embedded_model,
)
from studio.models.loading import load_model, resolve_model_ref  # noqa: E402

STEPS = 20


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return build_embedded_model(tmp_path_factory.mktemp("embedded") / "tiny", pretrain_steps=STEPS)


@pytest.fixture(scope="module")
def tokenizer(tiny):
    return transformers.AutoTokenizer.from_pretrained(tiny)


@pytest.fixture(scope="module")
def model(tiny):
    return transformers.AutoModelForCausalLM.from_pretrained(tiny).eval()


def weights_digest(folder: Path) -> dict[str, list[float]]:
    from safetensors.torch import load_file

    return {name: t.flatten()[:64].tolist() + [float(t.double().sum())]
            for name, t in sorted(load_file(folder / "model.safetensors").items())}


def test_build_writes_a_loadable_model_with_its_card(tiny, tokenizer, model):
    card = json.loads((tiny / "studio_model.json").read_text())
    assert card["created_by"] == "studio model init" and card["size"] == "tiny" and card["seed"] == 0
    assert card["pretrain_steps"] == STEPS and card["builder_version"] == embedded.BUILDER_VERSION
    assert card["parameters"] == sum(p.numel() for p in model.parameters())
    assert 100_000 < card["parameters"] < 400_000
    assert card["vocab_size"] == len(tokenizer) == model.config.vocab_size
    assert 1000 < len(tokenizer) <= 2048
    # The corpus is the repository's samples plus the built-in fallback.
    assert card["corpus"]["files"] >= 10 and card["corpus"]["records"] >= 100
    assert card["corpus"]["tokens"] > 5000
    assert (model.config.hidden_size, model.config.num_hidden_layers, model.config.num_attention_heads) == (64, 2, 4)
    assert model.config.max_position_embeddings == 1024
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token) == (BOS, IM_END, PAD)
    assert model.config.pad_token_id == tokenizer.pad_token_id
    # Plain text gets a BOS, like every rendered conversation.
    assert tokenizer("hello")["input_ids"][0] == tokenizer.bos_token_id
    text = "Ünïcode text, numbers 12345 and emoji 🙂 survive byte-level BPE."
    assert tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"]) == text


def test_pretraining_moves_the_loss_below_chance(tiny, tokenizer):
    card = json.loads((tiny / "studio_model.json").read_text())
    assert card["final_loss"] < math.log(len(tokenizer)) - 0.5


def test_chat_template_renders_every_role(tokenizer):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello!"}, {"role": "tool", "content": "42"}]
    assert tokenizer.apply_chat_template(messages, tokenize=False) == (
        f"{BOS}{IM_START}system\nBe brief.{IM_END}\n{IM_START}user\nHi{IM_END}\n"
        f"{IM_START}assistant\nHello!{IM_END}\n{IM_START}tool\n42{IM_END}\n")
    assert tokenizer.apply_chat_template(messages[:2], tokenize=False, add_generation_prompt=True).endswith(
        f"{IM_START}user\nHi{IM_END}\n{IM_START}assistant\n")
    # Role headers are whole tokens, not spelled out letter by letter.
    for role in ("system", "user", "assistant", "tool"):
        assert len(tokenizer(role, add_special_tokens=False)["input_ids"]) == 1


def test_assistant_mask_covers_exactly_the_answers_and_their_end_of_turn(tokenizer):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"},
                {"role": "assistant", "content": "Hello! How can I help?"}, {"role": "user", "content": "Bye"},
                {"role": "assistant", "content": "Goodbye."}]
    out = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    ids, mask = out["input_ids"], out["assistant_masks"]

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    # Expected spans, from the ChatML text written out by hand (special tokens split cleanly).
    head1 = f"{BOS}{IM_START}system\nBe brief.{IM_END}\n{IM_START}user\nHi there{IM_END}\n{IM_START}assistant\n"
    answer1 = f"Hello! How can I help?{IM_END}"
    head2 = f"\n{IM_START}user\nBye{IM_END}\n{IM_START}assistant\n"
    answer2 = f"Goodbye.{IM_END}"
    start1 = count(head1)
    end1 = start1 + count(answer1)
    start2 = end1 + count(head2)
    end2 = start2 + count(answer2)
    expected = [1 if start1 <= i < end1 or start2 <= i < end2 else 0 for i in range(len(ids))]
    assert len(ids) == end2 + 1  # the final newline after the last end-of-turn
    assert mask == expected
    assert tokenizer.decode([t for t, m in zip(ids, mask) if m]) == answer1 + answer2
    end_of_turn = tokenizer.convert_tokens_to_ids(IM_END)
    assert [i for i, t in enumerate(ids) if t == end_of_turn and mask[i]] == [end1 - 1, end2 - 1]


def test_generation_stops_at_the_end_of_turn(tokenizer, model):
    end_of_turn = tokenizer.convert_tokens_to_ids(IM_END)
    assert tokenizer.eos_token_id == end_of_turn
    assert set(model.generation_config.eos_token_id) == {end_of_turn, tokenizer.convert_tokens_to_ids(END_OF_TEXT)}

    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], add_generation_prompt=True,
                                           return_tensors="pt", return_dict=True)
    start = prompt["input_ids"].shape[1]

    class ForceAt(transformers.LogitsProcessor):
        """Forces ``token`` as the ``step``-th new token; everything else is the model's choice."""

        def __init__(self, step: int, token: int):
            self.step, self.token = step, token

        def __call__(self, input_ids, scores):
            if input_ids.shape[1] - start == self.step:
                scores[:] = -float("inf")
                scores[:, self.token] = 0.0
            return scores

    banned = [[end_of_turn], [tokenizer.convert_tokens_to_ids(END_OF_TEXT)]]
    free = model.generate(**prompt, max_new_tokens=12, do_sample=False, bad_words_ids=banned)
    assert free.shape[1] == start + 12  # without an end-of-turn it runs to the limit
    stopped = model.generate(**prompt, max_new_tokens=12, do_sample=False,
                             logits_processor=transformers.LogitsProcessorList([ForceAt(3, end_of_turn)]))
    assert stopped.shape[1] == start + 4 and stopped[0, -1].item() == end_of_turn


def test_same_seed_same_model_other_seed_other_weights(tmp_path):
    a = build_embedded_model(tmp_path / "a", seed=3, pretrain_steps=4)
    b = build_embedded_model(tmp_path / "b", seed=3, pretrain_steps=4)
    c = build_embedded_model(tmp_path / "c", seed=4, pretrain_steps=4)
    assert (a / "tokenizer.json").read_text() == (b / "tokenizer.json").read_text()
    assert weights_digest(a) == weights_digest(b)
    assert weights_digest(a) != weights_digest(c)
    assert json.loads((a / "studio_model.json").read_text())["final_loss"] == \
        json.loads((b / "studio_model.json").read_text())["final_loss"]


def test_pretrain_steps_zero_skips_training(tmp_path):
    card = json.loads((build_embedded_model(tmp_path / "m", pretrain_steps=0) / "studio_model.json").read_text())
    assert card["pretrain_steps"] == 0 and card["final_loss"] is None


def test_builds_without_the_samples_folder(tmp_path, monkeypatch):
    # A wheel install has no datasets/: the built-in text alone must make a working model.
    import studio.sample_workspace

    monkeypatch.setattr(studio.sample_workspace, "sample_files", lambda: [])
    folder = build_embedded_model(tmp_path / "m", pretrain_steps=2)
    card = json.loads((folder / "studio_model.json").read_text())
    assert card["corpus"]["files"] == 0 and card["corpus"]["conversations"] == len(embedded.FALLBACK_CONVERSATIONS)
    model, tokenizer = load_model(folder)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "Hello"}], add_generation_prompt=True,
                                           return_tensors="pt", return_dict=True)
    assert model.generate(**prompt, max_new_tokens=3, do_sample=False).shape[1] > prompt["input_ids"].shape[1]


def test_samples_no_format_reads_count_as_plain_text(monkeypatch):
    monkeypatch.setattr(embedded, "_dataset_formats", lambda: {})
    conversations, texts, stats = embedded.collect_corpus()
    assert len(conversations) == len(embedded.FALLBACK_CONVERSATIONS) and stats["records"] >= 100
    assert len(texts) > stats["records"] and all(isinstance(t, str) and t.strip() for t in texts)


def test_unknown_size_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown embedded model size"):
        build_embedded_model(tmp_path / "m", size="huge")
    with pytest.raises(ValueError, match="unknown embedded model size"):
        resolve_model_ref("embedded:huge")


def test_ensure_builds_once_reuses_and_rebuilds_on_a_new_builder(tmp_path, monkeypatch):
    monkeypatch.setenv("STUDIO_HOME", str(tmp_path))
    monkeypatch.setitem(embedded.SIZES, "tiny", {**embedded.SIZES["tiny"], "steps": 2})
    calls = []
    real_build = embedded.build_embedded_model
    monkeypatch.setattr(embedded, "build_embedded_model", lambda out, **kw: calls.append(out) or real_build(out, **kw))

    first = ensure_embedded_model("tiny")
    assert first == tmp_path / "models" / "embedded-tiny" and len(calls) == 1
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    assert ensure_embedded_model("tiny") == first and len(calls) == 1
    assert (first / "model.safetensors").stat().st_mtime_ns == stamp
    assert resolve_model_ref("embedded") == str(first)

    monkeypatch.setattr(embedded, "BUILDER_VERSION", embedded.BUILDER_VERSION + 1)
    assert ensure_embedded_model("tiny") == first and len(calls) == 2
    assert json.loads((first / "studio_model.json").read_text())["builder_version"] == embedded.BUILDER_VERSION
    # The temporary build folders are gone: only the model is left.
    assert [p.name for p in (tmp_path / "models").iterdir()] == ["embedded-tiny"]


def test_a_first_build_says_so_first_then_reports_progress_and_a_warm_cache_says_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("STUDIO_HOME", str(tmp_path))
    monkeypatch.setitem(embedded.SIZES, "tiny", {**embedded.SIZES["tiny"], "steps": 2})
    events: list[dict] = []
    path = ensure_embedded_model("tiny", emit=events.append)
    assert {e["event"] for e in events} == {"model_build"}
    assert [e["stage"] for e in events] == ["start", "corpus", "tokenizer", "pretrain", "done"]
    assert events[0] == {"event": "model_build", "stage": "start", "size": "tiny", "path": str(path),
                         "why": "first use", "steps": 2}
    assert (events[3]["step"], events[3]["steps"]) == (2, 2) and events[-1]["parameters"] > 0
    warm: list[dict] = []
    assert ensure_embedded_model("tiny", emit=warm.append) == path and warm == []
    # A model left by an older builder is rebuilt, and the start says why.
    monkeypatch.setattr(embedded, "BUILDER_VERSION", embedded.BUILDER_VERSION + 1)
    rebuilt: list[dict] = []
    ensure_embedded_model("tiny", emit=rebuilt.append)
    assert rebuilt[0]["why"] == "the model builder changed" and rebuilt[-1]["stage"] == "done"


@pytest.mark.slow
def test_the_first_generate_on_a_fresh_machine_says_it_builds_the_model(tmp_path):
    # The whole path a new user takes: `studio generate` starts `studio serve embedded`, which
    # builds the model on first use; its progress reaches the CLI through the run's events.
    import os
    import subprocess
    import sys

    import yaml

    from studio.records import Record, Turn
    from studio.store import Workspace

    env = {**os.environ, "STUDIO_HOME": str(tmp_path / "fresh-home")}
    ws = Workspace.init(tmp_path / "ws")
    ws.write_version("prompts", [Record([Turn("user", "Say hello.")])], operation={"op": "test"})
    recipe = tmp_path / "ws" / "generate.yaml"
    recipe.write_text(yaml.safe_dump({"generator": "responses", "seed_dataset": "prompts", "output": "answers",
                                      "config": {"max_tokens": 4}}))

    def generate() -> tuple[subprocess.CompletedProcess, list[dict]]:
        run = subprocess.run([sys.executable, "-m", "studio", "generate", str(recipe), "--json"], cwd=ws.root,
                             env=env, capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, run.stderr
        run_dir = Path(json.loads(run.stdout)["run_dir"])
        return run, [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]

    first, events = generate()
    builds = [e for e in events if e["event"] == "model_build"]
    assert [e["stage"] for e in builds][0] == "start" and builds[-1]["stage"] == "done"
    assert "pretrain" in {e["stage"] for e in builds}
    names = [e["event"] for e in events]
    assert names.index("serving") < names.index("model_build") < names.index("progress")
    lines = first.stderr.splitlines()
    building = next(i for i, line in enumerate(lines) if line.startswith("building the embedded tiny model (first use"))
    assert any("serving the embedded model" in line for line in lines[:building])
    assert any(line.strip().startswith("pretraining step") for line in lines[building:])
    assert any(line.strip().startswith("built in") for line in lines[building:])

    again, events = generate()  # the cached model: no build, no word of one
    assert "model_build" not in {e["event"] for e in events} and "building the embedded" not in again.stderr


def test_load_model_reads_folders_and_run_folders(tiny, tmp_path):
    model, tokenizer = load_model(tiny)
    assert not model.training and model.device.type == "cpu" and tokenizer.eos_token == IM_END
    run = tmp_path / "run-7"
    shutil.copytree(tiny, run / "final")
    (run / "events.jsonl").write_text("")
    assert resolve_model_ref(run) == str(run / "final")
    model2, _ = load_model(run)
    ids = torch.tensor([tokenizer("hello world")["input_ids"]])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, model2(ids).logits)
    with pytest.raises(ValueError, match="holds no model"):
        resolve_model_ref(tmp_path)
    with pytest.raises(ValueError, match="no model folder"):
        resolve_model_ref(str(tmp_path / "missing"))
    assert resolve_model_ref("org/some-model") == "org/some-model"  # a hub id is passed through


def test_load_model_never_runs_remote_code_unless_asked(tiny, tmp_path):
    folder = tmp_path / "custom"
    shutil.copytree(tiny, folder)
    marker = tmp_path / "custom-code-ran"
    (folder / "evil.py").write_text(f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n"
                                    "raise ImportError('stop here')\n")
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilModel"}
    (folder / "config.json").write_text(json.dumps(config))

    # A known architecture loads with the library's own class; the folder's code is ignored.
    model, _ = load_model(folder)
    assert type(model).__name__ == "LlamaForCausalLM" and not marker.exists()
    # An architecture only the folder's code knows is refused, without a prompt.
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "evil-model"}))
    with pytest.raises(ValueError, match="trust_remote_code"):
        load_model(folder)
    assert not marker.exists()
    # The check can fail: trusting the folder does import its code.
    with pytest.raises(Exception):
        load_model(folder, trust_remote_code=True)
    assert marker.read_text() == "ran"


@pytest.mark.slow
def test_load_model_puts_an_adapter_on_its_base(tiny, tmp_path):
    from peft import LoraConfig, get_peft_model

    base = transformers.AutoModelForCausalLM.from_pretrained(tiny)
    tuned = get_peft_model(base, LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"]))
    torch.manual_seed(0)
    for name, param in tuned.named_parameters():
        if "lora_B" in name:  # LoRA starts as a no-op; make it change the outputs
            torch.nn.init.normal_(param, std=0.5)
    adapter = tmp_path / "run" / "final"
    tuned.save_pretrained(adapter)
    assert json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"] == str(tiny)

    loaded, tokenizer = load_model(tmp_path / "run")
    plain = transformers.AutoModelForCausalLM.from_pretrained(tiny)
    ids = torch.tensor([tokenizer("a small test")["input_ids"]])
    with torch.no_grad():
        got, want, untouched = loaded(ids).logits, tuned.eval()(ids).logits, plain(ids).logits
    assert torch.allclose(got, want, atol=1e-5)
    assert not torch.allclose(got, untouched, atol=1e-3)


def test_cli_model_init_and_info(tiny, tmp_path, capsys):
    from studio.cli import main

    out = tmp_path / "built"
    assert main(["model", "init", str(out), "--pretrain-steps", "2", "--seed", "5"]) == 0
    printed = capsys.readouterr()
    assert f"built tiny embedded model in {out}" in printed.out and "parameters" in printed.out
    assert "pretraining step 2/2" in printed.err
    assert json.loads((out / "studio_model.json").read_text())["seed"] == 5

    assert main(["model", "init", str(out)]) == 1
    assert "not empty" in capsys.readouterr().err

    assert main(["model", "info", str(tiny), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    card = json.loads((tiny / "studio_model.json").read_text())
    assert info["parameters"] == card["parameters"]  # counted from the safetensors header alone
    assert info["model_type"] == "llama" and info["kind"] == "model" and info["tokenizer"]["chat_template"]
    assert main(["model", "info", str(tiny)]) == 0
    assert "parameters: " in capsys.readouterr().out
    assert main(["model", "info", str(tmp_path / "nothing-here")]) == 1
