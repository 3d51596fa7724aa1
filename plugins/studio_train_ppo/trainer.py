"""The PPO update loop.

    models, reward = load_ppo_models(spec)
    loop = PPOLoop(models, reward, prompts, options, settings, emit=emit, cancelled=cancelled)
    final_metrics = loop.run(resume=False)

One update: sample a response for each of ``batch_size`` prompts; score them; reference
log-probs and values; per-token rewards (score on the EOS token, KL penalty on every token);
GAE; ``num_ppo_epochs`` x ``num_mini_batches`` optimisation steps. Metrics go out as ``metrics``
events (``objective/scores``, ``objective/kl``, ``objective/rlhf_reward``, ``policy/approxkl``,
``policy/clipfrac``, ``policy/entropy``, ``val/ratio``, ``val/clipfrac``, ``loss/policy``,
``loss/value``, ``val/eos_rate``, ``val/response_length``, ``rewards/<name>/mean``, ``lr``,
``objective/kl_coef``, ``episode``; ``val/distinct_responses``: the share of distinct responses
in a batch; ``val/ratio_first`` and ``policy/approxkl_first``: the first mini-batch's, which
must be 1 and 0, as nothing has moved yet), with ``progress``, ``checkpoint``, ``alert`` and
``cancelling`` events as the trl back-ends' callback writes them.

Determinism: the prompt order, the sampling generator and the mini-batch shuffles are all
derived from (seed, update number, rank), so a run resumed from a checkpoint draws exactly what
the uninterrupted run drew; the checkpoint holds everything else that changes (weights,
optimiser, scheduler, KL controller, running score statistics, global RNG states).

Several processes (torchrun/accelerate, WORLD_SIZE > 1): a gloo group; each rank samples its
own prompts; gradients, whitening statistics, scores for the running statistics and metrics are
reduced over all ranks; only rank 0 writes checkpoints and the final model.
"""
from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from studio.training.alerts import AlertWatch

from . import core
from .models import Episodes, ModelSpec, load_ppo_models
from .rollout import Rollout, sample, stop_ids

Emit = Callable[..., None]
EVAL_PROMPTS = 16  # held-out prompts sampled and scored after training: a quick read, not a benchmark


@dataclass
class LoopSettings:
    updates: int
    batch_size: int                      # episodes per update on each process
    learning_rate: float
    seed: int = 0
    max_grad_norm: float = 1.0
    scheduler: str = "constant"
    warmup_steps: int = 0
    weight_decay: float = 0.0
    logging_steps: int = 1
    save_steps: int | None = None
    save_total_limit: int | None = 2
    checkpoints_dir: Path | None = None
    precision: str = "fp32"              # fp32, or bf16/fp16 autocast around every forward pass


@dataclass
class PromptRow:
    input_ids: list[int]                 # the chat-rendered prompt with the generation prompt
    messages: list[dict[str, str]]
    columns: dict[str, Any]              # the row's other fields (answer, ...)


# --- several processes ------------------------------------------------------------------------------


class Processes:
    """This process's place among the run's processes, and the reductions the loop needs."""

    def __init__(self):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        if self.world > 1:
            import torch.distributed as dist

            if not dist.is_initialized():
                dist.init_process_group("gloo")
            self.dist = dist

    @property
    def main(self) -> bool:
        return self.rank == 0

    def sum(self, x: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            x = x.clone()
            self.dist.all_reduce(x)
        return x

    def mean(self, x: torch.Tensor) -> torch.Tensor:
        return self.sum(x) / self.world

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """Every rank's ``x`` (same shape on each), concatenated in rank order."""
        if self.world == 1:
            return x
        parts = [torch.empty_like(x) for _ in range(self.world)]
        self.dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)

    def average_gradients(self, params: list[torch.nn.Parameter]) -> None:
        """One all-reduce over a flat buffer of every gradient (not one per tensor)."""
        if self.world == 1:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = self.mean(torch.cat([g.reshape(-1) for g in grads]))
        offset = 0
        for p, g in zip(params, grads):
            p.grad = flat[offset:offset + g.numel()].view_as(g).clone()
            offset += g.numel()

    def broadcast(self, params: list[torch.nn.Parameter]) -> None:
        if self.world > 1:
            with torch.no_grad():
                for p in params:
                    self.dist.broadcast(p.data, src=0)

    def barrier(self) -> None:
        if self.world > 1:
            self.dist.barrier()

    def close(self) -> None:
        if self.world > 1 and self.dist.is_initialized():
            self.dist.destroy_process_group()

    def any(self, flag: bool) -> bool:
        return bool(self.sum(torch.tensor([1.0 if flag else 0.0])).item() > 0)


# --- the loop ---------------------------------------------------------------------------------------


class PPOLoop:
    def __init__(self, models, reward, prompts: list[PromptRow], options, settings: LoopSettings,
                 emit: Emit = lambda name, **fields: None, cancelled: Callable[[], bool] = lambda: False,
                 processes: Processes | None = None):
        from transformers import get_scheduler

        if not prompts:
            raise ValueError("PPO needs at least one prompt")
        if settings.batch_size % options.num_mini_batches:
            raise ValueError(f"num_mini_batches {options.num_mini_batches} must divide batch_size "
                             f"{settings.batch_size}")
        self.models, self.reward, self.prompts = models, reward, prompts
        self.options, self.settings = options, settings
        self.emit, self.cancelled = emit, cancelled
        self.procs = processes or Processes()
        self.params = [p for p in models.parameters_to_train() if p.requires_grad]
        self.procs.broadcast(self.params)
        # Fused AdamW: one kernel for all parameters (4x faster per step than the default path on a
        # 58M-parameter model, one CPU thread); transformers' Trainer uses it too.
        self.optimizer = torch.optim.AdamW(self.params, lr=settings.learning_rate, eps=1e-5,
                                           weight_decay=settings.weight_decay, fused=_fused_ok(self.params))
        steps_per_update = options.num_ppo_epochs * options.num_mini_batches
        self.scheduler = get_scheduler(settings.scheduler, self.optimizer,
                                       num_warmup_steps=settings.warmup_steps * steps_per_update,
                                       num_training_steps=settings.updates * steps_per_update)
        self.kl_ctl = (core.AdaptiveKL(options.kl_coef, options.kl_target, options.kl_horizon)
                       if options.adaptive_kl else core.FixedKL(options.kl_coef))
        self.moments = core.RunningMoments()
        self.alerts = AlertWatch(kl_bound=options.kl_alert)
        tokenizer = models.tokenizer
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.update = 0                  # updates done
        self.last_metrics: dict[str, float] = {}

    def autocast(self):
        """The forward passes' precision: bf16/fp16 autocast (weights and optimiser stay float32),
        or nothing for fp32."""
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.settings.precision)
        if dtype is None or not self.params:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.params[0].device.type, dtype=dtype)

    # -- data and seeds ---------------------------------------------------------------------------
    def batch_rows(self, update: int) -> list[PromptRow]:
        """This rank's prompts for ``update``: the global stream of episodes walks the prompts in a
        fresh seeded order each epoch, the ranks taking consecutive slices of each global batch."""
        n, per_rank = len(self.prompts), self.settings.batch_size
        start = (update * self.procs.world + self.procs.rank) * per_rank
        rows, orders = [], {}
        for index in range(start, start + per_rank):
            epoch, position = divmod(index, n)
            if epoch not in orders:
                orders[epoch] = torch.randperm(n, generator=self.seeded(epoch, "data")).tolist()
            rows.append(self.prompts[orders[epoch][position]])
        return rows

    def seeded(self, number: int, purpose: str) -> torch.Generator:
        """A generator for update (or data epoch) ``number``: derived, never carried, so a resumed
        run draws what the uninterrupted one drew. The data order is shared by every rank (each
        takes its own slice of it); sampling and shuffles differ per rank."""
        offsets = {"data": 0, "sample": 1, "shuffle": 2, "eval": 3}
        rank = 0 if purpose == "data" else self.procs.rank
        seed = (self.settings.seed * 1_000_003 + number * 4 + offsets[purpose]) * 64 + rank
        return torch.Generator().manual_seed(seed % (2 ** 63))

    # -- one update -------------------------------------------------------------------------------
    def rollout(self, rows: list[PromptRow], generator: torch.Generator) -> tuple[Rollout, Episodes]:
        tokenizer = self.models.tokenizer
        with self.models.generator() as lm, self.autocast():
            rollout = sample(lm, [r.input_ids for r in rows], pad_id=self.pad_id, stop=stop_ids(lm, tokenizer),
                             response_length=self.options.response_length, temperature=self.options.temperature,
                             generator=generator)
        response_ids = rollout.response_ids()
        ended = rollout.ended.tolist()
        completions = [tokenizer.decode(ids[:-1] if done else ids, skip_special_tokens=False)
                       for ids, done in zip(response_ids, ended)]
        columns: dict[str, list[Any]] = {}
        for row in rows:
            for key, value in row.columns.items():
                columns.setdefault(key, []).append(value)
        episodes = Episodes(query_responses=rollout.query_responses, attention_mask=rollout.attention_mask,
                            position_ids=rollout.position_ids, context_length=rollout.context_length,
                            response_ids=response_ids, prompts=[r.messages for r in rows], completions=completions,
                            ended=ended, columns=columns)
        return rollout, episodes

    def response_logits(self, logits: torch.Tensor, length: int) -> torch.Tensor:
        """The logits that predict each of the ``length`` response tokens, divided by the
        temperature (counted from the end, so models may return the last positions only)."""
        return _response_part(logits, length) / self.options.temperature

    def score(self, episodes: Episodes, ended: torch.Tensor,
              learn: bool = True) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
        """``(scores after the EOS penalty, the scores the rewards use, per-source means)``;
        ``learn``: fold the scores into the running statistics (not for evaluation)."""
        o = self.options
        raw, per_source = self.reward.score(episodes)
        scores = torch.as_tensor(raw, dtype=torch.float32).reshape(-1).to(ended.device)
        if o.missing_eos_penalty is not None:
            scores = scores - o.missing_eos_penalty * (~ended).float()
        used = scores
        if o.normalize_reward:
            if learn:
                # Every rank folds in the global batch, so every rank keeps the same statistics.
                self.moments.update(self.procs.gather(scores.cpu()))
            used = scores / max(self.moments.std, 1e-8)
        if o.reward_clip is not None:
            used = used.clamp(-o.reward_clip, o.reward_clip)
        return scores, used, per_source

    def step(self, update: int) -> dict[str, float]:
        o, m = self.options, self.models
        rollout, episodes = self.rollout(self.batch_rows(update), self.seeded(update, "sample"))
        qr, am, pos = rollout.query_responses, rollout.attention_mask, rollout.position_ids
        responses, mask = rollout.responses, rollout.response_mask
        scores, used_scores, per_source = self.score(episodes, rollout.ended)

        with torch.no_grad(), self.autocast():
            length = responses.shape[1]
            logits = self.response_logits(m.policy_logits(qr, am, pos, length + 1), length)
            old_logprobs = core.logprobs_from_logits(logits, responses)
            del logits
            ref_logits = self.response_logits(m.reference_logits(qr, am, pos, length + 1), length)
            ref_logprobs = core.logprobs_from_logits(ref_logits, responses)
            del ref_logits
            old_values = _response_part(m.values(qr, am, pos), length).float()
            kl = core.kl_per_token(old_logprobs, ref_logprobs, o.kl_estimator) * mask
            beta = self.kl_ctl.value
            non_score = -beta * kl
            rewards = core.place_score(non_score, used_scores, mask)
            if o.whiten_rewards:
                rewards = core.masked_whiten(rewards, mask, shift_mean=False, reduce=self.procs.sum)
            advantages, returns = core.gae(rewards, old_values, mask, o.gamma, o.lam)
            advantages = core.masked_whiten(advantages, mask, reduce=self.procs.sum)

        stats = self.optimise(qr, am, pos, responses, mask, old_logprobs, old_values, advantages, returns,
                              update)
        kl_sum = kl.sum(1)
        self.kl_ctl.update(self.procs.mean(kl_sum.mean()).item(), self.settings.batch_size * self.procs.world)
        lengths = mask.sum(1).float()
        values = {
            "objective/scores": scores.mean(),
            "objective/kl": kl_sum.mean(),
            "objective/non_score_reward": non_score.sum(1).mean(),
            "objective/rlhf_reward": (used_scores + non_score.sum(1)).mean(),
            "objective/entropy": (-old_logprobs * mask).sum(1).mean(),
            "val/eos_rate": rollout.ended.float().mean(),
            "val/response_length": lengths.mean(),
            "val/distinct_responses": torch.tensor(len(set(map(tuple, episodes.response_ids))) / len(lengths)),
            **stats,
            **{_source_metric(name): torch.tensor(float(v)) for name, v in per_source.items()},
        }
        names = sorted(values)
        reduced = self.procs.mean(torch.stack([torch.as_tensor(values[k]).detach().float().cpu() for k in names]))
        out = {k: float(v) for k, v in zip(names, reduced.tolist())}
        out["objective/kl_coef"] = beta
        out["lr"] = self.scheduler.get_last_lr()[0]
        out["episode"] = (update + 1) * self.settings.batch_size * self.procs.world
        if o.log_responses:
            for text, score in list(zip(episodes.completions, scores.tolist()))[:o.log_responses]:
                print(f"[update {update + 1}] {score:+.3f} {text!r}", flush=True)
        return out

    def optimise(self, qr, am, pos, responses, mask, old_logprobs, old_values, advantages, returns,
                 update: int) -> dict[str, torch.Tensor]:
        """``num_ppo_epochs`` passes of shuffled mini-batches; the loss and clipping statistics
        averaged over every mini-batch step of the update."""
        o, m = self.options, self.models
        batch, length = responses.shape
        size = batch // o.num_mini_batches
        shuffle = self.seeded(update, "shuffle")
        totals: dict[str, list[torch.Tensor]] = {}
        for _ in range(o.num_ppo_epochs):
            order = torch.randperm(batch, generator=shuffle)
            for start in range(0, batch, size):
                idx = order[start:start + size]
                mb_mask = mask[idx]
                with self.autocast():
                    logits = self.response_logits(m.policy_logits(qr[idx], am[idx], pos[idx], length + 1), length)
                    values = _response_part(m.values(qr[idx], am[idx], pos[idx]), length).float()
                logprobs = core.logprobs_from_logits(logits, responses[idx])
                pl = core.policy_loss(logprobs, old_logprobs[idx], advantages[idx], mb_mask, o.cliprange)
                vl, v_clipfrac = core.value_loss(values, old_values[idx], returns[idx], mb_mask, o.cliprange_value)
                # Without a bonus the entropy is only reported: keep it out of the backward pass.
                with torch.set_grad_enabled(o.entropy_coef > 0):
                    entropy = core.masked_mean(core.entropy_from_logits(logits), mb_mask)
                loss = pl.loss + o.vf_coef * vl - o.entropy_coef * entropy
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.procs.average_gradients(self.params)
                if self.settings.max_grad_norm:
                    torch.nn.utils.clip_grad_norm_(self.params, self.settings.max_grad_norm)
                self.optimizer.step()
                self.scheduler.step()
                for name, value in (("policy/approxkl", pl.approxkl), ("policy/clipfrac", pl.clipfrac),
                                    ("policy/entropy", entropy), ("val/ratio", pl.ratio), ("val/clipfrac", v_clipfrac),
                                    ("loss/policy", pl.loss), ("loss/value", vl)):
                    totals.setdefault(name, []).append(value.detach().float())
                if "val/ratio_first" not in totals:
                    totals["val/ratio_first"] = [pl.ratio.detach().float()]
                    totals["policy/approxkl_first"] = [pl.approxkl.detach().float()]
        return {name: torch.stack(v).mean() for name, v in totals.items()}

    # -- the run ----------------------------------------------------------------------------------
    def run(self, resume: bool = False) -> dict[str, Any]:
        s = self.settings
        if resume:
            self.restore()
        self.emit("train_begin", step=self.update, max_steps=s.updates, epochs=self._epoch(self.update))
        started = last_progress = time.time()
        while self.update < s.updates:
            metrics = self.step(self.update)
            self.update += 1
            step = self.update
            self.last_metrics = metrics
            cancelling = self.procs.any(self.cancelled())
            now = time.time()
            if cancelling or now - last_progress >= 1.0 or step == s.updates or step == 1:
                last_progress = now
                self.emit("progress", step=step, max_steps=s.updates, epoch=self._epoch(step),
                          elapsed=round(now - started, 2))
            if step == 1 or step % max(1, s.logging_steps) == 0 or step == s.updates:
                self.emit("metrics", step=step, epoch=self._epoch(step), values=metrics)
                for alert in self.alerts.feed(step, metrics):
                    self.emit("alert", **alert)
            if cancelling or (s.save_steps and step % s.save_steps == 0):
                self.save_checkpoint()
            if cancelling:
                self.emit("cancelling", step=step)
                break
        return dict(self.last_metrics)

    def _epoch(self, updates: int) -> float:
        return round(updates * self.settings.batch_size * self.procs.world / len(self.prompts), 4)

    # -- checkpoints ------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {"update": self.update, "models": self.models.train_state(),
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "kl_controller": self.kl_ctl.state_dict(), "moments": self.moments.state_dict(),
                "alerts": {"history": self.alerts.history, "fired": sorted(self.alerts.fired)},
                "rng": {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()},
                "last_metrics": self.last_metrics}

    def load_state(self, state: dict[str, Any]) -> None:
        self.update = int(state["update"])
        self.models.load_train_state(state["models"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.kl_ctl.load_state_dict(state["kl_controller"])
        self.moments.load_state_dict(state["moments"])
        self.alerts.history = state["alerts"]["history"]
        self.alerts.fired = {tuple(f) for f in state["alerts"]["fired"]}
        torch.set_rng_state(state["rng"]["torch"])
        random.setstate(state["rng"]["python"])
        np.random.set_state(state["rng"]["numpy"])
        self.last_metrics = state["last_metrics"]

    def save_checkpoint(self) -> None:
        """``checkpoint-<N>/state.pt``, then ``trainer_state.json`` last: a checkpoint counts as
        complete (``adapters.last_checkpoint``) only once everything before it is on disk."""
        folder_root = self.settings.checkpoints_dir
        if folder_root is None:
            return
        folder = folder_root / f"checkpoint-{self.update}"
        if self.procs.main:
            folder.mkdir(parents=True, exist_ok=True)
            torch.save(self.state(), folder / "state.pt")
            (folder / "trainer_state.json").write_text(json.dumps(
                {"global_step": self.update, "max_steps": self.settings.updates, "backend": "ppo",
                 "kl_coef": self.kl_ctl.value}, indent=2), encoding="utf-8")
            self._rotate(folder_root)
            self.emit("checkpoint", step=self.update, path=str(folder))
        self.procs.barrier()

    def _rotate(self, root: Path) -> None:
        from studio.training.adapters import checkpoints

        limit = self.settings.save_total_limit
        if not limit:
            return
        complete = [c for c in checkpoints(root) if c["complete"]]
        for old in complete[:-limit]:
            shutil.rmtree(old["path"], ignore_errors=True)

    def restore(self) -> bool:
        from studio.training.adapters import last_checkpoint

        found = last_checkpoint(self.settings.checkpoints_dir) if self.settings.checkpoints_dir else None
        if found is None:
            self.emit("warning", message="no checkpoint yet: starting from update 0")
            return False
        self.load_state(torch.load(found / "state.pt", weights_only=False))
        self.emit("info", message=f"resumed from {found} (update {self.update})")
        return True

    # -- evaluation -------------------------------------------------------------------------------
    def evaluate(self, prompts: list[PromptRow]) -> dict[str, float]:
        """Sample and score responses to held-out prompts (no update); ``eval_*`` metrics."""
        if not prompts:
            return {}
        rows = prompts[:EVAL_PROMPTS]
        rollout, episodes = self.rollout(rows, self.seeded(self.update, "eval"))
        scores, _, per_source = self.score(episodes, rollout.ended, learn=False)
        out = {"eval_objective/scores": float(scores.mean()),
               "eval_val/eos_rate": float(rollout.ended.float().mean()),
               "eval_val/response_length": float(rollout.response_mask.sum(1).float().mean())}
        out.update({"eval_" + _source_metric(name): float(v) for name, v in per_source.items()})
        return out


def _precision(setting: str) -> str:
    """The recipe's ``training.precision``, with ``auto`` meaning bf16 on a GPU that has it and
    float32 otherwise (as for the trl back-ends)."""
    if setting != "auto":
        return setting
    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"


def _fused_ok(params: list[torch.Tensor]) -> bool:
    """Fused AdamW takes float parameters on CPU or CUDA only."""
    return bool(params) and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)


def _response_part(x: torch.Tensor, length: int) -> torch.Tensor:
    """Positions ``-(length + 1) .. -2`` of a ``[B, T, ...]`` output: the ones whose next token
    is a response token (the prediction for response token t sits one position before it)."""
    return x[:, -(length + 1):-1]


def _source_metric(name: str) -> str:
    """``rewards/<name>/mean`` for a reward source's mean (sources may give the full name)."""
    return name if name.startswith("rewards/") else f"rewards/{name}/mean"


# --- the back-end ------------------------------------------------------------------------------------


def prompt_rows(records, tokenizer) -> list[PromptRow]:
    """Chat-rendered prompts (with the generation prompt) from any record with a user turn."""
    from studio.training.data import prompt_row

    rows = []
    for record in records:
        row = prompt_row(record)
        ids = tokenizer.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=True,
                                            return_dict=False)
        rows.append(PromptRow(input_ids=list(ids), messages=row["prompt"],
                              columns={k: v for k, v in row.items() if k != "prompt"}))
    return rows


def _policy_location(ctx, procs: Processes) -> str:
    """The policy's folder; an adapter run (an SFT LoRA, say) is merged into its base first,
    once, by rank 0, into the run folder."""
    location = ctx.model_location()
    if not (Path(location) / "adapter_config.json").is_file():
        return location
    merged = ctx.run_dir / "merged-policy"
    if procs.main and not (merged / "config.json").is_file():
        model, tokenizer = ctx.load_causal_lm(location)
        model.save_pretrained(str(merged))
        tokenizer.save_pretrained(str(merged))
    procs.barrier()
    return str(merged)


def _reward_location(ctx) -> str | None:
    """The reward model's folder: a path, a path relative to the workspace root, or a run id."""
    from studio.training.reward_refs import resolve_reward_model

    ref = ctx.config.reward_model
    return str(resolve_reward_model(ref, ctx.run_dir)) if ref else None


def train_backend(ctx) -> dict[str, Any]:
    """The back-end's ``train``: models and reward from the recipe, prompts from the records,
    the loop, then the final model in ``ctx.final_dir``."""
    procs = Processes()
    ctx.seed_everything()
    t = ctx.recipe.training
    spec = ModelSpec(policy=_policy_location(ctx, procs), options=ctx.config, adapter=ctx.recipe.adapter,
                     reward_model=_reward_location(ctx), seed=ctx.recipe.seed,
                     trust_remote_code=ctx.recipe.trust_remote_code, model_kwargs=ctx.model_kwargs(), emit=ctx.emit)
    models, reward = load_ppo_models(spec)
    policy = getattr(models, "policy", None) or getattr(models, "base", None)
    if policy is not None:
        ctx.tune_threads(policy)
    tokenizer = models.tokenizer
    settings = LoopSettings(updates=t.max_steps, batch_size=t.batch_size, learning_rate=t.learning_rate,
                            seed=ctx.recipe.seed, max_grad_norm=t.max_grad_norm, scheduler=t.scheduler,
                            warmup_steps=round(t.warmup_ratio * t.max_steps), weight_decay=t.weight_decay,
                            logging_steps=t.logging_steps, save_steps=t.save_steps,
                            save_total_limit=t.save_total_limit, checkpoints_dir=ctx.checkpoints_dir,
                            precision=_precision(t.precision))
    loop = PPOLoop(models, reward, prompt_rows(ctx.train_records, tokenizer), ctx.config, settings,
                   emit=ctx.emit, cancelled=ctx.cancelled, processes=procs)
    metrics = loop.run(resume=ctx.resume)
    if loop.update < settings.updates:  # cancelled: the checkpoint is the result
        procs.close()
        return metrics
    evaluated = loop.evaluate(prompt_rows(ctx.eval_records, tokenizer))
    if evaluated:
        ctx.emit("eval", step=loop.update, epoch=loop._epoch(loop.update), values=evaluated)
    metrics.update(evaluated)
    if procs.main:
        models.save(ctx.final_dir)
    procs.barrier()
    procs.close()
    return metrics
