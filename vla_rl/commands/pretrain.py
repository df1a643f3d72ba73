"""`vla-rl pretrain`: behaviour cloning of a VLA on demo datasets.

Loss: cross-entropy of the demo's action tokens under the policy's bin-masked distribution —
`-evaluate(obs, tokens).logp`, the very function PPO later uses, so pre-training and RL score
tokens identically. AdamW + linear warm-up + cosine decay (OpenVLA/LeRobot defaults).

Metrics (one JSON line per `log_every` steps in OUT/metrics.jsonl, shown on the progress bar):
    loss            mean negative log-likelihood per action token (nats; ln 256 = 5.55 is uniform)
    token_acc       fraction of demo tokens that greedy decoding reproduces (on the current batch)
    lr              learning rate at this step
    tokens_per_s    action tokens trained per second (batch * K * D / step time)
    eval/success_rate  success of greedy decoding in the demos' env (when evaluated)
"""

from __future__ import annotations

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
from vla_rl.checkpoints import check_same_options, latest, load_training_state, save_checkpoint
from vla_rl.config import PretrainConfig, save_config
from vla_rl.schedules import warmup_cosine

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
        policy = policy_from_hf(p.base_model, stats, trust_remote_code=p.trust_remote_code, **common)
    else:
        policy = build_policy(stats, family=p.family, preset=p.preset, seed=cfg.seed, **common)
    policy.spec.train_env = data.env["env_id"]
    policy.spec.train_env_options = dict(data.env_options)
    return policy


def _check_resumable(cfg: PretrainConfig, out: Path) -> None:
    check_same_options(PretrainConfig, cfg, out / CONFIG_FILE, RESUMABLE_CHANGES, "a pretrain run")


def _token_accuracy(policy, obs, tokens) -> float:
    """Fraction of demo tokens that greedy decoding reproduces (free-running over the K*D tokens)."""
    with torch.no_grad():
        out = policy.act(obs, greedy=True)
    return float((out.tokens == tokens).float().mean())


def run(cfg: PretrainConfig) -> int:
    from vla_rl.evaluation import evaluate_policy, progress_total
    from vla_rl.policy import VLAPolicy

    out = Path(cfg.out)
    root = out / "checkpoints"
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    if cfg.resume:
        if not existing_output(out, PRETRAIN_RUN):
            raise CheckpointError(f"{out / CONFIG_FILE}: missing — {out} is not a pretrain run to resume "
                                  "(drop --resume to start one)")
        _check_resumable(cfg, out)
    replace = not cfg.resume and prepare_output(out, PRETRAIN_RUN, overwrite=cfg.overwrite,
                                                alternative="--resume true to continue it")
    data = BCData.load(cfg.demos, cfg.policy.chunk_size, cfg.max_episodes)
    if cfg.resume:
        ckpt = latest(root)
        if ckpt is None:
            raise CheckpointError(f"{root / 'last'}: no checkpoint to resume from (the run stopped before its first "
                                  "save) — start again with --overwrite true")
        policy = VLAPolicy.from_pretrained(ckpt / "pretrained_model", trainable=True, device=cfg.device)
    else:
        policy = build_initial_policy(cfg, data).to(cfg.device)  # every input checked before anything is written
        policy.train()
        if replace:
            clear_output(out, PRETRAIN_RUN)
        # The saved config describes the whole run, not this invocation: replaying it with
        # --config_path runs all `steps` (an interrupted or resumed invocation's stop_after is not kept).
        save_config(dataclasses.replace(cfg, stop_after=0, resume=False, overwrite=False), out / CONFIG_FILE)
    named = [(n, p) for n, p in policy.named_parameters() if p.requires_grad]
    decay = [p for n, p in named if p.ndim >= 2]
    no_decay = [p for n, p in named if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95))
    names = [n for n, p in named if p.ndim >= 2] + [n for n, p in named if p.ndim < 2]
    step = 0
    if cfg.resume:
        step = int(load_training_state(ckpt, opt, names, rng)["step"])
    end = cfg.steps if not cfg.stop_after else min(cfg.steps, step + cfg.stop_after)
    n_params = sum(p.numel() for p in policy.parameters())
    print(f"pretrain: {len(data)} samples from {data.episodes} episodes of {data.env['env_id']}; "
          f"{n_params / 1e6:.2f} M parameters ({sum(p.numel() for _, p in named) / 1e6:.2f} M trained); "
          f"steps {step} -> {end} of {cfg.steps}", file=sys.stderr)
    metrics_path = out / "metrics.jsonl"
    last_eval: dict = {}
    bar = tqdm(total=cfg.steps, initial=step, desc="pretrain", unit="step", file=sys.stderr, dynamic_ncols=True)
    t_run = time.perf_counter()
    loss = None
    while step < end:
        t0 = time.perf_counter()
        lr = warmup_cosine(step, cfg.steps, cfg.lr, cfg.warmup_steps)
        for group in opt.param_groups:
            group["lr"] = lr
        idx = rng.integers(0, len(data), cfg.batch_size)
        obs, actions = data.batch(idx)
        obs["image"] = random_shift(obs["image"], cfg.augment_shift, rng)
        tokens = policy.tokens_for(actions)
        loss = -policy.evaluate(obs, tokens).logp.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_([p for _, p in named], cfg.grad_clip)
        opt.step()
        step += 1
        dt = time.perf_counter() - t0
        bar.update(1)
        if step % cfg.log_every == 0 or step == end:
            row = {"step": step, "loss": round(loss.item(), 5), "lr": lr,
                   "tokens_per_s": round(tokens.numel() / dt, 1)}
            policy.eval()
            row["token_acc"] = round(_token_accuracy(policy, obs, tokens), 4)
            policy.train()
            bar.set_postfix(loss=f"{row['loss']:.3f}", acc=row["token_acc"], tok_s=row["tokens_per_s"])
            with open(metrics_path, "a") as f:
                f.write(json.dumps(row) + "\n")
        evaluate_now = cfg.eval_every >= 0 and (step == cfg.steps or (cfg.eval_every and step % cfg.eval_every == 0))
        if evaluate_now:
            from envs import EnvOptions

            options = EnvOptions(**data.env_options) if data.env_options else EnvOptions()
            env_id = data.env["env_id"]
            with tqdm(total=progress_total(env_id, cfg.eval_episodes, options), desc=f"eval at step {step}",
                      unit="step", file=sys.stderr, dynamic_ncols=True, leave=False) as eval_bar:
                last_eval = evaluate_policy(policy, env_id, cfg.eval_episodes, seed=10_000, options=options,
                                            progress=eval_bar)
            last_eval.pop("per_episode")
            with open(metrics_path, "a") as f:
                f.write(json.dumps({"step": step, **{f"eval/{k}": v for k, v in last_eval.items()}}) + "\n")
            bar.write(f"step {step}: success {last_eval['success_rate']:.2f} "
                      f"(95% CI {last_eval['success_rate_ci95'][0]:.2f}-{last_eval['success_rate_ci95'][1]:.2f})")
        if step % cfg.save_every == 0 or step == end:
            save_checkpoint(root, step, policy, opt, names, {"loss": loss.item()}, rng)
    bar.close()
    summary = {"step": step, "steps": cfg.steps, "loss": round(loss.item(), 5) if loss is not None else None,
               "seconds": round(time.perf_counter() - t_run, 1), "checkpoint": str(root / "last" / "pretrained_model"),
               "samples": len(data), "episodes": data.episodes}
    if last_eval:
        summary.update({"success_rate": last_eval["success_rate"], "success_rate_ci95": last_eval["success_rate_ci95"]})
    print(json.dumps(summary))
    return 0
