"""A reward model's scores of a batch's frames, computed once per batch, and the audit that reads the same scores.

The RL side (`vla_rl.rl.episodes.write_model_rewards`) turns the scores into each action's reward; the preference
loop's audit (`spearman_vs_progress`) ranks them against the privileged progress. One forward pass over the frames
feeds both.
"""

from __future__ import annotations

import numpy as np

from reward_models.segments import EpisodeFrames


def score_frames(model, frames: EpisodeFrames) -> list[np.ndarray]:
    """The model's normalised reward of every frame (reset frame included) of every episode, one array each."""
    if not frames.image:
        return []
    images = np.concatenate(frames.image)
    instr = np.concatenate([np.repeat(i[None], len(im), 0) for i, im in zip(frames.instruction, frames.image,
                                                                              strict=True)])
    scores = np.asarray(model.reward({"image": images, "instruction": instr}), dtype=np.float32)
    return np.split(scores, np.cumsum([len(im) for im in frames.image])[:-1])


def spearman_vs_progress(scores: list[np.ndarray], frames: EpisodeFrames) -> float:
    """Rank correlation of the scores with privileged progress over the frames where progress is known (NaN when
    fewer than 3 frames have it or it is constant)."""
    from scipy.stats import spearmanr

    if not scores:
        return float("nan")
    r, progress = np.concatenate(scores), np.concatenate(frames.progress)
    ok = np.isfinite(progress)
    if ok.sum() < 3 or np.ptp(progress[ok]) == 0:
        return float("nan")
    return float(spearmanr(r[ok], progress[ok]).statistic)
