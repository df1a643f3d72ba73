"""`vla-rl reward eval`: a reward model against labelled pairs and against privileged progress.

JSON fields: pairwise_accuracy, nll, ece (on labelled pairs, ensemble mean), teacher_accuracy
(labels vs privileged ground truth, when pairs carry it), gt_pairwise_accuracy (model vs
ground-truth preferences), spearman_progress (mean over episodes of Spearman's ρ between the
per-frame reward and progress), reward_frames_per_s.
"""

from __future__ import annotations

import json
import time

import numpy as np

from reward_models.config import RewardEvalConfig


def spearman_progress(model, episode_dirs: list[str]) -> tuple[float, float]:
    """Mean per-episode Spearman ρ(reward, progress) and reward throughput (frames/s)."""
    from scipy.stats import spearmanr

    from envs.demos import DemoDataset

    rhos, frames, seconds = [], 0, 0.0
    for path in episode_dirs:
        for ep in DemoDataset(path):
            t = time.perf_counter()
            r = model.reward({"image": ep.image, "instruction": np.repeat(ep.instruction[None], len(ep.image), 0)})
            seconds += time.perf_counter() - t
            frames += len(ep.image)
            if np.ptp(ep.progress) > 0 and np.ptp(r) > 0:
                rhos.append(spearmanr(r, ep.progress).statistic)
    return (float(np.mean(rhos)) if rhos else float("nan")), frames / max(seconds, 1e-9)


def run(cfg: RewardEvalConfig) -> int:
    import torch

    from reward_models.pairs import PairDataError, PairDataset
    from reward_models.reward_model import RewardEnsemble
    from reward_models.training import PairArrays, pair_metrics
    from vla_rl.base.outputs import prepare_output_file

    if cfg.out:
        prepare_output_file(cfg.out, cfg.overwrite)
    model = RewardEnsemble.load(cfg.model)
    result: dict = {"model": cfg.model}
    if cfg.pairs:
        pairs = [p for path in cfg.pairs for p in PairDataset(path)]
        if not any(p.status == "labeled" for p in pairs):
            raise PairDataError(f"{cfg.pairs}: none of the {len(pairs)} pairs is labelled, so there is nothing to score — "
                                "label them (`vla-rl reward label --retry_unlabeled true --out DIR`) or pass --episodes only")
        result.update(pair_metrics(model, PairArrays.from_pairs(pairs)))
        with_gt = [p for p in pairs if p.gt_return is not None and p.gt_return[0] != p.gt_return[1]]
        labelled = [p for p in with_gt if p.status == "labeled" and p.label != 0.5]
        if labelled:
            result["teacher_accuracy"] = float(np.mean([(p.label == 1.0) == (p.gt_return[1] > p.gt_return[0])
                                                        for p in labelled]))
        if with_gt:
            for p in with_gt:
                p.status, p.label = "labeled", float(p.gt_return[1] > p.gt_return[0])
            result["gt_pairwise_accuracy"] = pair_metrics(model, PairArrays.from_pairs(with_gt))["pairwise_accuracy"]
        result["pairs"] = len(pairs)
    if cfg.episodes:
        with torch.no_grad():
            rho, fps = spearman_progress(model, cfg.episodes)
        result["spearman_progress"] = rho
        result["reward_frames_per_s"] = round(fps, 1)
    text = json.dumps(result)
    if cfg.out:
        from vla_rl.base.atomic_io import atomic_write_text

        atomic_write_text(cfg.out, text + "\n")
    print(text)
    return 0
