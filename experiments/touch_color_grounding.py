"""Does a touch-color policy read the colour word? JSON per policy on stdout (issue 22, docs/learning.md section 9).

For each evaluation seed (10000, 10001, ...: the seeds `vla-rl eval` and the RL evaluations use) the policy runs one
episode; at its end we note which block the finger is nearest to. A policy that grounds the instruction ends nearest
the named block far above chance (25 %: four blocks); one that does not may still touch *a* block, the wrong one.
Reported: success, "nearest block is the named one", "touching any block", the nearest colour's histogram (a policy
that always goes to one colour shows here) and success per named colour.

    python experiments/touch_color_grounding.py outputs/tabletop/touch-color/pretrain/checkpoints/last/pretrained_model \
        --demos outputs/tabletop/touch-color/demos outputs/tabletop/touch-color/demos_heldout

With --demos it also compares the greedy action with the expert's on demo frames (cosine of the directions): on the
BC demos (does the policy fit them) and on demos of unseen seeds (`vla-rl collect --env tabletop/touch-color --seed
10000 --episodes 100 --out .../demos_heldout`: does it generalise).
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

import envs
from envs.tabletop.tasks import COLOURS
from vla_rl.policy import VLAPolicy


def grounding(policy_dir: str, episodes: int, seed: int, greedy: bool, temperature: float) -> dict:
    policy = VLAPolicy.from_pretrained(policy_dir).eval()
    env = envs.make_env("tabletop/touch-color", envs.EnvOptions(image_size=policy.spec.image_size[0]))
    generator = torch.Generator().manual_seed(0)
    rows = []
    try:
        for ep in range(episodes):
            obs, _ = env.reset(seed=seed + ep)
            backend, done, success = env.backend, False, False
            while not done:
                batch = {k: obs[k][None] for k in ("image", "state", "instruction")}
                with torch.no_grad():
                    out = policy.act(batch, temperature=temperature, greedy=greedy, generator=generator)
                for action in out.actions[0]:  # the chunk's actions (K = 1 for this task's BC start)
                    obs, _, term, trunc, info = env.step(action)
                    success, done = success or bool(info["success"]), term or trunc
                    if done:
                        break
            dist = {c: float(np.linalg.norm(backend.finger_xy - backend.body_xy(f"block_{c}"))) for c in COLOURS}
            nearest = min(dist, key=dist.get)
            rows.append({"target": backend.target, "nearest": nearest, "success": success,
                         "touching": dist[nearest] <= backend.TOUCH_DIST})
    finally:
        env.close()
    n = len(rows)
    return {"policy": policy_dir, "episodes": n, "seed": seed, "greedy": greedy,
            "temperature": None if greedy else temperature,
            "success": sum(r["success"] for r in rows) / n,
            "nearest_is_named": sum(r["nearest"] == r["target"] for r in rows) / n,
            "touching_any_block": sum(r["touching"] for r in rows) / n,
            "nearest_colour_counts": {c: sum(r["nearest"] == c for r in rows) for c in COLOURS},
            "success_by_named_colour": {c: [sum(r["success"] for r in rows if r["target"] == c),
                                            sum(r["target"] == c for r in rows)] for c in COLOURS}}


def action_agreement(policy_dir: str, demos: str, frames: int = 512) -> dict:
    """Greedy first action vs the expert's on `frames` random demo frames: the cosine of their directions. On the BC
    demos it says whether the policy fits them; on demos of unseen seeds (`vla-rl collect --seed 10000`) whether it
    generalises — a policy that fits the first and not the second has memorised its training episodes."""
    from vla_rl.bc_data import BCData

    policy = VLAPolicy.from_pretrained(policy_dir).eval()
    data = BCData.load([demos])
    idx = np.random.default_rng(0).integers(0, len(data), frames)
    obs, actions = data.batch(idx)
    expert = actions.reshape(frames, -1, actions.shape[-1])[:, 0]
    with torch.no_grad():
        pred = np.asarray(policy.act(obs, greedy=True).actions)[:, 0]
    cos = (pred * expert).sum(-1) / (np.linalg.norm(pred, axis=-1) * np.linalg.norm(expert, axis=-1) + 1e-9)
    return {"demos": demos, "frames": frames, "cosine_mean": round(float(cos.mean()), 3),
            "cosine_above_0.9": round(float((cos > 0.9).mean()), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("policies", nargs="+", help="pretrained_model directories")
    parser.add_argument("--episodes", type=int, default=60, help="episodes per policy (seeds seed, seed + 1, ...)")
    parser.add_argument("--seed", type=int, default=10_000, help="first evaluation seed")
    parser.add_argument("--sampled", action="store_true", help="sample at --temperature instead of greedy")
    parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature with --sampled")
    parser.add_argument("--demos", nargs="*", default=[],
                        help="demo datasets on whose frames to compare the greedy action with the expert's (the BC "
                             "demos: does it fit; demos of unseen seeds: does it generalise)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    out = []
    for p in args.policies:
        row = grounding(p, args.episodes, args.seed, not args.sampled, args.temperature)
        row["action_agreement"] = [action_agreement(p, d) for d in args.demos]
        out.append(row)
    print(json.dumps({"benchmark": "touch_color_grounding", "runs": out}, indent=1))


if __name__ == "__main__":
    main()
