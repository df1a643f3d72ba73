"""The critic: a small MLP on the VLM's last hidden state at the token before the first action.

RL4VLA / RLinf put the value head there: that token has read the image, the instruction and the
state but no action yet, so V(s) depends on the state only. It runs in float32 whatever the
backbone dtype, and has its own learning rate in the RL learner.
"""

from __future__ import annotations

import torch
from torch import nn


class ValueHead(nn.Module):
    def __init__(self, in_dim: int, hidden: int = 256):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, 1))
        nn.init.zeros_(self.net[-1].weight)  # V = 0 at start: no spurious advantages before it learns
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.net(hidden.float()).squeeze(-1)
