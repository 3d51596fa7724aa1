"""Benchmark: the studio's SFT back-end (its defaults) against a plain trl SFTTrainer configured
as trl's docs show, on the same model, length-skewed chats, steps, batch size and learning rate.

    .venv/bin/python bench/bench_train_sft.py [--model small] [--steps 30] [--repeats 2] [--threads 1]

Contenders, each in its own subprocess (so peak memory is its own), run alternately --repeats
times (the best run of each is reported: this machine is shared, so the slowest runs measure the
neighbours):
  - trl, padded: ``SFTConfig`` defaults (no packing: each batch padded to its longest example),
    only what a CPU needs changed (bf16=False) and the studio's loss (assistant_only_loss=True,
    which does not change the work done);
  - studio: ``SFTBackend().train(ctx)`` with the default ``SFTOptions`` (examples packed
    best-fit-decreasing into rows of max_length tokens, packed rows kept as separate rows);
  - trl, packed (reference): ``packing=True`` as trl's docs show (bfd, padding-free: the batch
    flattened into one sequence), to show why the studio keeps rows separate without a varlen
    attention kernel.
Both sides: the embedded "small" model by default (3.8M parameters; --model tiny for the 213k
one the recipes use), max_length 256, batch size 8, the same steps, learning rate and seed,
activation checkpointing off (the studio's default; trl's default turns it on, which only trades
time for memory), logging every 10 steps, no checkpoints, no eval, one torch thread each (two per
process oversubscribe a shared 2-core machine and make timings erratic; --threads 0 for torch's
default).

Tokens/second counts the real (non-pad) input tokens of every training forward pass with the
same forward pre-hook on the model in both processes, over the time from the trainer's
on_train_begin to on_train_end; tokens per CPU-second divides by the process's CPU time instead,
which neighbours on a shared machine disturb less. Peak memory is the process's peak resident set
during training (VmHWM, reset when training begins), plus its rise over the resident set at that
moment; "widest step" is the most positions one forward pass held, which activation memory follows.
The data: 1,200 chats, 94% with log-normal answer lengths (median ~12 words) and 6% long ones past
max_length (so a padded batch holding one is max_length wide), generated here with a fixed seed.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "plugins"))
for _key, _value in {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                     "TOKENIZERS_PARALLELISM": "false", "TRANSFORMERS_VERBOSITY": "error",
                     "HF_HUB_DISABLE_PROGRESS_BARS": "1"}.items():
    os.environ.setdefault(_key, _value)

MAX_LENGTH = 256
BATCH = 8
LEARNING_RATE = 1e-3
WORDS = ("apple river stone candle garden window pencil rocket tiger bridge music paper forest silver castle "
         "dragon cloud summer winter orange yellow purple little quiet bright early later people water light").split()
CONTENDERS = ("trl-padded", "studio", "trl-packed")


# --- data -------------------------------------------------------------------------------------

def make_chats(n: int, seed: int = 0) -> list[dict]:
    """Many short answers and a long tail, as chat data tends to have: 94% of answers have a
    log-normal word count (median 12 words), 6% run to 150-450 words (past max_length, so
    truncated: a padded batch holding one is max_length wide)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        if rng.random() < 0.06:
            words = rng.randint(150, 450)
        else:
            words = max(3, min(150, int(math.exp(rng.gauss(2.5, 0.8)))))
        answer = " ".join(rng.choice(WORDS) for _ in range(words)).capitalize() + ". Done."
        turns = [{"role": "user", "content": f"Tell me about the {rng.choice(WORDS)}."},
                 {"role": "assistant", "content": answer}]
        if rng.random() < 0.3:
            turns.insert(0, {"role": "system", "content": "You are a helpful assistant."})
        rows.append({"messages": turns})
    return rows


def length_stats(model_path: str, rows: list[dict]) -> dict:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    lengths = sorted(len(tokenizer.apply_chat_template(r["messages"], tokenize=True, return_dict=True)["input_ids"])
                     for r in rows)
    return {"median": lengths[len(lengths) // 2], "mean": round(sum(lengths) / len(lengths), 1),
            "p90": lengths[int(0.9 * len(lengths))], "max": lengths[-1],
            "over_max_length": round(sum(l > MAX_LENGTH for l in lengths) / len(lengths), 3)}


# --- measuring, inside each contender's process ------------------------------------------------

def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


class Meter:
    """Counts real input tokens of training forward passes; times and measures training."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id
        self.tokens = 0
        self.positions = 0
        self.widest = 0  # most positions in one forward pass: what activation memory follows
        self.started = self.ended = self.cpu_started = self.cpu_ended = 0.0
        self.rss_start_kb = self.peak_kb = 0

    def attach(self, model) -> None:
        def count(module, args, kwargs):
            ids = kwargs.get("input_ids", args[0] if args else None)
            if module.training and ids is not None:
                self.tokens += int((ids != self.pad_token_id).sum())
                self.positions += ids.numel()
                self.widest = max(self.widest, ids.numel())

        model.register_forward_pre_hook(count, with_kwargs=True)

    def callback(self):
        from transformers import TrainerCallback

        meter = self

        class Timing(TrainerCallback):
            def on_train_begin(self, args, state, control, **kwargs):
                try:  # reset the peak resident set, so the peak measured is the training's
                    Path("/proc/self/clear_refs").write_text("5")
                except OSError:
                    pass
                meter.rss_start_kb = _status_kb("VmRSS")
                meter.started = time.perf_counter()
                meter.cpu_started = time.process_time()

            def on_train_end(self, args, state, control, **kwargs):
                meter.ended = time.perf_counter()
                meter.cpu_ended = time.process_time()
                meter.peak_kb = _status_kb("VmHWM")

        return Timing()

    def result(self, **extra) -> dict:
        seconds = self.ended - self.started
        cpu = self.cpu_ended - self.cpu_started
        return {"train_seconds": round(seconds, 3), "cpu_seconds": round(cpu, 3), "tokens": self.tokens,
                "positions": self.positions, "widest_step_positions": self.widest,
                "padding": round(1 - self.tokens / self.positions, 3) if self.positions else None,
                "tokens_per_s": round(self.tokens / seconds, 1) if seconds else None,
                "tokens_per_cpu_s": round(self.tokens / cpu, 1) if cpu else None,
                "peak_rss_mb": round(self.peak_kb / 1024, 1),
                "rss_rise_mb": round((self.peak_kb - self.rss_start_kb) / 1024, 1), **extra}


def child_trl(model_path: str, data: Path, steps: int, packing: bool, out_dir: Path) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    rows = [json.loads(line) for line in data.read_text().splitlines()]
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    meter = Meter(tokenizer.pad_token_id)
    meter.attach(model)
    args = SFTConfig(output_dir=str(out_dir), max_steps=steps, per_device_train_batch_size=BATCH,
                     learning_rate=LEARNING_RATE, max_length=MAX_LENGTH, bf16=False, activation_checkpointing=False,
                     assistant_only_loss=True, packing=packing, logging_steps=10, save_strategy="no",
                     report_to=[], disable_tqdm=True, seed=0, dataloader_num_workers=0)
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                         callbacks=[meter.callback()])
    result = trainer.train()
    return meter.result(train_loss=round(result.training_loss, 4))


def child_studio(model_path: str, data: Path, steps: int, out_dir: Path) -> dict:
    from studio.training.backend_base import TrainContext
    from studio.training.data import load_records
    from studio.recipes.train import TrainRecipe
    from studio_train_sft import SFTBackend, SFTOptions

    recipe = TrainRecipe(backend="sft", model=model_path, dataset=str(data), eval_fraction=0, seed=0,
                         training={"max_steps": steps, "batch_size": BATCH, "learning_rate": LEARNING_RATE,
                                   "max_length": MAX_LENGTH, "logging_steps": 10, "save_steps": 10 ** 9,
                                   "report_to": []})
    records = load_records(str(data)).records
    meter: Meter | None = None

    class BenchContext(TrainContext):  # the real back-end, with the meter attached to its model
        def load_causal_lm(self, location=None):
            nonlocal meter
            model, tokenizer = super().load_causal_lm(location)
            meter = Meter(tokenizer.pad_token_id)
            meter.attach(model)
            return model, tokenizer

        def callbacks(self):
            return super().callbacks() + [meter.callback()]

    ctx = BenchContext(recipe=recipe, config=SFTOptions(), run_dir=out_dir, train_records=records, eval_records=[])
    final = SFTBackend().train(ctx)
    return meter.result(train_loss=round(final["train_loss"], 4))


def child(args) -> None:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench-sft-") as tmp:
        if args.child == "studio":
            result = child_studio(args.model_path, Path(args.data), args.steps, Path(tmp))
        else:
            result = child_trl(args.model_path, Path(args.data), args.steps, args.child == "trl-packed", Path(tmp))
    result["threads"] = torch.get_num_threads()
    print("RESULT " + json.dumps(result))


# --- driver ------------------------------------------------------------------------------------

def run_child(name: str, model_path: str, data: Path, steps: int, threads: int) -> dict:
    command = [sys.executable, __file__, "--child", name, "--model-path", model_path, "--data", str(data),
               "--steps", str(steps), "--threads", str(threads)]
    started = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise SystemExit(f"{name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return {**json.loads(lines[-1][7:]), "process_seconds": round(time.perf_counter() - started, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="small", choices=("tiny", "small"), help="embedded model size")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--chats", type=int, default=1200)
    parser.add_argument("--repeats", type=int, default=2, help="runs per contender (best is reported)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads in each contender (0 = torch's "
                        "default); one by default, as two per process on a shared 2-core machine oversubscribe")
    parser.add_argument("--skip-trl-packed", action="store_true", help="leave out the reference contender")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "train_sft.json")
    parser.add_argument("--child", choices=CONTENDERS, help=argparse.SUPPRESS)
    parser.add_argument("--model-path", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)

    from studio.models.embedded import embedded_info, ensure_embedded_model

    model_path = str(ensure_embedded_model(args.model))
    contenders = [c for c in CONTENDERS if not (args.skip_trl_packed and c == "trl-packed")]
    runs: dict[str, list[dict]] = {c: [] for c in contenders}
    with tempfile.TemporaryDirectory(prefix="bench-sft-data-") as tmp:
        data = Path(tmp) / "skewed_chats.jsonl"
        chats = make_chats(args.chats)
        data.write_text("".join(json.dumps(r) + "\n" for r in chats))
        stats = length_stats(model_path, chats)
        for repeat in range(args.repeats):
            for name in contenders:
                result = run_child(name, model_path, data, args.steps, args.threads)
                runs[name].append(result)
                print(f"  run {repeat + 1} {name:11s} {result['tokens_per_s']:>9,.0f} tok/s  "
                      f"{result['train_seconds']:7.1f} s  peak {result['peak_rss_mb']:7.1f} MB", flush=True)
    # Fastest run of each (the others measured the neighbours too); memory: the highest peak.
    best = {name: max(results, key=lambda r: r["tokens_per_s"]) for name, results in runs.items()}
    best_cpu = {name: max(r["tokens_per_cpu_s"] for r in results) for name, results in runs.items()}
    peak = {name: max(r["peak_rss_mb"] for r in results) for name, results in runs.items()}
    base, ours = best["trl-padded"], best["studio"]
    ratio = ours["tokens_per_s"] / base["tokens_per_s"]
    cpu_ratio = best_cpu["studio"] / best_cpu["trl-padded"]
    params = embedded_info(Path(model_path))["parameters"]
    print(f"\nembedded-{args.model} ({params:,} parameters), {args.steps} steps x batch {BATCH}, max_length "
          f"{MAX_LENGTH}, {args.threads or 'default'} thread(s); {args.chats} chats, tokens per chat: {stats}")
    print(f"{'contender':12s} {'tokens/s':>9s} {'tok/CPU-s':>9s} {'tokens':>7s} {'padding':>7s} {'widest step':>11s} "
          f"{'peak RSS MB':>11s} {'rise MB':>8s}")
    for name, r in best.items():
        print(f"{name:12s} {r['tokens_per_s']:>9,.0f} {best_cpu[name]:>9,.0f} {r['tokens']:>7,d} {r['padding']:>7.0%} "
              f"{r['widest_step_positions']:>11,d} {peak[name]:>11.1f} {r['rss_rise_mb']:>8.1f}")
    print(f"studio / trl padded: {ratio:.2f}x tokens/s ({cpu_ratio:.2f}x per CPU-second), "
          f"peak RSS {peak['studio'] - peak['trl-padded']:+.1f} MB")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "model": f"embedded-{args.model}", "parameters": params, "steps": args.steps, "batch_size": BATCH,
        "max_length": MAX_LENGTH, "learning_rate": LEARNING_RATE, "threads": args.threads or "default",
        "chats": args.chats, "tokens_per_chat": stats, "repeats": args.repeats, "cpu_count": os.cpu_count(),
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()], "best": best,
        "best_tokens_per_cpu_s": best_cpu, "peak_rss_mb": peak, "runs": runs,
        "ratio_tokens_per_s": round(ratio, 3), "ratio_tokens_per_cpu_s": round(cpu_ratio, 3),
        "peak_rss_difference_mb": round(peak["studio"] - peak["trl-padded"], 1),
    }, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
