"""Learning-rate schedules as pure functions of the step (nothing to checkpoint)."""

from __future__ import annotations

import math


def warmup_cosine(step: int, total: int, peak: float, warmup: int = 0, final_fraction: float = 0.1) -> float:
    """Linear warm-up to `peak`, then cosine decay to `final_fraction * peak` at `total` steps."""
    if warmup > 0 and step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (final_fraction + (1 - final_fraction) * 0.5 * (1 + math.cos(math.pi * progress)))
