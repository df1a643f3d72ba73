"""The VLA learner's settings: what `vla-rl train` passes to RLlib's `learner_config_dict`, typed, in one place.

Every field that a user sets comes from `TrainConfig` (`from_train_config`), whose defaults are the only ones; the
four fields with defaults here are benchmark-only knobs that no command exposes. The learner and the algorithm
read `LearnerSettings.of(config)`, which refuses a dict with a missing or unknown key instead of falling back to a
second default.

The PPO coefficients that RLlib's own config also names are wired through RLlib's fields, not duplicated here:
`lr`, `gamma`, `lambda_`, `clip_param`, `vf_loss_coeff` (= vf_coef) and `entropy_coeff` (= entropy_coef);
`vf_clip_param` must stay unset (infinite): the VLA learner does not clip the value loss.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class LearnerSettings:
    ratio: str  # "decision" (one per decision), "token" (one per token, averaged), "sequence" (GSPO: length-normalised)
    lr: float  # LoRA's AdamW lr (the same value as RLlib's `lr`)
    vf_lr: float  # the critic's AdamW lr
    beta: float  # initial KL(π‖π_ref) weight per decision
    kl_target: float  # adaptive β toward this KL per token; 0 = fixed β
    target_kl: float  # early stop of an update's policy steps past 1.5 × this k3 KL per token to the sampler; 0 = off
    critic_warmup: int  # updates that train only the value loss
    temperature: float  # the sampler's temperature (must equal the module's)
    rollout_length: int  # decisions per env per iteration
    group_size: int  # envs per group of equal initial states; > 1 selects group advantages
    shuffle_advantages: bool  # the no-credit control
    critic_gate: bool  # fall back to Monte-Carlo returns while the critic's held-out EV < 0
    seed: int
    runner_restore_timeout_s: float
    kl_horizon: int = 10_000  # the adaptive controller's horizon in samples
    ref_chunk: int = 64  # rows per reference forward pass (memory)
    kl_reference: bool = True  # False drops the reference pass and the KL term (the memory benchmark's control)
    ref_log_rows: int = 256  # with β fixed at 0 (the KL only logged): loss rows the reference scores; 0 = all

    @property
    def kl_in_loss(self) -> bool:
        """Whether the KL to the reference can enter the loss (β > 0, or an adaptive β); else it is only logged."""
        return self.beta > 0 or self.kl_target > 0

    @classmethod
    def from_train_config(cls, cfg) -> LearnerSettings:
        return cls(ratio=cfg.ratio, lr=cfg.lr, vf_lr=cfg.vf_lr, beta=cfg.beta, kl_target=cfg.kl_target,
                   target_kl=cfg.target_kl, critic_warmup=cfg.critic_warmup, temperature=cfg.temperature,
                   rollout_length=cfg.rollout_length,
                   group_size=cfg.group_size, shuffle_advantages=cfg.shuffle_advantages, critic_gate=cfg.critic_gate,
                   seed=cfg.seed, runner_restore_timeout_s=cfg.runner_restore_timeout_s)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def of(cls, algo_config) -> LearnerSettings:
        """The settings of an RLlib AlgorithmConfig; a missing or unknown key is a bug in whoever built it."""
        data = dict(algo_config.learner_config_dict)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        missing = sorted(f.name for f in dataclasses.fields(cls)
                         if f.name not in data and f.default is dataclasses.MISSING)
        if unknown or missing:
            raise ValueError(f"learner_config_dict: unknown keys {unknown}, missing keys {missing} "
                             "(build it with LearnerSettings.from_train_config(...).as_dict())")
        return cls(**data)
