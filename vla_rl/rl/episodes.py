"""RLlib episodes → `EpisodeFrames` (the framework-free frames the preference loop and reward models read), and a
reward model's scores back onto the episodes.

The RLlib glue of the reward models lives here, so that `reward_models` never touches RLlib's episode API.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from envs.instruction import decode_instruction
from reward_models.segments import EpisodeFrames
from vla_rl.base.errors import ConfigError
from vla_rl.train_config import LEARNED_REWARD_FORMS

GYM_CAST_WARNING = ".*Casting input x to numpy array"  # gymnasium's Box.contains on a non-ndarray


def episode_frames(episodes, source: str) -> EpisodeFrames:
    """Frames, instructions and privileged progress of RLlib `SingleAgentEpisode`s (every observation, reset frame
    included); `source` goes into the provenance of pairs drawn from them."""
    out = EpisodeFrames(source, [], [], [], [], [])
    for e in episodes:
        obs = e.get_observations()
        infos = e.get_infos()
        images = np.asarray(obs["image"], dtype=np.uint8)
        instr = np.asarray(obs["instruction"], dtype=np.int64)
        progress = np.array([float(i.get("progress", np.nan)) for i in infos], dtype=np.float64)
        if len(progress) != len(images):  # infos are aligned with observations in RLlib's episodes
            progress = np.full(len(images), np.nan)
        out.image.append(images)
        out.instruction.append(instr[0])
        out.text.append(decode_instruction(instr[0]))
        out.gt.append(progress)
        out.progress.append(progress)
    return out


@dataclass(frozen=True)
class LearnedRewardSettings:
    """How a reward model's scores become the actions' rewards; every field comes from `TrainConfig`, whose defaults
    are the only ones (`reward_scale`, `learned_reward`, `gamma`)."""

    scale: float  # rewards = scale x (the score, or its change)
    form: str  # "score": s[t + 1], the frame an action led to; "delta": gamma * s[t + 1] - s[t]; "gain": s[t + 1] - s[0]
    gamma: float  # the discount of "delta" (the run's GAE gamma, so the shaping is potential-based exactly)

    def __post_init__(self):
        if self.form not in LEARNED_REWARD_FORMS:
            raise ValueError(f"learned reward form {self.form!r}: choose one of {list(LEARNED_REWARD_FORMS)}")

    @classmethod
    def from_train_config(cls, cfg) -> LearnedRewardSettings:
        return cls(scale=cfg.reward_scale, form=cfg.learned_reward, gamma=cfg.gamma)


def learned_rewards(scores: np.ndarray, settings: LearnedRewardSettings) -> np.ndarray:
    """The rewards of a chunk's len(scores) - 1 actions from the scores of its frames (observations 0..n):
    "score" pays action t the score of the frame it led to, s[t + 1]; "delta" pays gamma * s[t + 1] - s[t]
    (potential-based shaping of a zero reward, Ng et al. 1999: the discounted return from t is
    gamma^(T - t) s[T] - s[t], where the episode ends, not a sum over the frames on the way); "gain" pays
    s[t + 1] - s[0], the score over the episode's first frame (`scores` must then start at the reset). Times `scale`."""
    s = np.asarray(scores, dtype=np.float64)
    if settings.form == "score":
        r = s[1:]
    elif settings.form == "gain":
        r = s[1:] - s[0]
    else:
        r = settings.gamma * s[1:] - s[:-1]
    return (r * settings.scale).astype(np.float32)


def write_model_rewards(episodes, scores: list[np.ndarray], settings: LearnedRewardSettings) -> dict[str, float]:
    """Each action's reward becomes its `learned_rewards` (with "score": `scale` × the reward model's score of the
    frame it led to, observation t + 1), written onto the episodes before the learner sees them; `scores` are
    `reward_models.scoring.score_frames` of the same episodes (len(e) + 1 frames each). Returns the reward-hacking
    monitor over the batch's actions: the mean learned reward, the mean env reward it replaced and their Pearson
    correlation (`reward/learned_mean`, `reward/gt_mean`, `reward/gt_corr`; with "delta" the correlation is of a
    change against a level, so it reads lower for the same model)."""
    learned, env = [], []
    for e, s in zip(episodes, scores, strict=True):
        n = len(e)
        if len(s) != n + 1:
            raise ValueError(f"an episode chunk of {n} steps has {len(s)} scored frames; expected {n + 1}")
        if settings.form == "gain" and e.t_started != 0:
            raise ConfigError(f"learned_reward=gain: an episode went on across iterations (a chunk starts at its step "
                              f"{e.t_started}), so its first frame is not in this batch — make rollout_length a multiple "
                              "of the episode length with --env_options.terminate_on_success false, or use "
                              "--learned_reward delta")
        env.append(np.array(e.get_rewards(), dtype=np.float64, copy=True))  # a copy: get_rewards may be a view
        new = learned_rewards(s, settings)
        if n:
            data = e.rewards.data  # a runner's episodes arrive unpickled with read-only arrays
            if isinstance(data, np.ndarray) and not data.flags.writeable:
                e.rewards.data = data.copy()
            with warnings.catch_warnings():  # RLlib checks new_data[0], a numpy scalar, against the rewards' Box:
                warnings.filterwarnings("ignore", message=GYM_CAST_WARNING, category=UserWarning)  # gym warns, casts
                e.set_rewards(new_data=new, at_indices=slice(0, n))
        learned.append(new.astype(np.float64))
    learned_all, env_all = np.concatenate(learned or [np.zeros(0)]), np.concatenate(env or [np.zeros(0)])
    if not len(learned_all):
        return {}
    corr = float(np.corrcoef(learned_all, env_all)[0, 1]) if len(learned_all) > 1 and np.ptp(learned_all) > 0 \
        and np.ptp(env_all) > 0 else float("nan")
    return {"reward/learned_mean": float(learned_all.mean()), "reward/gt_mean": float(env_all.mean()),
            "reward/gt_corr": corr}
