"""RL benchmarks (JSON on stdout):

  throughput  env steps/s of RL sampling through a Ray env runner (`sample()` on the actor, with the
              policy's LoRA) vs a bare single-process loop (`act()` on a SyncVectorEnv of the same env
              stack, same policy, envs and threads), alternated `--repeats` times in one run:
              the median ratio and its spread.
  chunking    env steps/s of the RL env stack (act() + a SyncVectorEnv of RL envs, as a 1-CPU runner samples) with
              action chunks of K = 1 vs K = --chunk (render-skip: only each chunk's last frame is rendered) vs
              K = --chunk rendering every inner step, for random-init policies of the quickstart's size on
              --env; alternated --repeats times in one run: medians, spreads and the ratios to K = 1.
  sync        bytes sent to the runners per weight sync ÷ the full policy state, for LoRA settings.
  memory      peak RSS of a learner process doing PPO updates with the KL reference (adapter-free
              forward, once per batch) vs without it, each in a fresh subprocess.
  learning    summary of train runs (metrics.jsonl): greedy success before/after with Wilson CIs,
              env steps and wall-clock at each evaluation, KL to the reference; where validation
              success was measured (--val_episodes, or experiments/validate_checkpoints.py) also the
              checkpoint it picks per seed and that checkpoint's success on the evaluation seeds.

    python experiments/bench_rl.py throughput --policy outputs/metaworld/drawer-open/pretrain/checkpoints/last/pretrained_model
    python experiments/bench_rl.py chunking --env metaworld/drawer-open --chunk 5
    python experiments/bench_rl.py sync --policy ...
    python experiments/bench_rl.py memory --policy ...
    python experiments/bench_rl.py learning --runs outputs/train/a outputs/train/b --before 0.30 --before_n 30
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import torch


def machine() -> dict:
    return {"cpu_count": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__}


def _env_config(policy, reward="shaped", seed=0) -> dict:
    from vla_rl.rl.env import RLEnvSettings

    return RLEnvSettings(env_id=policy.spec.train_env, env_options=dict(policy.spec.train_env_options or {}),
                         action_tokenizer=policy.action_tokenizer.to_dict(), chunk_size=policy.spec.chunk_size,
                         reward=reward, seed=seed, bootstrap_time_limit=False, privileged_obs=False, envs_per_runner=1,
                         group_size=1).as_dict()


def _train_config(args):
    from vla_rl.train_config import TrainConfig

    return TrainConfig(policy=str(Path(args.policy).resolve()), envs_per_runner=args.envs, rollout_length=args.steps,
                       minibatch_size=min(64, args.envs * args.steps), lora_r=args.lora_r, lora_alpha=2 * args.lora_r,
                       lora_target_modules=args.lora_targets)


def bare_loop(policy, env_config: dict, steps: int, envs: int) -> float:
    """env steps/s of act() on a SyncVectorEnv of the RL env stack (fresh episodes, like one iteration)."""
    import gymnasium as gym

    from vla_rl.rl.env import make_rl_env

    vec = gym.vector.SyncVectorEnv([lambda i=i: make_rl_env({**env_config, "seed": 100 + i}) for i in range(envs)])
    gen = torch.Generator().manual_seed(0)
    try:
        obs, _ = vec.reset()
        t0 = time.perf_counter()
        for _ in range(steps):
            out = policy.act(obs, temperature=1.0, generator=gen)
            bins = (out.tokens - policy.action_tokenizer.token_offset).numpy()
            obs, *_ = vec.step(bins)
        return steps * envs / (time.perf_counter() - t0)  # decisions per second (x K for env steps)
    finally:
        vec.close()


def chunking(args) -> dict:
    from envs import get_spec
    from vla_rl.policy import ActionTokenizer, build_policy

    torch.set_num_threads(1)  # as in a 1-CPU env runner
    spec = get_spec(args.env)
    at = ActionTokenizer((-1.0,) * spec.action_dim, (1.0,) * spec.action_dim)
    arms = {"K1": (1, True), f"K{args.chunk}_render_skip": (args.chunk, False), f"K{args.chunk}_render_every": (args.chunk, True)}
    policies = {c: build_policy(at, state_dim=spec.state_dim, image_size=(64, 64), family="llava", preset="small",
                                chunk_size=c, seed=0).eval() for c in {1, args.chunk}}
    from vla_rl.rl.env import RLEnvSettings

    configs = {name: RLEnvSettings(env_id=args.env, env_options={"image_size": 64}, action_tokenizer=at.to_dict(),
                                   chunk_size=c, reward="shaped", seed=0, render_inner_steps=every,
                                   bootstrap_time_limit=False, privileged_obs=False, envs_per_runner=1,
                                   group_size=1).as_dict()
               for name, (c, every) in arms.items()}
    for name, (c, _) in arms.items():  # warm-up
        bare_loop(policies[c], configs[name], 2, args.envs)
    rates: dict[str, list[float]] = {name: [] for name in arms}
    for _ in range(args.repeats):
        for name, (c, _) in arms.items():
            rates[name].append(bare_loop(policies[c], configs[name], max(1, args.steps // c), args.envs) * c)
    out = {name: {"env_steps_per_s_median": statistics.median(v), "min": min(v), "max": max(v), "all": v}
           for name, v in rates.items()}
    base = rates["K1"]
    for name, v in rates.items():
        ratios = [a / b for a, b in zip(v, base, strict=True)]
        out[name].update({"ratio_to_K1_median": statistics.median(ratios), "ratio_min": min(ratios),
                          "ratio_max": max(ratios)})
    return {"env": args.env, "envs": args.envs, "env_steps_per_timing": args.steps, "repeats": args.repeats,
            "image_size": 64, "arms": out}


def throughput(args) -> dict:
    import ray

    from vla_rl.policy import VLAPolicy
    from vla_rl.rl.algorithm import build_config
    from vla_rl.rl.module import build_policy_from_config
    from vla_rl.rl.module_settings import ModuleSettings

    torch.set_num_threads(1)  # a 1-CPU env runner runs the VLA on one thread too
    cfg = _train_config(args)
    base = VLAPolicy.from_pretrained(cfg.policy)
    env_config = _env_config(base)
    policy = build_policy_from_config(ModuleSettings.from_train_config(cfg.policy, cfg))
    ray.init(num_cpus=max(2, os.cpu_count() or 2), include_dashboard=False, logging_level="ERROR")
    algo = build_config(cfg, env_config, cfg.policy).build_algo()
    n = args.steps * args.envs
    sample = lambda: algo.env_runner_group.foreach_env_runner(  # noqa: E731
        lambda r: r.sample(num_timesteps=n, force_reset=True, explore=True), local_env_runner=False)
    sample()  # warm-up: first-call allocations on both sides
    bare_loop(policy, env_config, 4, args.envs)
    bare, rllib, ratios = [], [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        steps = sum(len(e) for e in sample()[0])
        rl = steps / (time.perf_counter() - t0)
        b = bare_loop(policy, env_config, args.steps, args.envs)
        bare.append(b)
        rllib.append(rl)
        ratios.append(rl / b)
    algo.stop()
    ray.shutdown()
    return {"env": env_config["env_id"], "envs": args.envs, "steps_per_env": args.steps, "repeats": args.repeats,
            "bare_steps_per_s": bare, "rllib_steps_per_s": rllib, "ratio_median": statistics.median(ratios),
            "ratio_min": min(ratios), "ratio_max": max(ratios)}


def sync(args) -> dict:
    from vla_rl.rl.module import build_policy_from_config
    from vla_rl.rl.module_settings import ModuleSettings

    rows = []
    for r, targets in ((16, ""), (8, ""), (4, ""), (16, r".*language_model\..*\.(q_proj|v_proj)"),
                       (4, r".*language_model\..*\.(q_proj|v_proj)")):
        args.lora_r, args.lora_targets = r, targets
        policy = build_policy_from_config(ModuleSettings.from_train_config(str(Path(args.policy).resolve()), _train_config(args)))
        lora = sum(p.numel() * p.element_size() for n, p in policy.named_parameters() if p.requires_grad
                   and "value_head" not in n)
        full = sum(t.numel() * t.element_size() for t in policy.state_dict().values())
        rows.append({"lora_r": r, "targets": targets or "all LM projections", "sync_bytes": lora, "full_bytes": full,
                     "fraction": lora / full})
    return {"rows": rows}


MEMORY_CHILD = r"""
import json, resource, sys, time, torch, ray
sys.path.insert(0, ".")
from experiments.bench_rl import _env_config, _train_config
from vla_rl.policy import VLAPolicy
from vla_rl.rl.algorithm import build_config
import argparse
args = argparse.Namespace(**json.loads(sys.argv[1]))
torch.set_num_threads(1)
cfg = _train_config(args)
env_config = _env_config(VLAPolicy.from_pretrained(cfg.policy))
ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
config = build_config(cfg, env_config, cfg.policy)
config.learner_config_dict["kl_reference"] = args.reference
algo = config.build_algo()
for _ in range(args.iterations):
    algo.train()
print(json.dumps({"reference": args.reference, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
algo.stop(); ray.shutdown()
"""


def memory(args) -> dict:
    out = {}
    for reference in [False, True] * args.repeats:  # alternated, so drift hits both arms alike
        payload = json.dumps({**vars(args), "reference": reference})
        res = subprocess.run([sys.executable, "-c", MEMORY_CHILD, payload], capture_output=True, text=True, check=True,
                             cwd=Path(__file__).resolve().parents[1])
        row = json.loads(res.stdout.strip().splitlines()[-1])
        out.setdefault("with_reference" if reference else "without_reference", []).append(row["peak_rss_mb"])
    w, wo = statistics.median(out["with_reference"]), statistics.median(out["without_reference"])
    pairs = [a / b - 1.0 for a, b in zip(out["with_reference"], out["without_reference"], strict=True)]
    return {**out, "extra_fraction": w / wo - 1.0, "extra_fraction_per_pair": pairs,
            "extra_fraction_pair_range": [min(pairs), max(pairs)],
            "note": "driver (learner) process peak RSS, MB; extra_fraction = median with / median without - 1"}


def learning(args) -> dict:
    from vla_rl.evaluation import wilson_interval
    from vla_rl.run_summary import (
        evaluations,
        parse_run_spec,
        read_rows,
        read_validation,
        seed_summary,
        selection_summary,
    )

    runs = []
    for spec in args.runs:
        group, run = parse_run_spec(spec)
        rows = read_rows(run)
        runs.append({"run": str(run), "group": group, "evals": evaluations(rows, read_validation(run)),
                     "kl_per_token_last": rows[-1].get("kl/ref_per_token") if rows else None,
                     "rollout_success_first": rows[0].get("rollout/success_rate") if rows else None,
                     "rollout_success_last": rows[-1].get("rollout/success_rate") if rows else None})
    before = None
    if args.before is not None:
        k = round(args.before * args.before_n)
        before = {"success": args.before, "n": args.before_n, "ci95": list(wilson_interval(k, args.before_n))}
    return {"before": before, "groups": seed_summary(runs, args.before),
            "picked_by_validation": selection_summary(runs, args.before, args.select_up_to or None), "runs": runs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["throughput", "chunking", "sync", "memory", "learning"])
    ap.add_argument("--env", default="metaworld/drawer-open", help="(chunking) the env")
    ap.add_argument("--chunk", type=int, default=5, help="(chunking) K of the chunked arms")
    ap.add_argument("--policy", default="outputs/metaworld/drawer-open/pretrain/checkpoints/last/pretrained_model",
                    help="a pretrained_model directory (its training env is used)")
    ap.add_argument("--envs", type=int, default=8, help="envs per runner / in the bare loop")
    ap.add_argument("--steps", type=int, default=50, help="decisions per env per timing")
    ap.add_argument("--repeats", type=int, default=5, help="alternated timings of each side")
    ap.add_argument("--iterations", type=int, default=2, help="train iterations per memory measurement")
    ap.add_argument("--lora_r", type=int, default=16)
    ap.add_argument("--lora_targets", default="", help='LoRA target regex ("" = every LM projection)')
    ap.add_argument("--runs", nargs="*", default=[],
                    help="train run directories (learning), optionally GROUP=DIR to pool seeds of one setting")
    ap.add_argument("--before", type=float, default=None, help="greedy success of the start policy (learning)")
    ap.add_argument("--before_n", type=int, default=30, help="episodes behind --before")
    ap.add_argument("--select_up_to", type=int, default=0,
                    help="(learning) pick checkpoints by validation only among iterations <= N (0 = all)")
    args = ap.parse_args()
    result = {"benchmark": args.what, "machine": machine(), "command": " ".join(sys.argv),
              **globals()[args.what](args)}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
