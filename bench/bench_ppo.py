"""The studio's PPO against trl 1.12.0's ``trl.experimental.ppo.PPOTrainer``, side by side in one run.

    .venv/bin/python bench/bench_ppo.py [--quick] [--out bench/results/ppo.json] [--threads 1]

Both sides train on the same setup: the model folder, the prompts (``datasets/train/rl_prompts.jsonl``
rendered by the chat template with the generation prompt; trl gets them left-padded to one length),
the planted reward (``bench/ppo_common.py``: the share of a response's tokens in a fixed half of the
vocabulary; a reward module for trl, a reward source for the studio), batch size, mini-batches, PPO
epochs, response length, the stop token (the tokenizer's EOS alone: trl takes one), learning rate
(constant), AdamW epsilon, beta and the KL estimator, temperature, the missing-EOS penalty, the value
model's start (the policy with a zero head), the clip ranges, vf_coef, gamma, lambda, the seeds and
no gradient clipping (trl 1.12's PPO loop never clips; ``--max-grad-norm`` turns the studio's on).
Full fine-tuning and LoRA (r 8, alpha 16, all linear layers). Not the same, by design: the studio
puts the score on the EOS token, trl on the first pad after it.

Two parts:
- **learning**: the embedded model, enough updates for the score to climb;
- **speed and memory**: a randomly initialised Llama of about 58M parameters (the embedded tokenizer),
  a few updates, where the model and not Python dominates (skipped by ``--quick``).

Reported per part, mode and side: reward gain per episode (mean score of the last k updates minus
the first k, over the episodes between), seconds per episode of the training loop (model loading
excluded), and peak memory = bytes of weights + gradients + optimiser state held (unique tensor
storages over every live module and optimiser, read after the first update) + the peak RSS above
the process's RSS once its imports were done. The RSS part counts activations, the KV cache and
allocator slack; weights are in both terms, on both sides alike. Ratios are studio / trl.

Each side runs in its own process with the same thread count: trl in its isolated venv
(``bench/reference_env.py``, ``bench/ppo_reference_trl.py``), the studio as this file with
``--ours-child``. Nothing from trl is a dependency of the studio.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
sys.path.insert(0, str(BENCH))

from ppo_common import (gain_per_episode, good_token_ids, held_tensor_bytes, import_model_libraries,  # noqa: E402
                        planted_share, rss_baseline, rss_peak, timed_training)

TRL = ("trl-1.12.0", [["torch==2.13.0"], ["trl==1.12.0", "transformers>=5,<6", "peft"]])
PROMPTS = ROOT / "datasets" / "train" / "rl_prompts.jsonl"
LORA = {"r": 8, "alpha": 16, "target_modules": "all-linear"}
# A random Llama of ~58M parameters on the embedded tokenizer: few wide layers, so matrix work dominates.
BIG_LLAMA = dict(hidden_size=768, intermediate_size=2048, num_hidden_layers=8, num_attention_heads=12,
                 num_key_value_heads=12, max_position_embeddings=1024, tie_word_embeddings=True)
GOALS = {"gain": 1.0, "episodes_per_s": 1.5, "lora_peak_memory": 0.5}


# ---------------------------------------------------------------------------------------------------
# The studio's side (runs with the studio's python)

class PlantedScores:
    """The planted rule as a source of the PPO back-end's weighted reward."""

    names = ["planted"]

    def __init__(self, good: list[int], end_id: int, pad_id: int):
        self.good, self.end_id, self.pad_id = set(good), end_id, pad_id

    def scores(self, episodes) -> dict[str, list[float]]:
        return {"planted": [planted_share(ids, self.good, self.end_id, self.pad_id) for ids in episodes.response_ids]}


def ppo_options(spec: dict):
    from studio_train_ppo import PPOOptions

    return PPOOptions(reward_funcs=["format_chatml"],  # a valid config; the planted source replaces it
                      response_length=spec["response_length"], temperature=spec["temperature"],
                      kl_coef=spec["kl_coef"], kl_estimator=spec["kl_estimator"],
                      missing_eos_penalty=spec["missing_eos_penalty"], num_ppo_epochs=spec["num_ppo_epochs"],
                      num_mini_batches=spec["num_mini_batches"], cliprange=spec["cliprange"],
                      cliprange_value=spec["cliprange_value"], vf_coef=spec["vf_coef"], gamma=spec["gamma"],
                      lam=spec["lam"], value_init="policy")


def ours_child(spec_path: str, out_path: str) -> None:
    import torch

    spec = json.loads(Path(spec_path).read_text())
    torch.set_num_threads(spec["threads"])
    from studio.recipes.train import AdapterSettings
    from studio_train_ppo.models import ModelSpec, WeightedReward, load_ppo_models
    from studio_train_ppo.trainer import LoopSettings, PPOLoop, PromptRow

    import_model_libraries()
    baseline = rss_baseline()
    load_start = time.perf_counter()
    options = ppo_options(spec)
    adapter = AdapterSettings(method="lora", r=spec["lora"]["r"], alpha=spec["lora"]["alpha"],
                              target_modules=spec["lora"]["target_modules"]) if spec["lora"] else None
    models, _ = load_ppo_models(ModelSpec(policy=spec["model"], options=options, adapter=adapter, seed=spec["seed"],
                                          model_kwargs={"dtype": torch.float32}))
    tokenizer = models.tokenizer
    reward = WeightedReward([PlantedScores(spec["good"], tokenizer.eos_token_id, tokenizer.pad_token_id)])
    prompts = [PromptRow(input_ids=ids, messages=messages, columns={})
               for ids, messages in zip(spec["prompts"], spec["messages"])]
    settings = LoopSettings(updates=spec["updates"], batch_size=spec["batch_size"],
                            learning_rate=spec["learning_rate"], seed=spec["seed"], scheduler="constant",
                            max_grad_norm=spec["max_grad_norm"])
    records: list[dict] = []
    memory: dict = {}
    scan = {"seconds": 0.0}

    def emit(name, **fields):
        if name != "metrics":
            return
        records.append(dict(fields.get("values", fields)))
        if not memory:  # after the first update: the optimiser has its state
            start = time.perf_counter()
            memory.update(held_tensor_bytes())
            scan["seconds"] += time.perf_counter() - start

    loop = PPOLoop(models, reward, prompts, options, settings, emit=emit)
    load_seconds = time.perf_counter() - load_start
    seconds, cpu_seconds, profile = timed_training(loop.run, spec.get("profile", False))
    seconds -= scan["seconds"]
    cpu_seconds -= scan["seconds"]
    out = {
        "side": "studio",
        "scores": [r["objective/scores"] for r in records],
        "kl": [r["objective/kl"] for r in records],
        "ratio": [r.get("val/ratio") for r in records],
        "eos_rate": [r.get("val/eos_rate") for r in records],
        "seconds": seconds, "cpu_seconds": cpu_seconds, "load_seconds": load_seconds,
        "episodes": len(records) * spec["batch_size"],
        "memory": memory, "rss_baseline": baseline, "rss_peak": rss_peak(), "profile": profile,
        "trainable_parameters": sum(p.numel() for p in models.parameters_to_train() if p.requires_grad),
    }
    Path(out_path).write_text(json.dumps(out))


# ---------------------------------------------------------------------------------------------------
# Setup shared by both sides

def load_prompts(tokenizer, path: Path = PROMPTS) -> tuple[list[list[int]], list[list[dict]]]:
    """Each row's turns before its last assistant turn, rendered with the generation prompt."""
    ids, messages = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        turns = json.loads(line)["messages"]
        while turns and turns[-1]["role"] == "assistant":
            turns = turns[:-1]
        rendered = tokenizer.apply_chat_template(turns, add_generation_prompt=True, tokenize=True, return_dict=False)
        ids.append(list(rendered))
        messages.append(turns)
    return ids, messages


def one_stop_copy(source: str, folder: Path) -> Path:
    """The model folder with its generation config stopping on the tokenizer's EOS alone: trl 1.12
    stops on one token (``stop_token="eos"``), the studio on every EOS id of the generation config
    (the embedded model lists <|end_of_text|> beside <|im_end|>), so both get the one."""
    from transformers import AutoTokenizer

    if folder.exists():
        shutil.rmtree(folder)
    shutil.copytree(source, folder)
    eos = AutoTokenizer.from_pretrained(folder).eos_token_id
    config_path = folder / "generation_config.json"
    config = json.loads(config_path.read_text()) if config_path.is_file() else {}
    config["eos_token_id"] = eos
    config_path.write_text(json.dumps(config, indent=2))
    return folder


def random_llama(folder: Path, tokenizer_folder: str, seed: int) -> Path:
    """A randomly initialised Llama (BIG_LLAMA) with the embedded tokenizer, saved once into ``folder``."""
    if (folder / "config.json").is_file():
        return folder
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_folder)
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **BIG_LLAMA)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               TRANSFORMERS_VERBOSITY="error", HF_HUB_DISABLE_PROGRESS_BARS="1", TRL_EXPERIMENTAL_SILENCE="1")
    return env


def run_side(side: str, python: Path | str, spec: dict, work: Path, tag: str) -> dict:
    spec_path, out_path = work / f"{tag}.spec.json", work / f"{tag}.out.json"
    spec_path.write_text(json.dumps(spec))
    env = child_env()
    threads = str(spec["threads"])
    env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
    if side == "studio":
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "plugins")])
        command = [str(python), str(Path(__file__).resolve()), "--ours-child", str(spec_path), str(out_path)]
    else:
        command = [str(python), str(BENCH / "ppo_reference_trl.py"), str(spec_path), str(out_path)]
    proc = subprocess.run(command, env=env, capture_output=True, text=True, cwd=work)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}",
                "stderr_tail": proc.stderr[-3000:]}
    return json.loads(out_path.read_text())


def summarise(out: dict, batch: int, k: int) -> dict:
    """The figures of one side's run (its raw output stays beside them)."""
    if "error" in out:
        return out
    memory = out["memory"]
    tensors = memory.get("weights", 0) + memory.get("gradients", 0) + memory.get("optimizer", 0)
    rss_above = max(0, out["rss_peak"] - out["rss_baseline"])
    return {**out,
            "gain_per_episode": gain_per_episode(out["scores"], batch, k),
            "first_score": out["scores"][0] if out["scores"] else None,
            "last_score": out["scores"][-1] if out["scores"] else None,
            "seconds_per_episode": out["seconds"] / out["episodes"] if out["episodes"] else None,
            "episodes_per_s": out["episodes"] / out["seconds"] if out["seconds"] else None,
            "cpu_seconds_per_episode": out["cpu_seconds"] / out["episodes"] if out["episodes"] else None,
            "episodes_per_cpu_s": out["episodes"] / out["cpu_seconds"] if out["cpu_seconds"] else None,
            "tensor_bytes": tensors, "rss_above_baseline": rss_above, "peak_memory": tensors + rss_above}


def ratios(ours: dict, ref: dict) -> dict:
    def ratio(key):
        a, b = ours.get(key), ref.get(key)
        return round(a / b, 3) if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b else None

    return {key: ratio(key) for key in ("gain_per_episode", "episodes_per_s", "seconds_per_episode",
                                        "episodes_per_cpu_s", "cpu_seconds_per_episode", "peak_memory",
                                        "tensor_bytes", "rss_above_baseline")}


def goals(part: str, mode: str, r: dict) -> dict:
    """The issue's goals against a row's ratios (the gain only where the reward can be learned: the
    random Llama of the speed part learns nothing in a few updates)."""
    met = {}
    if part == "learning" and r.get("gain_per_episode") is not None:
        met["gain >= trl"] = r["gain_per_episode"] >= GOALS["gain"]
    if r.get("episodes_per_cpu_s") is not None:  # CPU seconds: other processes' load moves them least
        met["episodes/s >= 1.5x trl"] = r["episodes_per_cpu_s"] >= GOALS["episodes_per_s"]
    if mode == "lora" and r.get("peak_memory") is not None:
        met["LoRA peak memory <= 0.5x trl"] = r["peak_memory"] <= GOALS["lora_peak_memory"]
    return met


def base_spec(args, model: str, prompts, messages, good, updates: int, batch: int) -> dict:
    return {"model": model, "prompts": prompts, "messages": messages, "good": good, "threads": args.threads,
            "seed": args.seed, "updates": updates, "batch_size": batch, "num_mini_batches": args.mini_batches,
            "num_ppo_epochs": args.ppo_epochs, "response_length": args.response_length,
            "temperature": args.temperature, "missing_eos_penalty": args.missing_eos_penalty,
            "learning_rate": args.learning_rate, "kl_coef": args.kl_coef, "kl_estimator": "k1",
            "cliprange": 0.2, "cliprange_value": 0.2, "vf_coef": 0.1, "gamma": 1.0, "lam": 0.95,
            "adam_epsilon": 1e-5, "lora": None, "profile": args.profile, "max_grad_norm": args.max_grad_norm}


def combine(runs: list[dict]) -> dict:
    """One side's figures over its seeds: the mean gain and scores, the seconds of all runs over all
    their episodes, the largest memory; the first failure if any run failed."""
    failed = [r for r in runs if "error" in r]
    if failed:
        return failed[0]
    mean = lambda key: sum(r[key] for r in runs) / len(runs)  # noqa: E731
    seconds, episodes = sum(r["seconds"] for r in runs), sum(r["episodes"] for r in runs)
    cpu_seconds = sum(r["cpu_seconds"] for r in runs)
    memory = {key: max(r["memory"].get(key, 0) for r in runs) for key in ("weights", "gradients", "optimizer")}
    return {"runs": runs, "seeds": len(runs), "gain_per_episode": mean("gain_per_episode"),
            "first_score": mean("first_score"), "last_score": mean("last_score"), "seconds": seconds,
            "cpu_seconds": cpu_seconds, "episodes": episodes, "seconds_per_episode": seconds / episodes,
            "episodes_per_s": episodes / seconds, "cpu_seconds_per_episode": cpu_seconds / episodes,
            "episodes_per_cpu_s": episodes / cpu_seconds,
            "memory": memory, "tensor_bytes": max(r["tensor_bytes"] for r in runs),
            "rss_above_baseline": max(r["rss_above_baseline"] for r in runs),
            "peak_memory": max(r["peak_memory"] for r in runs),
            "trainable_parameters": runs[0]["trainable_parameters"]}


def run_part(part: str, args, model: str, prompts, messages, good, updates: int, batch: int, seeds: int,
             trl_python: Path, work: Path, log) -> list[dict]:
    rows = []
    k = max(1, updates // 4)
    for mode in args.modes:
        runs: dict[str, list[dict]] = {"trl": [], "studio": []}
        for seed in range(args.seed, args.seed + seeds):
            spec = base_spec(args, model, prompts, messages, good, updates, batch)
            spec.update(seed=seed, lora=dict(LORA) if mode == "lora" else None)
            for side, python in (("trl", trl_python), ("studio", sys.executable)):  # alternating: load drifts alike
                log(f"{part} / {mode} / {side} / seed {seed}: {updates} updates of {batch} ...")
                run = summarise(run_side(side, python, spec, work, f"{part}-{mode}-{side}-{seed}"), batch, k)
                if "error" in run:
                    log(f"  failed: {run['error']}")
                runs[side].append(run)
        sides = {side: combine(found) for side, found in runs.items()}
        row = {"part": part, "mode": mode, "model": model, "updates": updates, "batch_size": batch, "k": k,
               "seeds": seeds, **sides}
        if not any("error" in s for s in sides.values()):
            row["ratios"] = ratios(sides["studio"], sides["trl"])
            row["goals"] = goals(part, mode, row["ratios"])
        rows.append(row)
    return rows


def print_table(result: dict) -> None:
    mib = 1024 * 1024
    print(f"\nPPO: studio vs trl {result['trl_version']}  ({result['machine']['cpus']} CPUs, {result['threads']} "
          f"thread(s) per side; scores and gains are means over the seeds; ratio = studio / trl)")
    print(f"{'part':9} {'mode':5} {'side':7} {'score first>last':>17} {'gain/ep':>9} {'s/ep':>7} {'cpu/ep':>7} "
          f"{'weights':>8} {'grads':>7} {'optim':>7} {'RSS+':>7} {'peak MiB':>9}")
    for row in result["rows"]:
        for side in ("trl", "studio"):
            s = row[side]
            head = f"{row['part']:9} {row['mode']:5} {side:7}"
            if side == "trl":
                print(f"{row['part']} / {row['mode']}: {row['updates']} updates of {row['batch_size']}, "
                      f"{row['seeds']} seed(s), gain over the first and last {row['k']} updates")
            if "error" in s:
                print(f"{head} ERROR {s['error']}")
                continue
            m = s["memory"]
            print(f"{head} {s['first_score']:7.3f} > {s['last_score']:7.3f} {s['gain_per_episode']:9.2e} "
                  f"{s['seconds_per_episode']:7.3f} {s['cpu_seconds_per_episode']:7.3f} "
                  f"{m.get('weights', 0) / mib:8.1f} {m.get('gradients', 0) / mib:7.1f} {m.get('optimizer', 0) / mib:7.1f} "
                  f"{s['rss_above_baseline'] / mib:7.1f} {s['peak_memory'] / mib:9.1f}")
        if "ratios" in row:
            r = row["ratios"]
            shown = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
            print(f"{'':9} {'':5} {'ratio':7} {'':17} {shown(r['gain_per_episode']):>9} "
                  f"{shown(r['seconds_per_episode']):>7} {shown(r['cpu_seconds_per_episode']):>7} {'':32} "
                  f"{shown(r['peak_memory']):>9}   " + ", ".join(f"{k}: {'yes' if v else 'NO'}"
                                                              for k, v in row["goals"].items()))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="the embedded model's learning part only, fewer updates: a smoke check")
    parser.add_argument("--out", default=str(BENCH / "results" / "ppo.json"))
    parser.add_argument("--work", default=None, help="working folder (default: a fresh one beside --out)")
    parser.add_argument("--modes", nargs="+", choices=("full", "lora"), default=["full", "lora"])
    parser.add_argument("--skip", choices=("learning", "speed"), action="append", default=[])
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each side (the same both sides)")
    parser.add_argument("--seed", type=int, default=0, help="the first seed")
    parser.add_argument("--seeds", type=int, default=None,
                        help="learning runs per side and mode, seeds --seed, --seed+1, ...; the gain is their mean "
                             "(default: 3; quick: 1)")
    parser.add_argument("--updates", type=int, default=None, help="learning updates (default: 20; quick: 8)")
    parser.add_argument("--batch-size", type=int, default=16, help="episodes per update in the learning part")
    parser.add_argument("--speed-updates", type=int, default=3)
    parser.add_argument("--speed-batch-size", type=int, default=8)
    parser.add_argument("--mini-batches", type=int, default=2)
    parser.add_argument("--ppo-epochs", type=int, default=4)
    parser.add_argument("--response-length", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--kl-coef", type=float, default=0.05)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--missing-eos-penalty", type=float, default=1.0)
    parser.add_argument("--max-grad-norm", type=float, default=0.0,
                        help="the studio's gradient clipping; 0 = off, as in trl 1.12's PPO loop, which never clips")
    parser.add_argument("--profile", action="store_true",
                        help="run each side's training under cProfile and keep the top functions by cumulative "
                             "time in the JSON (slows both sides: for finding where the seconds go, not for timing)")
    parser.add_argument("--trl-python", default=None,
                        help="python of an installed trl 1.12.0 venv (default: bench/envs, made on first use)")
    args = parser.parse_args(argv)
    if args.updates is None:
        args.updates = 8 if args.quick else 20
    if args.seeds is None:
        args.seeds = 1 if args.quick else 3
    if args.quick and "speed" not in args.skip:
        args.skip.append("speed")
    for name, batch in (("--batch-size", args.batch_size), ("--speed-batch-size", args.speed_batch_size)):
        if batch % args.mini_batches:
            parser.error(f"--mini-batches {args.mini_batches} must divide {name} {batch}")
    if args.updates < 2:
        parser.error("--updates: at least 2 (the gain compares the first updates with the last)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from transformers import AutoTokenizer

    from reference_env import ensure_env
    from studio.models.loading import resolve_model_ref

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    out = Path(args.out)
    work = Path(args.work) if args.work else out.parent / "ppo-work"
    if not args.work and work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    trl_python = Path(args.trl_python) if args.trl_python else ensure_env(*TRL, log=log)
    embedded = str(one_stop_copy(resolve_model_ref("embedded"), work / "embedded-tiny"))
    tokenizer = AutoTokenizer.from_pretrained(embedded)
    prompts, messages = load_prompts(tokenizer)
    good = good_token_ids(len(tokenizer), args.seed, skip=tuple(tokenizer.all_special_ids))
    trl_version = subprocess.run([str(trl_python), "-c", "import trl; print(trl.__version__)"], capture_output=True,
                                 text=True, env=child_env()).stdout.strip()
    result: dict = {"quick": args.quick, "trl_version": trl_version, "threads": args.threads, "seed": args.seed,
                    "settings": {k: v for k, v in base_spec(args, "", [], [], [], 0, 0).items()
                                 if k not in ("model", "prompts", "messages", "good", "updates", "batch_size")},
                    "lora": LORA, "prompts": len(prompts), "good_tokens": len(good), "rows": [],
                    "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                "python": platform.python_version()},
                    "command": " ".join([Path(sys.executable).name, *sys.argv])}
    if "learning" not in args.skip:
        result["rows"] += run_part("learning", args, embedded, prompts, messages, good, args.updates, args.batch_size,
                                   args.seeds, trl_python, work, log)
    if "speed" not in args.skip:
        llama = random_llama(work / "random-llama", embedded, args.seed)
        result["speed_model"] = {"folder": str(llama), **BIG_LLAMA}
        result["rows"] += run_part("speed", args, str(llama), prompts, messages, good, args.speed_updates,
                                   args.speed_batch_size, 1, trl_python, work, log)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print_table(result)
    print(f"\nwritten: {out}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--ours-child":
        ours_child(sys.argv[2], sys.argv[3])
    else:
        sys.exit(main())
