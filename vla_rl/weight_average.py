"""An exponential moving average (Polyak average) of a model's trained weights, for BC.

A BC run's closed-loop success can swing by tens of points between checkpoints a few hundred steps apart while its
loss falls smoothly (docs/learning.md, section 17): a small move of the weights changes which action bin wins on the
frames that matter. Evaluating and deploying the average of the recent weights, while training continues on the raw
ones, is the usual remedy (Diffusion Policy, LeRobot).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


def ema_decay_at(decay: float, updates: int) -> float:
    """The decay after `updates` averaging steps: min(decay, (1 + t) / (10 + t)), TensorFlow's
    `ExponentialMovingAverage(num_updates=t)` ramp, so the first steps do not anchor the average to the init."""
    return min(decay, (1 + updates) / (10 + updates))


class WeightAverage:
    """Holds the average of `named` parameters; `update` after each optimizer step, `applied` to use it."""

    def __init__(self, named: list[tuple[str, torch.nn.Parameter]], decay: float):
        self.names = [n for n, _ in named]
        self.params = [p for _, p in named]
        self.average = [p.detach().clone() for p in self.params]
        self.decay = decay

    @torch.no_grad()
    def update(self, updates: int) -> None:
        """Fold the current weights in; `updates` = averaging steps before this one."""
        weight = 1.0 - ema_decay_at(self.decay, updates)
        for avg, p in zip(self.average, self.params, strict=True):
            avg.lerp_(p.detach(), weight)

    @contextmanager
    def applied(self) -> Iterator[dict[str, torch.Tensor]]:
        """The averaged weights in the model inside the block (yields the raw ones, by name); raw ones back after."""
        raw = {n: p.detach().clone() for n, p in zip(self.names, self.params, strict=True)}
        with torch.no_grad():
            for avg, p in zip(self.average, self.params, strict=True):
                p.copy_(avg)
        try:
            yield raw
        finally:
            with torch.no_grad():
                for n, p in zip(self.names, self.params, strict=True):
                    p.copy_(raw[n])

    @torch.no_grad()
    def restore(self, raw: dict[str, torch.Tensor]) -> None:
        """On resume: the model holds the saved (averaged) policy; make that the average and load the raw weights."""
        self.average = [p.detach().clone() for p in self.params]
        for n, p in zip(self.names, self.params, strict=True):
            p.copy_(raw[n])
