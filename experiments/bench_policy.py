"""Policy benchmarks (JSON on stdout, and to --out):

  speed       decisions/s of VLAPolicy.act() at batch 1, 8, 32 vs a naive loop (one observation at a
              time, every token re-reading the whole prompt: no KV cache), in one run.
  families    per VLA family (the small preset of each architecture): act() at batch 32 vs the naive loop
              (median and spread of --repeats timings), and what a weight sync sends (the LoRA tensors of the
              inference module) against the whole policy state.
  bc          behaviour-cloning success as a function of the number of demos, per task.
  multimodal  off-center (two correct modes): the token policy sampled vs an MLP regression head on
              the same backbone and demos (the mode-averaging effect).

    python experiments/bench_policy.py speed
    python experiments/bench_policy.py families --out docs/bench_policy_families.json
    python experiments/bench_policy.py bc --tasks tabletop/touch-color --demos 5,20,50
    python experiments/bench_policy.py multimodal
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np
import torch


def machine() -> dict:
    return {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "platform": platform.platform(),
            "torch": torch.__version__}


def random_obs(b: int, image: int, state_dim: int, seed: int = 0) -> dict:
    from envs.instruction import encode_instruction

    rng = np.random.default_rng(seed)
    return {"image": rng.integers(0, 256, (b, image, image, 3), dtype=np.uint8),
            "state": rng.normal(size=(b, state_dim)).astype(np.float32),
            "instruction": np.stack([encode_instruction("open the drawer", 64)] * b)}


@torch.no_grad()
def naive_act(policy, obs: dict) -> torch.Tensor:
    """Greedy decoding the slow way: batch 1, and each token re-runs the full sequence (no cache)."""
    out = []
    for i in range(obs["image"].shape[0]):
        one = {k: v[i:i + 1] for k, v in obs.items()}
        x = policy.prepare(one)
        embeds, mask, pos = x["embeds"], x["mask"], x["positions"]
        tokens = []
        for _ in range(policy.spec.n_action_tokens):
            o = policy._forward(embeds, mask, pos, x["pixels"], n_action=len(tokens))
            b = policy._bin_logp(o.last_hidden_state[:, -1], 1.0).argmax(-1) + policy.action_tokenizer.token_offset
            tokens.append(b)
            embeds = torch.cat([embeds, policy.model.get_input_embeddings()(b[:, None])], 1)
            mask = torch.cat([mask, mask.new_ones(1, 1)], 1)
            pos = torch.cat([pos, pos[..., -1:] + 1], -1)  # 1-D or M-RoPE (3-D) positions
        out.append(torch.stack(tokens, 1))
    return torch.cat(out)


def bench_speed(args) -> dict:
    from vla_rl.policy import ActionTokenizer, build_policy

    at = ActionTokenizer(tuple([-1.0] * args.action_dim), tuple([1.0] * args.action_dim))
    policy = build_policy(at, state_dim=4, image_size=(args.image_size, args.image_size), preset=args.preset,
                          chunk_size=args.chunk_size).eval()
    rows = []
    for b in args.batches:
        obs = random_obs(b, args.image_size, 4, seed=b)
        policy.act(obs, greedy=True)  # warm-up
        t = time.perf_counter()
        for _ in range(args.repeats):
            fast = policy.act(obs, greedy=True).tokens
        t_fast = (time.perf_counter() - t) / args.repeats
        t = time.perf_counter()
        slow = naive_act(policy, obs)
        t_slow = time.perf_counter() - t
        rows.append({"batch": b, "act_decisions_per_s": round(b / t_fast, 1), "naive_decisions_per_s": round(b / t_slow, 1),
                     "speedup": round(t_slow / t_fast, 2), "same_tokens": bool(torch.equal(fast, slow))})
        print(json.dumps(rows[-1]), file=sys.stderr)
    return {"bench": "speed", "preset": args.preset, "tokens_per_decision": policy.spec.n_action_tokens,
            "image_size": args.image_size, "parameters_m": round(sum(p.numel() for p in policy.parameters()) / 1e6, 2),
            "rows": rows, "machine": machine()}


FAMILY_NAMES = ("llava", "idefics3", "paligemma", "qwen2_5_vl", "vla_rl_openvla")


def _state_bytes(tensors) -> int:
    return int(sum(t.numel() * t.element_size() for t in tensors))


def bench_families(args) -> dict:
    """act() (KV-cached, batch B) against the naive loop, and the sync's bytes, for each family's small preset."""
    from vla_rl.policy import ActionTokenizer, build_policy

    at = ActionTokenizer(tuple([-1.0] * args.action_dim), tuple([1.0] * args.action_dim))
    rows = []
    for family in args.families:
        torch.manual_seed(0)
        policy = build_policy(at, state_dim=4, image_size=(args.image_size, args.image_size), family=family,
                              preset=args.preset, chunk_size=args.chunk_size).eval()
        obs = random_obs(args.batch, args.image_size, 4, seed=1)
        policy.act(obs, greedy=True)  # warm-up
        fast, slow = [], []
        for _ in range(args.repeats):
            t = time.perf_counter()
            tokens = policy.act(obs, greedy=True).tokens
            fast.append(time.perf_counter() - t)
            t = time.perf_counter()
            naive = naive_act(policy, obs)
            slow.append(time.perf_counter() - t)
        full = _state_bytes(policy.state_dict().values())
        policy.add_lora(r=16, alpha=32)
        synced = _state_bytes(p for n, p in policy.named_parameters() if "lora_" in n)
        ratio = [s_ / f_ for s_, f_ in zip(slow, fast, strict=True)]
        rows.append({
            "family": family, "parameters_m": round(sum(p.numel() for p in policy.base_model.parameters()) / 1e6, 2),
            "prompt_tokens": int(policy.prepare({k: v[:1] for k, v in obs.items()})["embeds"].shape[1]),
            "act_s_median": round(float(np.median(fast)), 4), "act_s_range": [round(min(fast), 4), round(max(fast), 4)],
            "naive_s_median": round(float(np.median(slow)), 4),
            "speedup_median": round(float(np.median(ratio)), 2), "speedup_range": [round(min(ratio), 2), round(max(ratio), 2)],
            "same_tokens": bool(torch.equal(tokens, naive)),
            "full_state_mb": round(full / 2**20, 2), "lora_synced_mb": round(synced / 2**20, 3),
            "synced_fraction": round(synced / full, 4)})
        print(json.dumps(rows[-1]), file=sys.stderr)
    return {"bench": "families", "preset": args.preset, "batch": args.batch, "image_size": args.image_size,
            "tokens_per_decision": args.chunk_size * args.action_dim, "repeats": args.repeats, "lora_r": 16,
            "rows": rows, "machine": machine()}


def ensure_demos(env_id: str, episodes: int, root: Path, noise: float = 0.0) -> Path:
    from vla_rl.cli import main

    out = root / env_id.replace("/", "_")
    if not (out / "dataset.json").is_file() or len(json.loads((out / "dataset.json").read_text())["episodes"]) < episodes:
        import shutil

        shutil.rmtree(out, ignore_errors=True)
        assert main(["collect", "--env", env_id, "--episodes", str(episodes), "--out", str(out), "--noise", str(noise)]) == 0
    return out


def train_and_eval(demos: Path, n_demos: int, steps: int, eval_episodes: int, out: Path, preset: str, seed: int = 0) -> dict:
    import shutil

    from vla_rl.commands import pretrain
    from vla_rl.config import PolicyOptions, PretrainConfig
    from vla_rl.evaluation import evaluate_policy
    from vla_rl.policy import VLAPolicy

    shutil.rmtree(out, ignore_errors=True)
    cfg = PretrainConfig(demos=[str(demos)], max_episodes=n_demos, policy=PolicyOptions(preset=preset), out=str(out),
                         steps=steps, eval_every=-1, save_every=steps, log_every=max(1, steps // 10), seed=seed)
    cfg.validate()
    t = time.perf_counter()
    pretrain.run(cfg)
    train_s = time.perf_counter() - t
    policy = VLAPolicy.from_pretrained(out / "checkpoints/last/pretrained_model")
    from envs import EnvOptions

    options = EnvOptions(**policy.spec.train_env_options) if policy.spec.train_env_options else None
    res = evaluate_policy(policy, policy.spec.train_env, eval_episodes, seed=10_000, options=options)
    return {"env": policy.spec.train_env, "demos": n_demos, "steps": steps, "train_seconds": round(train_s, 1),
            "success_rate": res["success_rate"], "success_rate_ci95": [round(x, 3) for x in res["success_rate_ci95"]],
            "mean_return": round(res["mean_return"], 3)}


def bench_bc(args) -> dict:
    root = Path(args.workdir)
    rows = []
    for env_id in args.tasks:
        demos = ensure_demos(env_id, max(args.demos), root / "demos")
        for n in args.demos:
            rows.append(train_and_eval(demos, n, args.steps, args.eval_episodes, root / "runs" / f"{env_id.replace('/', '_')}_{n}",
                                       args.preset))
            print(json.dumps(rows[-1]), file=sys.stderr)
    return {"bench": "bc", "preset": args.preset, "rows": rows, "machine": machine()}


def bench_multimodal(args) -> dict:
    """Token policy (sampled, T=1) vs an MLP regression head on the same backbone, same demos and steps."""
    from envs import make_env
    from vla_rl.bc_data import BCData
    from vla_rl.evaluation import wilson_interval
    from vla_rl.policy import VLAPolicy

    root = Path(args.workdir)
    demos = ensure_demos("tabletop/off-center", args.n_demos, root / "demos")
    token = train_and_eval(demos, args.n_demos, args.steps, args.eval_episodes, root / "runs" / "offcenter_token",
                           args.preset)
    from vla_rl.evaluation import evaluate_policy

    policy = VLAPolicy.from_pretrained(root / "runs/offcenter_token/checkpoints/last/pretrained_model")
    sampled = evaluate_policy(policy, "tabletop/off-center", args.eval_episodes, seed=10_000, greedy=False)

    # Regression baseline: the same architecture from scratch, an MLP on the last prompt token -> action (MSE).
    from vla_rl.config import PolicyOptions, PretrainConfig
    from vla_rl.pretrain_run import build_initial_policy

    data = BCData.load([demos], 1, args.n_demos)
    reg = build_initial_policy(PretrainConfig(policy=PolicyOptions(preset=args.preset)), data)
    hidden = reg.base_model.config.text_config.hidden_size
    head = torch.nn.Sequential(torch.nn.Linear(hidden, 256), torch.nn.GELU(), torch.nn.Linear(256, data.actions.shape[-1]))
    params = [p for p in reg.parameters() if p.requires_grad] + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=3e-4, weight_decay=0.01, betas=(0.9, 0.95))
    from vla_rl.schedules import warmup_cosine

    rng = np.random.default_rng(0)

    def predict(obs):
        x = reg.prepare(obs)
        out = reg._forward(x["embeds"], x["mask"], x["positions"], x["pixels"])
        return head(out.hidden_states[-1][:, -1].float())

    t = time.perf_counter()
    for step in range(args.steps):
        for g in opt.param_groups:
            g["lr"] = warmup_cosine(step, args.steps, 3e-4, 100)
        obs, act = data.batch(rng.integers(0, len(data), 32))
        loss = torch.nn.functional.mse_loss(predict(obs), torch.as_tensor(act[:, 0]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    reg_train_s = time.perf_counter() - t
    reg.eval()
    successes = 0
    env = make_env("tabletop/off-center")
    for i in range(args.eval_episodes):
        obs, _ = env.reset(seed=10_000 + i)
        done, success = False, False
        while not done:
            with torch.no_grad():
                a = predict({k: v[None] for k, v in obs.items()})[0].numpy().clip(-1, 1)
            obs, _, term, trunc, info = env.step(a)
            success = success or info["success"]
            done = term or trunc
        successes += success
    env.close()
    lo, hi = wilson_interval(successes, args.eval_episodes)
    return {"bench": "multimodal", "env": "tabletop/off-center", "demos": args.n_demos, "steps": args.steps,
            "token_greedy": token, "token_sampled": {"success_rate": sampled["success_rate"],
                                                      "success_rate_ci95": [round(x, 3) for x in sampled["success_rate_ci95"]]},
            "mlp_regression": {"success_rate": successes / args.eval_episodes, "success_rate_ci95": [round(lo, 3), round(hi, 3)],
                               "train_seconds": round(reg_train_s, 1), "final_mse": round(loss.item(), 5)},
            "machine": machine()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="bench", required=True)
    s = sub.add_parser("speed", help="act() vs naive decoding")
    s.add_argument("--preset", default="small")
    s.add_argument("--batches", type=lambda x: [int(v) for v in x.split(",")], default=[1, 8, 32])
    s.add_argument("--action_dim", type=int, default=4, help="D (Meta-World: 4)")
    s.add_argument("--chunk_size", type=int, default=1)
    s.add_argument("--image_size", type=int, default=64)
    s.add_argument("--repeats", type=int, default=5)
    f = sub.add_parser("families", help="act() vs naive decoding and the sync's bytes, per VLA family")
    f.add_argument("--families", type=lambda x: x.split(","), default=list(FAMILY_NAMES))
    f.add_argument("--preset", default="small")
    f.add_argument("--batch", type=int, default=32)
    f.add_argument("--action_dim", type=int, default=4, help="D (Meta-World: 4)")
    f.add_argument("--chunk_size", type=int, default=1)
    f.add_argument("--image_size", type=int, default=64)
    f.add_argument("--repeats", type=int, default=5)
    b = sub.add_parser("bc", help="BC success vs number of demos")
    b.add_argument("--tasks", type=lambda x: x.split(","), default=["tabletop/touch-color", "tabletop/push-to-target",
                                                                      "tabletop/off-center"])
    b.add_argument("--demos", type=lambda x: [int(v) for v in x.split(",")], default=[5, 20, 50])
    b.add_argument("--steps", type=int, default=400)
    b.add_argument("--eval_episodes", type=int, default=30)
    b.add_argument("--preset", default="small")
    b.add_argument("--workdir", default="outputs/bench_policy")
    m = sub.add_parser("multimodal", help="token policy vs MLP regression on off-center")
    m.add_argument("--n_demos", type=int, default=50)
    m.add_argument("--steps", type=int, default=400)
    m.add_argument("--eval_episodes", type=int, default=30)
    m.add_argument("--preset", default="small")
    m.add_argument("--workdir", default="outputs/bench_policy")
    for p in (s, f, b, m):
        p.add_argument("--out", default="", help="also write the JSON result here")
    args = ap.parse_args()
    result = {"speed": bench_speed, "families": bench_families, "bc": bench_bc,
              "multimodal": bench_multimodal}[args.bench](args)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        from vla_rl.base.atomic_io import atomic_write_text

        atomic_write_text(args.out, text + "\n")


if __name__ == "__main__":
    main()
