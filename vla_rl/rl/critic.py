"""The asymmetric critic: V(s) from the simulator's privileged state instead of the VLA's features.

The VLA-feature value head (`vla_rl.policy.value_head`) predicts worse than a constant on drawer-open
(held-out explained variance < 0, docs/learning.md): it must learn V from 64-px frames through a frozen
backbone while the policy moves. A small MLP on the simulator's state (Meta-World's 39-d observation:
hand, gripper, object poses, goal) sees what the return depends on, so GAE's per-decision advantages
can carry credit instead of the critic's error (Pinto et al. 2018, "Asymmetric Actor Critic for
Image-Based Robot Learning"; RL4VLA and RLinf keep a critic of their own as well). It never acts and is
not part of the exported policy: it lives in the RL module and RLlib's checkpoint only.

Shape: CleanRL's PPO critic (two tanh hidden layers, orthogonal init) at width 256, with the output layer
at zero so V = 0 before it learns, like the VLA value head. The input is used as is: the simulator's units
(metres, a one-hot target) are already O(1) on Meta-World and the tabletop tasks.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class PrivilegedCritic(nn.Module):
    def __init__(self, in_dim: int, hidden: int = 256):
        super().__init__()
        if in_dim < 1:
            raise ValueError(f"privileged critic: input size {in_dim} must be >= 1")
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(),
                                 nn.Linear(hidden, 1))
        for layer in self.net[:-1]:
            if isinstance(layer, nn.Linear):
                nn.init.orthogonal_(layer.weight, gain=math.sqrt(2))
                nn.init.zeros_(layer.bias)
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        return self.net(torch.as_tensor(state, dtype=torch.float32)).squeeze(-1)
