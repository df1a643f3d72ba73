"""Behaviour cloning of a VLA on demo datasets, as one object: setup → step → log / evaluate / save → summary.

`vla-rl pretrain` parses its options into a `PretrainConfig` and calls `PretrainRun(cfg).run()`.

Loss: cross-entropy of the demo's action tokens under the policy's bin-masked distribution —
`-evaluate(obs, tokens).logp`, the very function PPO later uses, so pre-training and RL score
tokens identically. AdamW + linear warm-up + cosine decay (OpenVLA/LeRobot defaults).

Metrics (one JSON line per `log_every` steps in OUT/metrics.jsonl, shown on the progress bar):
    loss            mean negative log-likelihood per action token (nats; ln 256 = 5.55 is uniform)
    token_acc       fraction of demo tokens that greedy decoding reproduces (on the current batch)
    lr              learning rate at this step
    tokens_per_s    action tokens trained per second (batch * K * D / step time)
    eval/success_rate  success of greedy decoding in the demos' env (when evaluated); with datasets of several envs,
                       the mean of episodes over all of them, and per env eval/success_rate/<env id>,
                       eval/group_success_rate/<group>, eval/success_rate_mean_of_groups (vla_rl/suite_evaluation.py)
    val/success_rate   the same on the validation seeds (--val_episodes); val/best_step, val/best_success_rate:
                       the checkpoint `checkpoints/best` names — the stopping rule (--val_patience) reads these
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from vla_rl.base.errors import CheckpointError
from vla_rl.base.outputs import PRETRAIN_RUN, clear_output, existing_output, prepare_output
from vla_rl.bc_data import BCData, random_shift
from vla_rl.checkpoints import (
    BEST,
    check_same_options,
    is_better,
    latest,
    load_raw_weights,
    load_training_state,
    point_best,
    save_checkpoint,
)
from vla_rl.config import PRETRAIN_EVAL_SEED, PretrainConfig, save_config
from vla_rl.schedules import warmup_cosine
from vla_rl.weight_average import WeightAverage

CONFIG_FILE = "pretrain_config.yaml"
# Options that may differ between a run and its resumption.
RESUMABLE_CHANGES = ("resume", "stop_after", "eval_every", "eval_episodes", "log_every", "device", "overwrite")


def build_initial_policy(cfg: PretrainConfig, data: BCData):
    from vla_rl.policy import ActionTokenizer, build_policy, policy_from_hf

    p = cfg.policy
    stats = ActionTokenizer.from_actions(data.all_actions)
    image_size = tuple(data.env["image_shape"][:2])
    common = dict(state_dim=int(data.env["state_dim"]), image_size=image_size, chunk_size=p.chunk_size,
                  use_state=p.use_state, max_prompt_tokens=p.max_prompt_tokens, dtype=p.dtype)
    if p.base_model:
        policy = policy_from_hf(p.base_model, stats, trust_remote_code=p.trust_remote_code,
                                unnorm_key=p.unnorm_key or None, **common)
    else:
        policy = build_policy(stats, family=p.family, preset=p.preset, seed=cfg.seed, **common)
    policy.spec.train_env = data.env["env_id"]
    policy.spec.train_env_options = dict(data.env_options)
    return policy


def token_accuracy(policy, obs, tokens) -> float:
    """Fraction of demo tokens that greedy decoding reproduces (free-running over the K*D tokens)."""
    with torch.no_grad():
        out = policy.act(obs, greedy=True)
    return float((out.tokens == tokens).float().mean())


class PretrainRun:
    """One BC run (or the resumed rest of one). Every input is checked before anything is written (`setup`)."""

    def __init__(self, cfg: PretrainConfig):
        self.cfg = cfg
        self.out = Path(cfg.out)
        self.root = self.out / "checkpoints"
        self.metrics_path = self.out / "metrics.jsonl"
        self.last_eval: dict = {}
        self.loss = None
        self.step = 0
        self.best: dict | None = None  # {"step", "success_rate"} of checkpoints/best (validation)
        self.since_best = 0  # validations since the best one
        self.stopped_early = False

    def run(self) -> dict:
        self.setup()
        bar = tqdm(total=self.cfg.steps, initial=self.step, desc="pretrain", unit="step", file=sys.stderr,
                   dynamic_ncols=True)
        t_run = time.perf_counter()
        while self.step < self.end:
            obs, tokens, lr, dt = self.train_step()
            bar.update(1)
            if self.step % self.cfg.log_every == 0 or self.step == self.end:
                self.log(bar, obs, tokens, lr, dt)
            evaluate = self.evaluate_now()
            validated = evaluate and self.cfg.val_episodes > 0
            save = validated or self.step % self.cfg.save_every == 0 or self.step == self.end
            if evaluate or save:
                with self.deployed() as raw:  # evaluations and the saved policy use the averaged weights (--ema_decay)
                    if evaluate:
                        self.evaluate(bar)
                    if validated:
                        self.validate(bar)
                    if save:
                        save_checkpoint(self.root, self.step, self.policy, self.opt, self.names,
                                        {"loss": self.loss.item(), "best": self.best,
                                         "since_best": self.since_best}, self.rng, raw_weights=raw)
            if validated and self.best["step"] == self.step:
                point_best(self.root, self.step)
            if validated and self.cfg.val_patience and self.since_best >= self.cfg.val_patience:
                bar.write(f"step {self.step}: {self.since_best} validations without a new best — stopping; "
                          f"checkpoints/best is step {self.best['step']} (validation {self.best['success_rate']:.2f})")
                self.stopped_early = True
                break
        bar.close()
        return self.summary(time.perf_counter() - t_run)

    def setup(self) -> None:
        """Seeds, the output directory (checked, then cleared only once the policy is built), data, policy, optimiser;
        on resume the optimiser, step and sampling generator from the last checkpoint."""
        from vla_rl.policy import VLAPolicy

        cfg, out = self.cfg, self.out
        torch.manual_seed(cfg.seed)
        self.rng = np.random.default_rng(cfg.seed)
        if cfg.resume:
            if not existing_output(out, PRETRAIN_RUN):
                raise CheckpointError(f"{out / CONFIG_FILE}: missing — {out} is not a pretrain run to resume "
                                      "(drop --resume to start one)")
            check_same_options(PretrainConfig, cfg, out / CONFIG_FILE, RESUMABLE_CHANGES, "a pretrain run")
        replace = not cfg.resume and prepare_output(out, PRETRAIN_RUN, overwrite=cfg.overwrite,
                                                    alternative="--resume true to continue it")
        self.data = BCData.load(cfg.demos, cfg.policy.chunk_size, cfg.max_episodes)
        if cfg.resume:
            ckpt = latest(self.root)
            if ckpt is None:
                raise CheckpointError(f"{self.root / 'last'}: no checkpoint to resume from (the run stopped before "
                                      "its first save) — start again with --overwrite true")
            self.policy = VLAPolicy.from_pretrained(ckpt / "pretrained_model", trainable=True, device=cfg.device)
        else:
            self.policy = build_initial_policy(cfg, self.data).to(cfg.device)  # every input checked before writing
            self.policy.train()
            if replace:
                clear_output(out, PRETRAIN_RUN)
            # The saved config describes the whole run, not this invocation: replaying it with
            # --config_path runs all `steps` (an interrupted or resumed invocation's stop_after is not kept).
            save_config(dataclasses.replace(cfg, stop_after=0, resume=False, overwrite=False), out / CONFIG_FILE)
        self._build_optimizer()
        if cfg.resume:
            state = load_training_state(ckpt, self.opt, self.names, self.rng)
            self.step = int(state["step"])
            extra = state.get("extra") or {}
            self.best, self.since_best = extra.get("best"), int(extra.get("since_best", 0))
            if self.average is not None:
                self.average.restore(load_raw_weights(ckpt, self.names))
        self.end = cfg.steps if not cfg.stop_after else min(cfg.steps, self.step + cfg.stop_after)
        n_params = sum(p.numel() for p in self.policy.parameters())
        envs = self.data.env_ids[0] if len(self.data.env_ids) == 1 else f"{len(self.data.env_ids)} envs"
        print(f"pretrain: {len(self.data)} samples from {self.data.episodes} episodes of {envs}; "
              f"{n_params / 1e6:.2f} M parameters ({sum(p.numel() for _, p in self.named) / 1e6:.2f} M trained); "
              f"steps {self.step} -> {self.end} of {cfg.steps}", file=sys.stderr)

    def _build_optimizer(self) -> None:
        """AdamW, weight decay on matrices only; `names` fixes the parameter order of the saved optimiser state."""
        named = [(n, p) for n, p in self.policy.named_parameters() if p.requires_grad]
        decay = [p for n, p in named if p.ndim >= 2]
        no_decay = [p for n, p in named if p.ndim < 2]
        self.opt = torch.optim.AdamW([{"params": decay, "weight_decay": self.cfg.weight_decay},
                                      {"params": no_decay, "weight_decay": 0.0}], lr=self.cfg.lr, betas=(0.9, 0.95))
        self.named = named
        self.names = [n for n, p in named if p.ndim >= 2] + [n for n, p in named if p.ndim < 2]
        self.average = WeightAverage(named, self.cfg.ema_decay) if self.cfg.ema_decay > 0 else None

    def deployed(self):
        """A context with the weights to evaluate and save in the policy (the average with --ema_decay), yielding
        the raw weights training continues from (None without an average)."""
        return self.average.applied() if self.average is not None else contextlib.nullcontext()

    def train_step(self):
        """One AdamW step on a random batch (random-shift augmented) at the schedule's lr."""
        cfg, policy = self.cfg, self.policy
        t0 = time.perf_counter()
        lr = warmup_cosine(self.step, cfg.steps, cfg.lr, cfg.warmup_steps)
        for group in self.opt.param_groups:
            group["lr"] = lr
        idx = self.rng.integers(0, len(self.data), cfg.batch_size)
        obs, actions = self.data.batch(idx)
        obs["image"] = random_shift(obs["image"], cfg.augment_shift, self.rng)
        tokens = policy.tokens_for(actions)
        self.loss = loss = -policy.evaluate(obs, tokens).logp.mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_([p for _, p in self.named], cfg.grad_clip)
        self.opt.step()
        if self.average is not None:
            self.average.update(self.step)
        self.step += 1
        return obs, tokens, lr, time.perf_counter() - t0

    def log(self, bar, obs, tokens, lr: float, dt: float) -> None:
        row = {"step": self.step, "loss": round(self.loss.item(), 5), "lr": lr,
               "tokens_per_s": round(tokens.numel() / dt, 1)}
        self.policy.eval()
        row["token_acc"] = round(token_accuracy(self.policy, obs, tokens), 4)
        self.policy.train()
        bar.set_postfix(loss=f"{row['loss']:.3f}", acc=row["token_acc"], tok_s=row["tokens_per_s"])
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(row) + "\n")

    def evaluate_now(self) -> bool:
        every = self.cfg.eval_every
        return every >= 0 and (self.step == self.cfg.steps or (every and self.step % every == 0))

    def rollouts(self, episodes: int, seed: int, label: str) -> dict:
        """Greedy episodes in the demos' env on seeds seed, seed + 1, ... (the policy stays in train mode, as BC's).
        Datasets of several envs: `episodes` in each env, pooled (`success_rate` = the mean of episodes) and per env
        (`success_rate/<env id>`, groups: vla_rl/suite_evaluation.py)."""
        from envs import EnvOptions
        from vla_rl.evaluation import evaluate_policy
        from vla_rl.suite_evaluation import evaluate_suite, suite_metrics, suite_progress_total

        env_ids = self.data.env_ids
        options = {e: EnvOptions(**self.data.env_options_by_id[e]) for e in env_ids}
        with tqdm(total=suite_progress_total(env_ids, episodes, options), desc=f"{label} at step {self.step}",
                  unit="step", file=sys.stderr, dynamic_ncols=True, leave=False) as progress:
            if len(env_ids) > 1:
                return suite_metrics(evaluate_suite(self.policy, env_ids, episodes, seed, options, progress=progress))
            result = evaluate_policy(self.policy, env_ids[0], episodes, seed=seed, options=options[env_ids[0]],
                                     progress=progress)
        result.pop("per_episode")
        return result

    def evaluate(self, bar) -> None:
        """Greedy success on the fixed evaluation seeds 10000.. (those RL reports its start on)."""
        self.last_eval = self.rollouts(self.cfg.eval_episodes, PRETRAIN_EVAL_SEED, "eval")
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps({"step": self.step, **{f"eval/{k}": v for k, v in self.last_eval.items()}}) + "\n")
        lo, hi = self.last_eval["success_rate_ci95"]
        per_env = ", ".join(f"{k.rsplit('/', 1)[1]} {v:.2f}" for k, v in self.last_eval.items()
                            if k.startswith("success_rate/"))
        bar.write(f"step {self.step}: success {self.last_eval['success_rate']:.2f} (95% CI {lo:.2f}-{hi:.2f})"
                  + (f"; per env: {per_env}" if per_env else ""))

    def validate(self, bar) -> None:
        """Greedy success on the validation seeds; moves the best (written to checkpoints/best after the save)."""
        success = float(self.rollouts(self.cfg.val_episodes, self.cfg.val_seed, "validation")["success_rate"])
        raised = self.best is None or success > float(self.best["success_rate"])
        if is_better(success, self.best):  # a tie moves `best` to this later step without resetting the patience
            self.best = {"step": self.step, "success_rate": success}
        self.since_best = 0 if raised else self.since_best + 1
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps({"step": self.step, "val/success_rate": success, "val/best_step": self.best["step"],
                                "val/best_success_rate": self.best["success_rate"]}) + "\n")
        bar.write(f"step {self.step}: validation {success:.2f} (best {self.best['success_rate']:.2f} at step "
                  f"{self.best['step']})")

    def summary(self, seconds: float) -> dict:
        loss = self.loss
        summary = {"step": self.step, "steps": self.cfg.steps, "loss": round(loss.item(), 5) if loss is not None else None,
                   "seconds": round(seconds, 1), "checkpoint": str(self.root / "last" / "pretrained_model"),
                   "samples": len(self.data), "episodes": self.data.episodes}
        if self.best is not None:
            summary.update({"best_step": self.best["step"], "best_val_success_rate": self.best["success_rate"],
                            "best_checkpoint": str(self.root / BEST / "pretrained_model"),
                            "stopped_early": self.stopped_early})
        if self.last_eval:
            summary.update({"success_rate": self.last_eval["success_rate"],
                            "success_rate_ci95": self.last_eval["success_rate_ci95"]})
            per_env = {k.split("/", 1)[1]: v for k, v in self.last_eval.items() if k.startswith("success_rate/")}
            if per_env:
                summary["success_rate_per_env"] = per_env
        return summary
