"""How usable is a reward model as an RL reward? Scores rollout episodes that carry privileged progress and success
(e.g. noisy-expert demos: `vla-rl collect --noise 1.0`) and prints JSON:

- `pearson_frames`: Pearson correlation of the model's per-frame reward with progress, pooled over every frame of
  every episode (what `reward/gt_corr` logs during RL against the env's reward): a reward that ranks the frames of one
  episode well but shifts from episode to episode scores low here;
- `spearman_within`: the mean per-episode Spearman correlation with progress (`vla-rl reward eval`'s figure);
- `success_auc_last` / `success_auc_mean`: the probability that a successful episode's last-frame (mean) reward
  exceeds a failed episode's — whether the reward separates outcomes, which is what PPO's advantages need.

    python experiments/reward_model_quality.py --models RM_DIR [RM_DIR ...] --episodes DEMO_DIR [DEMO_DIR ...]
"""

from __future__ import annotations

import argparse
import json

import numpy as np


def auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(a positive scores above a negative), ties counted half (the Mann-Whitney U statistic / n·m)."""
    if not len(pos) or not len(neg):
        return float("nan")
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0).sum() + 0.5 * (diff == 0).sum()) / diff.size)


class _Progress:
    """The reference row: "rewards" that are the privileged progress itself (a reward model with no error); `quality`
    hands it each episode's progress before asking for its rewards."""

    current: np.ndarray

    def reward(self, obs):
        return self.current


def quality(model, episodes) -> dict[str, float]:
    from scipy.stats import pearsonr, spearmanr

    rewards, progress, rhos, last, mean, success = [], [], [], [], [], []
    for ep in episodes:
        if isinstance(model, _Progress):
            model.current = ep.progress
        r = np.asarray(model.reward({"image": ep.image,
                                     "instruction": np.repeat(ep.instruction[None], len(ep.image), 0)}), np.float64)
        p = np.asarray(ep.progress, np.float64)
        rewards.append(r), progress.append(p)
        if np.ptp(p) > 0 and np.ptp(r) > 0:
            rhos.append(spearmanr(r, p).statistic)
        last.append(r[-1]), mean.append(r.mean()), success.append(bool(np.asarray(ep.success).any()))
    r_all, p_all = np.concatenate(rewards), np.concatenate(progress)
    s = np.array(success)
    last, mean = np.array(last), np.array(mean)
    return {"episodes": len(s), "success_fraction": float(s.mean()), "frames": int(len(r_all)),
            "pearson_frames": float(pearsonr(r_all, p_all).statistic),
            "spearman_within": float(np.mean(rhos)) if rhos else float("nan"),
            "success_auc_last": auc(last[s], last[~s]), "success_auc_mean": auc(mean[s], mean[~s])}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", required=True, help="reward-model directories (vla-rl reward train)")
    parser.add_argument("--episodes", nargs="+", required=True, help="demo datasets with progress and success")
    args = parser.parse_args(argv)
    import torch

    from envs.demos import DemoDataset
    from reward_models.reward_model import RewardEnsemble

    episodes = [ep for path in args.episodes for ep in DemoDataset(path)]
    out = {"benchmark": "reward_model_quality", "episodes": args.episodes, "models": {}}
    out["models"]["progress (the oracle's own signal)"] = quality(_Progress(), episodes)
    with torch.no_grad():
        for path in args.models:
            out["models"][path] = quality(RewardEnsemble.load(path), episodes)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
