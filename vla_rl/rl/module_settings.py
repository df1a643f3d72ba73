"""The VLA RLModule's settings: what `vla-rl train` passes to RLlib's `model_config`, typed, in one place.

Every field comes from `TrainConfig` (`from_train_config`), whose defaults are the only ones; no field has a default
here. The module reads `ModuleSettings.of(model_config)`, which refuses a dict with a missing or unknown key instead
of falling back to a second default (the pattern of `LearnerSettings`). The dict is pickled to every actor, so it holds
paths, numbers and strings only.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from vla_rl.policy.vla_policy import PolicyError

BASE_DTYPES = ("float32", "bfloat16")
# Keys RLlib itself merges into every module's model_config (ray 2.60: PPOConfig's `model_config`, the old stack's
# {"vf_share_layers": False}); the VLA module has no use for them and drops them.
RLLIB_MODEL_KEYS = frozenset({"vf_share_layers"})


@dataclass(frozen=True)
class ModuleSettings:
    policy_dir: str  # a `pretrained_model` directory (vla-rl pretrain, or an exported RL policy)
    lora_r: int  # LoRA rank
    lora_alpha: int  # LoRA scale numerator
    lora_target_modules: str  # regex of the modules that get LoRA; "" = every LM projection
    temperature: float  # sampling temperature of exploration (and of the training log-probs)
    seed: int  # seed of the module's sampling generator
    value_detach: bool  # the VLA value head reads detached features (the value loss does not train LoRA)
    activation_checkpointing: bool  # recompute the layers' activations in the learner's backward
    base_dtype: str  # "float32" or "bfloat16": the frozen base, the same in every copy (TrainConfig.run_base_dtype)
    critic: str  # "vla" (value head on the VLA's features) or "privileged" (rl.critic.PrivilegedCritic)

    def __post_init__(self):
        if self.base_dtype not in BASE_DTYPES:  # "auto" is resolved once per run (TrainConfig.run_base_dtype)
            raise PolicyError(f"model_config base_dtype={self.base_dtype!r}: give one of {list(BASE_DTYPES)}")

    @classmethod
    def from_train_config(cls, policy_dir: str, cfg) -> ModuleSettings:
        return cls(policy_dir=policy_dir, lora_r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
                   lora_target_modules=cfg.lora_target_modules, temperature=cfg.temperature, seed=cfg.seed,
                   value_detach=cfg.value_detach, activation_checkpointing=cfg.activation_checkpointing,
                   base_dtype=cfg.run_base_dtype(), critic=cfg.critic)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes) -> ModuleSettings:
        return dataclasses.replace(self, **changes)

    @classmethod
    def of(cls, model_config: dict[str, Any] | None) -> ModuleSettings:
        """The settings in an RLModule's model_config; a missing or unknown key is a bug in whoever built it."""
        data = {k: v for k, v in (model_config or {}).items() if k not in RLLIB_MODEL_KEYS}
        names = [f.name for f in dataclasses.fields(cls)]
        unknown, missing = sorted(set(data) - set(names)), [n for n in names if n not in data]
        if unknown or missing:
            raise PolicyError(f"model_config: unknown keys {unknown}, missing keys {missing} "
                              "(build it with ModuleSettings.from_train_config(...).as_dict())")
        return cls(**data)
