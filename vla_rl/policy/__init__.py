"""The VLA policy: an HF image-text-to-text model + the OpenVLA action tokenizer.

    from vla_rl.policy import ActionTokenizer, build_policy, VLAPolicy
    policy = build_policy(ActionTokenizer.from_actions(demo_actions), state_dim=2, image_size=(64, 64))
    out = policy.act(obs_batch, greedy=True)          # tokens, logp, value, actions (B, K, D)
    policy.save_pretrained("outputs/policy"); VLAPolicy.from_pretrained("outputs/policy")
"""

from vla_rl.policy.action_tokenizer import ActionTokenizer, ActionTokenizerError
from vla_rl.policy.backbones import PRESETS, BackboneError
from vla_rl.policy.factory import build_policy, policy_from_hf
from vla_rl.policy.vla_policy import (
    ActOutput,
    EvalOutput,
    PolicyError,
    PolicySpec,
    VLAPolicy,
)

__all__ = [
    "PRESETS",
    "ActOutput",
    "ActionTokenizer",
    "ActionTokenizerError",
    "BackboneError",
    "EvalOutput",
    "PolicyError",
    "PolicySpec",
    "VLAPolicy",
    "build_policy",
    "policy_from_hf",
]
