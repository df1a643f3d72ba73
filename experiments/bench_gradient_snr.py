"""Policy-gradient signal-to-noise at a policy's current batch (issue 22, diagnosis 2). JSON on stdout.

Samples `--groups` initial states × `--group_size` episodes each with the RL env stack (the policy's own chunk size,
sampled at temperature 1, the RL reward), and computes one gradient per episode, g_i = ∇ Σ_t log π(a_t | s_t) over
the LoRA parameters (as `vla-rl train` adds them). For a batch of b episodes split into two halves, the
policy-gradient estimate of each half is Σ_i A_i g_i; the cosine between the halves' estimates says how much of
a batch's update is signal (→ 1) and how much is noise (→ 0; two independent noise vectors in 10^5 dimensions have
cosine ~0). Reported against the batch size b and the advantage estimator:
    batch_mean   A_i = G_i − mean of the batch's returns (Monte-Carlo with a constant baseline)
    group_mean   A_i = G_i − mean of the other episodes from the same initial state (leave-one-out, RLOO)
Each (b, estimator) is the mean over `--splits` random draws of b episodes and halves. Only whole episodes are
counted. Run it for policies of different chunk sizes (K) to compare decision horizons.

    python experiments/bench_gradient_snr.py --policy outputs/metaworld/drawer-open/pretrain/checkpoints/last/pretrained_model
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np
import torch


def sample_episodes(policy, env_config: dict, seeds: list[int], group_size: int, gen) -> list[dict]:
    """Whole episodes: each seed `group_size` times; per episode its observations, tokens, return and seed."""
    from vla_rl.rl.env import make_rl_env

    starts = [s for s in seeds for _ in range(group_size)]
    envs = [make_rl_env({**env_config, "seed": 100 + i}) for i in range(len(starts))]
    try:
        obs = []
        for e, s in zip(envs, starts, strict=True):  # SeededEpisodes ignores a reset seed: queue the start
            e.get_wrapper_attr("queue_seed")(s)
            obs.append(e.reset()[0])
        episodes = [{"seed": s, "obs": [], "tokens": [], "return": 0.0, "success": False} for s in starts]
        alive = list(range(len(envs)))
        while alive:
            batch = {k: np.stack([obs[i][k] for i in alive]) for k in obs[alive[0]]}
            out = policy.act(batch, temperature=1.0, generator=gen)
            bins = (out.tokens - policy.action_tokenizer.token_offset).numpy()
            still = []
            for j, i in enumerate(alive):
                episodes[i]["obs"].append(obs[i])
                episodes[i]["tokens"].append(out.tokens[j])
                obs[i], reward, term, trunc, info = envs[i].step(bins[j])
                episodes[i]["return"] += float(reward)
                episodes[i]["success"] |= bool(info["success"])
                if not (term or trunc):
                    still.append(i)
            alive = still
        return episodes
    finally:
        for e in envs:
            e.close()


def episode_gradients(policy, params: list[torch.Tensor], episodes: list[dict], rows: int) -> torch.Tensor:
    """(E, P) flattened ∇ Σ_t log π(a_t | s_t) per episode."""
    grads = []
    for ep in episodes:
        for p in params:
            p.grad = None
        for i in range(0, len(ep["obs"]), rows):
            part = ep["obs"][i:i + rows]
            obs = {k: torch.as_tensor(np.stack([o[k] for o in part])) for k in part[0]}
            policy.evaluate(obs, torch.stack(ep["tokens"][i:i + rows])).logp.sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in params]).clone())
    return torch.stack(grads)


def advantages(returns: np.ndarray, groups: np.ndarray, idx: np.ndarray, estimator: str) -> np.ndarray:
    r = returns[idx]
    if estimator == "batch_mean":
        return r - r.mean()
    out = np.zeros_like(r)
    for j, i in enumerate(idx):  # leave-one-out mean of the same start's episodes inside the batch
        mates = [k for k in idx if groups[k] == groups[i] and k != i]
        out[j] = r[j] - returns[mates].mean() if mates else 0.0
    return out


def half_cosines(grads: torch.Tensor, returns: np.ndarray, groups: np.ndarray, batch: int, estimator: str,
                 splits: int, rng) -> list[float]:
    """Cosines between the two halves' Σ A_i g_i, over random batches of whole groups of `batch` episodes."""
    group_ids = np.unique(groups)
    per_group = len(returns) // len(group_ids)
    out = []
    for _ in range(splits):
        chosen = rng.choice(group_ids, size=batch // per_group, replace=False)
        rng.shuffle(chosen)
        halves = np.array_split(chosen, 2)  # the halves hold whole groups: each half has its own baselines
        est = []
        for h in halves:
            idx = np.flatnonzero(np.isin(groups, h))
            a = torch.as_tensor(advantages(returns, groups, idx, estimator), dtype=torch.float32)
            est.append(a @ grads[idx])
        out.append(float(torch.nn.functional.cosine_similarity(est[0], est[1], dim=0)))
    return out


def main(argv: list[str] | None = None) -> int:
    from vla_rl.policy import VLAPolicy

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--policy", required=True, help="a pretrained_model directory (its training env is used)")
    ap.add_argument("--groups", type=int, default=16, help="initial states sampled")
    ap.add_argument("--group_size", type=int, default=4, help="episodes per initial state")
    ap.add_argument("--batches", type=int, nargs="+", default=[8, 16, 32, 64], help="batch sizes b (episodes)")
    ap.add_argument("--splits", type=int, default=50, help="random batches and halves per (b, estimator)")
    ap.add_argument("--rows", type=int, default=50, help="decisions per backward pass")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    policy = VLAPolicy.from_pretrained(args.policy)
    policy.requires_grad_(False)
    torch.manual_seed(args.seed)  # LoRA's A
    policy.add_lora(r=16, alpha=32)  # as `vla-rl train` starts: B = 0, so the first update's gradient is on B
    policy.eval()
    params = [p for n, p in policy.named_parameters() if p.requires_grad and "value_head" not in n]
    from vla_rl.rl.env import RLEnvSettings

    env_config = RLEnvSettings(env_id=policy.spec.train_env, env_options=dict(policy.spec.train_env_options or {}),
                               action_tokenizer=policy.action_tokenizer.to_dict(), chunk_size=policy.spec.chunk_size,
                               reward="shaped", seed=args.seed, bootstrap_time_limit=False,
                               privileged_obs=False, envs_per_runner=1, group_size=1).as_dict()
    gen = torch.Generator().manual_seed(args.seed)
    t0 = time.perf_counter()
    seeds = [int(s) for s in np.random.default_rng(args.seed).integers(0, 2**31 - 1, args.groups)]
    episodes = sample_episodes(policy, env_config, seeds, args.group_size, gen)
    t1 = time.perf_counter()
    grads = episode_gradients(policy, params, episodes, args.rows)
    t2 = time.perf_counter()
    returns = np.array([e["return"] for e in episodes])
    groups = np.array([e["seed"] for e in episodes])
    rng = np.random.default_rng(args.seed)
    table = []
    for b in args.batches:
        if b > len(episodes) or b % (2 * args.group_size):
            continue
        for est in ("batch_mean", "group_mean"):
            cos = half_cosines(grads, returns, groups, b, est, args.splits, rng)
            table.append({"batch_episodes": b, "batch_decisions_mean": round(b * float(np.mean(
                [len(e["obs"]) for e in episodes])), 1), "estimator": est, "cosine_mean": float(np.mean(cos)),
                "cosine_std": float(np.std(cos))})
    informative = float(np.mean([returns[groups == g].std() > 0 for g in np.unique(groups)]))
    print(json.dumps({
        "benchmark": "gradient_snr", "policy": args.policy, "env": env_config["env_id"],
        "chunk_size": policy.spec.chunk_size, "tokens_per_decision": policy.spec.n_action_tokens,
        "episodes": len(episodes), "group_size": args.group_size, "success_rate": float(np.mean([e["success"] for e in episodes])),
        "mean_return": float(returns.mean()), "groups_with_different_returns": informative,
        "decisions_per_episode": float(np.mean([len(e["obs"]) for e in episodes])), "table": table,
        "sample_s": round(t1 - t0, 1), "gradient_s": round(t2 - t1, 1),
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__},
    }, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
