"""Reward-model benchmark (JSON on stdout and to --out).

For each task, teacher (oracle, mistake 10 %) and pair budget (500, 2000): label single-frame pairs
from scripted demos (noise 0.1), train a 3-member Bradley–Terry ensemble, then measure on data it
never saw (fresh episodes, other seeds):
  heldout_gt_accuracy   agreement with ground-truth (privileged progress) preferences on 1000 test pairs
                        (also by |progress difference| bin, and on the pairs whose frames share an episode)
  spearman_progress     mean per-episode Spearman ρ between reward and progress
  train_seconds, reward_frames_per_s (batched reward(), 256 frames per call)
Ablations (oracle): RL-VLM-F's tanh head (largest budget); query selection by ensemble disagreement
or entropy for half of the smallest budget (PEBBLE's loop, two rounds); with --vla_policy, the
frozen vision tower of a pretrained policy as the encoder (rows of --vla_task).

    python experiments/bench_reward.py --out docs/bench_reward.json \
        --vla_policy outputs/metaworld/drawer-open/pretrain/checkpoints/last/pretrained_model  # after --stop_after 0 (3000 steps)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np
import torch

# Training episodes per task family. Tabletop episodes are short (~50 steps) and collect at ~900
# steps/s; with 30 of them a CNN sees too few block/target layouts (push-to-target: 0.67 held-out
# accuracy with 30 episodes, 0.82 with 200, 0.83 with 500; 2000 oracle pairs).
TRAIN_EPISODES = {"metaworld": 30, "tabletop": 200}
# |progress difference| bins of the test pairs (near-ties are where single frames are ambiguous).
GAP_BINS = [(0.0, 0.02), (0.02, 0.1), (0.1, 0.3), (0.3, 10.0)]


def collect(env_id: str, episodes: int, out: Path, seed: int) -> Path:
    from vla_rl.cli import main

    if not (out / "dataset.json").is_file():
        assert main(["collect", "--env", env_id, "--episodes", str(episodes), "--out", str(out), "--seed", str(seed),
                     "--noise", "0.1"]) == 0
    return out


def label_and_train(train_eps, teacher: str, n: int, cfg, selection: str):
    """Label `n` pairs and train. Uniform: n random pairs. Otherwise PEBBLE's loop in two rounds:
    n/2 uniform pairs, a model trained on them, then n/2 more chosen by `selection` from a pool of
    10 × n/2 candidates, and the final model trained on all n."""
    from reward_models import (
        ScriptedLabeler,
        sample_candidates,
        select_pairs,
        train_ensemble,
    )

    rng = np.random.default_rng(n)
    labeler = ScriptedLabeler(teacher, seed=1)

    def labelled(pairs):
        for p, r in zip(pairs, labeler.label(pairs), strict=True):
            p.status, p.label = r.status, r.label
        return pairs

    if selection == "uniform":
        return train_ensemble(labelled(sample_candidates(train_eps, n, 1, rng)), cfg, show_progress=False)
    pairs = labelled(sample_candidates(train_eps, n // 2, 1, rng))
    first, _ = train_ensemble(pairs, cfg, show_progress=False)
    pool = sample_candidates(train_eps, 10 * (n - n // 2), 1, rng)
    pairs += labelled(select_pairs(pool, n - n // 2, selection, first))
    return train_ensemble(pairs, cfg, show_progress=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=lambda x: x.split(","),
                    default=["metaworld/drawer-open", "metaworld/button-press", "tabletop/push-to-target"])
    ap.add_argument("--teachers", type=lambda x: x.split(","), default=["oracle", "mistake"])
    ap.add_argument("--pairs", type=lambda x: [int(v) for v in x.split(",")], default=[500, 2000])
    ap.add_argument("--train_episodes", type=int, default=0,
                    help=f"episodes of training data per task (0: by family, {TRAIN_EPISODES})")
    ap.add_argument("--test_episodes", type=int, default=10)
    ap.add_argument("--tanh_ablation", type=int, default=1,
                    help="also train output='tanh' (RL-VLM-F's head) with the oracle at the largest budget")
    ap.add_argument("--selection_ablation", type=int, default=1,
                    help="also train with half the smallest budget chosen by disagreement / entropy (oracle)")
    ap.add_argument("--vla_policy", default="",
                    help="a saved policy whose frozen vision tower is also tried as the encoder (oracle rows)")
    ap.add_argument("--vla_task", default="metaworld/drawer-open", help="the task of --vla_policy's rows")
    ap.add_argument("--workdir", default="outputs/bench_reward")
    ap.add_argument("--out", default="")
    args = ap.parse_args()

    from reward_models import load_episodes, sample_candidates
    from reward_models.reward_model import RewardModelConfig
    from reward_models.teachers import TEACHERS, teacher_labels
    from reward_models.training import PairArrays, pair_metrics
    from vla_rl.commands.reward_eval import spearman_progress

    root = Path(args.workdir)
    rows = []
    for env_id in args.tasks:
        name = env_id.replace("/", "_")
        n_train = args.train_episodes or TRAIN_EPISODES[env_id.split("/")[0]]
        train_dir = collect(env_id, n_train, root / name / f"train{n_train}", seed=0)
        test_dir = collect(env_id, args.test_episodes, root / name / "test", seed=50_000)
        train_eps, test_eps = load_episodes([train_dir]), load_episodes([test_dir])
        test_pairs = sample_candidates(test_eps, 1000, 1, np.random.default_rng(123))
        gt = teacher_labels(np.array([p.progress[0] for p in test_pairs]), np.array([p.progress[1] for p in test_pairs]),
                            TEACHERS["oracle"], np.random.default_rng(0))
        for p, y in zip(test_pairs, gt, strict=True):
            p.status, p.label = "labeled", float(y)
        test_arrays = PairArrays.from_pairs(test_pairs)
        same_episode = np.array([p.first_ref["episode"] == p.second_ref["episode"] for p in test_pairs]) & (gt != 0.5)
        gaps = np.abs(np.array([p.gt_return[1] - p.gt_return[0] for p in test_pairs]))
        runs = [(t, n, "linear", "cnn", "uniform") for t in args.teachers for n in args.pairs]
        if args.tanh_ablation:
            runs.append(("oracle", max(args.pairs), "tanh", "cnn", "uniform"))
        if args.selection_ablation:
            runs += [("oracle", min(args.pairs), "linear", "cnn", m) for m in ("disagreement", "entropy")]
        if args.vla_policy and env_id == args.vla_task:
            runs += [("oracle", n, "linear", "vla", "uniform") for n in args.pairs]
        for teacher, n, output, encoder, selection in runs:
            cfg = RewardModelConfig(image_shape=tuple(train_eps[0].image[0].shape[1:]), output=output, encoder=encoder,
                                    vla_policy=args.vla_policy if encoder == "vla" else "")
            model, report = label_and_train(train_eps, teacher, n, cfg, selection)
            metrics = pair_metrics(model, test_arrays)
            with torch.no_grad():
                from reward_models.segments import pair_probabilities

                p_second = pair_probabilities(model, test_pairs).mean(0).numpy()
            by_gap = {}
            for lo, hi in GAP_BINS:
                sel = (gaps >= lo) & (gaps < hi) & (gt != 0.5)
                if sel.any():
                    by_gap[f"{lo}-{hi}"] = {"n": int(sel.sum()),
                                            "accuracy": round(float(np.mean((p_second[sel] > 0.5) == (gt[sel] > 0.5))), 4)}
            same_acc = float(np.mean((p_second[same_episode] > 0.5) == (gt[same_episode] > 0.5)))
            with torch.no_grad():
                rho, _ = spearman_progress(model, [str(test_dir)])
                frames = np.concatenate([e for e in test_eps[0].image])[:2048]
                instr = np.repeat(test_eps[0].instruction[0][None], len(frames), 0)
                t = time.perf_counter()
                model.reward({"image": frames, "instruction": instr})
                fps = len(frames) / (time.perf_counter() - t)
            rows.append({"env": env_id, "train_episodes": n_train, "teacher": teacher, "pairs": n, "selection": selection,
                         "output": output, "encoder": encoder, "valid_pairs": report["pairs"],
                         "heldout_gt_accuracy": round(metrics["pairwise_accuracy"], 4),
                         "heldout_nll": round(metrics["nll"], 4), "heldout_ece": round(metrics["ece"], 4),
                         "heldout_gt_accuracy_by_progress_gap": by_gap,
                         "heldout_gt_accuracy_same_episode": {"n": int(same_episode.sum()),
                                                              "accuracy": round(same_acc, 4)},
                         "spearman_progress": round(rho, 4), "train_seconds": report["train_seconds"],
                         "reward_frames_per_s": round(fps, 1),
                         "best_epochs": [m["best_epoch"] for m in report["members"]]})
            print(json.dumps(rows[-1]), file=sys.stderr)
    result = {"bench": "reward", "rows": rows, "machine": {"cpu_count": os.cpu_count(), "torch": torch.__version__,
                                                           "torch_threads": torch.get_num_threads()}}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        from vla_rl.base.atomic_io import atomic_write_text

        atomic_write_text(args.out, text + "\n")


if __name__ == "__main__":
    main()
