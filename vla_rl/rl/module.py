"""The RLlib RLModule around `VLAPolicy` (RLlib wraps the policy, never the reverse).

Actions at the module are MultiDiscrete([256] * K·D): the bin index of each action token (an env
wrapper decodes bins to the continuous chunk with the policy's action tokenizer).

- exploration: `act()` at `temperature`, seeded by the module's own generator → ACTIONS (bins) and
  ACTION_LOGP (the decision's log-prob: the sum over its K·D tokens, see `ppo_math`);
- inference: greedy `act()`;
- train: `evaluate()` of the sampled tokens with the same masking, temperature and dtype, so the
  first PPO ratio is exactly 1; also per-token log-probs, entropies, the whole bin distributions
  (for the exact KL to the reference) and values;
- `compute_values`: the value head on the prompt alone, without grad, in chunks (RLlib's GAE
  calls it on the whole batch).

State (weight sync and checkpoints) is the trainable tensors only — LoRA and the critic (LoRA
alone for inference-only runner modules) — and `set_state` refuses unknown or missing names.

`model_config` is `ModuleSettings(...).as_dict()` (vla_rl/rl/module_settings.py: the policy directory, LoRA,
temperature, seed, critic, base dtype), pickled to every actor; a missing or unknown key is refused.
"""

from __future__ import annotations

from typing import Any

import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.apis import ValueFunctionAPI
from ray.rllib.core.rl_module.torch.torch_rl_module import TorchRLModule

from vla_rl.base.quiet import silence_framework_noise
from vla_rl.policy.vla_policy import PolicyError
from vla_rl.rl import ppo_math
from vla_rl.rl.module_settings import ModuleSettings

TOKEN_LOGP = "token_logp"  # (B, K·D) log-prob of each sampled token (train forward)
SAMPLED_TOKEN_LOGP = "sampled_token_logp"  # (B, K·D) the same at sampling time (the per-token PPO ratio's π_old)
ENTROPY = "entropy"  # (B, K·D) entropy of each token's bin distribution
BIN_LOGP = "bin_logp"  # (B, K·D, 256) the bin distributions (exact KL to the reference)
VALUE_CHUNK = 64  # rows per value forward in compute_values
CRITICS = ("vla", "privileged")


def is_value_param(name: str) -> bool:
    """Is this module parameter the critic's (the VLA value head or the privileged critic), not the policy's?"""
    return name.startswith(("policy.value_head.", "critic."))


def build_policy_from_config(settings: ModuleSettings | dict[str, Any]):
    """The VLAPolicy a module config names, with LoRA attached and only LoRA + value head trainable."""
    from vla_rl.policy import VLAPolicy

    s = settings if isinstance(settings, ModuleSettings) else ModuleSettings.of(settings)
    policy = VLAPolicy.from_pretrained(s.policy_dir, trainable=False)
    if policy.has_lora:  # continuing from an RL-tuned policy: its adapter trains on
        for name, p in policy.named_parameters():
            p.requires_grad_("lora_" in name)
    else:
        policy.add_lora(r=s.lora_r, alpha=s.lora_alpha, target_modules=s.lora_target_modules or None)
    policy.value_head.requires_grad_(True)
    policy.detach_value_features = s.value_detach
    if s.activation_checkpointing:
        policy.enable_activation_checkpointing()
    if s.base_dtype != policy.spec.dtype:
        cast_frozen_base(policy, s.base_dtype)
    return policy.eval()


def cast_frozen_base(policy, dtype: str) -> None:
    """Frozen base weights (and the state projection) in `dtype`; LoRA and the value head stay float32, so the
    optimizer state and the weight sync are float32 (RLlib's numpy conversion refuses bfloat16). Inputs follow
    `spec.dtype`; logits and values are computed in float32 either way."""
    from vla_rl.policy.vla_policy import DTYPES

    policy.spec.dtype = dtype
    policy.model.to(DTYPES[dtype])
    if policy.state_proj is not None:
        policy.state_proj.to(DTYPES[dtype])
    for name, p in policy.model.named_parameters():
        if p.requires_grad:  # LoRA
            p.data = p.data.float()
    policy.value_head.float()


class VLARLModule(TorchRLModule, ValueFunctionAPI):
    def setup(self):
        silence_framework_noise()  # again, in case something reset the warning filters (vla_rl/base/quiet.py)
        settings = ModuleSettings.of(self.model_config)
        self.policy = build_policy_from_config(settings)
        self.temperature = settings.temperature
        self.generator = torch.Generator().manual_seed(settings.seed)
        self.critic = self._build_critic(settings.critic)
        n = self.policy.spec.n_action_tokens
        nvec = getattr(self.action_space, "nvec", None)
        if nvec is not None and (len(nvec) != n or any(int(v) != self.policy.action_tokenizer.n_bins for v in nvec)):
            raise PolicyError(f"action space {self.action_space} does not fit the policy: it emits {n} tokens "
                              f"(chunk {self.policy.spec.chunk_size} x {self.policy.spec.action_dim} dims) of "
                              f"{self.policy.action_tokenizer.n_bins} bins each")

    def _build_critic(self, kind: str):
        if kind not in CRITICS:
            raise PolicyError(f"critic={kind!r}: choose one of {list(CRITICS)}")
        if kind == "vla":
            return None
        from vla_rl.rl.critic import PrivilegedCritic
        from vla_rl.rl.env import PRIVILEGED

        spaces = getattr(self.observation_space, "spaces", {}) or {}
        if PRIVILEGED not in spaces:
            raise PolicyError(f"critic='privileged' needs the observation key {PRIVILEGED!r} (the RL env adds it with "
                              "env_config privileged_obs=True); this observation space has "
                              f"{sorted(spaces)}")
        self.policy.value_head.requires_grad_(False)  # V comes from the privileged critic; the VLA head stays as it is
        return PrivilegedCritic(int(spaces[PRIVILEGED].shape[0]))

    def _privileged_values(self, obs) -> torch.Tensor:
        from vla_rl.rl.env import PRIVILEGED

        return self.critic(obs[PRIVILEGED])

    # --- tokens <-> bins ------------------------------------------------------------------------
    def _bins(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens - self.policy.action_tokenizer.token_offset

    def _tokens(self, bins) -> torch.Tensor:
        return torch.as_tensor(bins).long() + self.policy.action_tokenizer.token_offset

    # --- forwards -------------------------------------------------------------------------------
    def _forward_inference(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        with torch.no_grad():
            out = self.policy.act(batch[Columns.OBS], greedy=True)
        return {Columns.ACTIONS: self._bins(out.tokens)}

    def _forward_exploration(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        with torch.no_grad():  # overriding drops the base class's no_grad
            out = self.policy.act(batch[Columns.OBS], temperature=self.temperature, generator=self.generator)
        return {Columns.ACTIONS: self._bins(out.tokens), Columns.ACTION_LOGP: out.logp_sum,
                SAMPLED_TOKEN_LOGP: out.logp}

    def _forward_train(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        self.policy.eval()  # forward_train calls train(); keep sampling's numerics (no dropout anywhere)
        ev = self.policy.evaluate(batch[Columns.OBS], self._tokens(batch[Columns.ACTIONS]), self.temperature)
        value = ev.value if self.critic is None else self._privileged_values(batch[Columns.OBS])
        return {Columns.ACTION_LOGP: ppo_math.decision_logp(ev.logp), TOKEN_LOGP: ev.logp, ENTROPY: ev.entropy,
                BIN_LOGP: ev.bin_logp, Columns.EMBEDDINGS: value}

    def compute_values(self, batch: dict[str, Any], embeddings: Any = None) -> torch.Tensor:
        if embeddings is not None:  # the train forward already computed them (with grad)
            return embeddings
        obs = batch[Columns.OBS]
        n = len(obs["image"])
        with torch.no_grad():
            if self.critic is not None:
                return self._privileged_values(obs)
            parts = [self.policy.value({k: v[i:i + VALUE_CHUNK] for k, v in obs.items()})
                     for i in range(0, n, VALUE_CHUNK)]
        return torch.cat(parts) if parts else torch.zeros(0)

    # --- state: trainable tensors only ----------------------------------------------------------
    def _state_names(self) -> list[str]:
        names = [n for n, p in self.named_parameters() if p.requires_grad]
        return [n for n in names if not is_value_param(n)] if self.inference_only else names

    def get_state(self, components=None, *, not_components=None, inference_only: bool = False, **kwargs) -> dict:
        params = dict(self.named_parameters())
        names = [n for n in self._state_names() if not (inference_only and is_value_param(n))]
        return {n: params[n].detach().cpu().clone() for n in names}

    def set_state(self, state: dict) -> None:
        want = set(self._state_names())
        got = set(state) - ({n for n in state if is_value_param(n)} if self.inference_only else set())
        if got != want:
            raise PolicyError(f"module state does not fit this policy: unknown {sorted(got - want)[:3]}, "
                              f"missing {sorted(want - got)[:3]} (was it saved with other LoRA settings?)")
        params = dict(self.named_parameters())
        with torch.no_grad():
            for name in want:
                value = torch.as_tensor(state[name])
                if value.shape != params[name].shape:
                    raise PolicyError(f"module state: {name} has shape {tuple(value.shape)}, "
                                      f"the policy {tuple(params[name].shape)}")
                params[name].copy_(value)

    # --- action distributions (RLlib asks; the default getters raise for MultiDiscrete) ---------
    def _dist_cls(self):
        from ray.rllib.models.torch.torch_distributions import TorchMultiCategorical

        return TorchMultiCategorical.get_partial_dist_cls(
            input_lens=[self.policy.action_tokenizer.n_bins] * self.policy.spec.n_action_tokens)

    def get_inference_action_dist_cls(self):
        return self._dist_cls()

    def get_exploration_action_dist_cls(self):
        return self._dist_cls()

    def get_train_action_dist_cls(self):
        return self._dist_cls()
