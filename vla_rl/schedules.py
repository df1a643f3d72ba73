"""Learning-rate schedules as pure functions of the step (nothing to checkpoint)."""

from __future__ import annotations

import math


def warmup_cosine(step: int, total: int, peak: float, warmup: int = 0, final_fraction: float = 0.1) -> float:
    """Linear warm-up to `peak`, then cosine decay to `final_fraction * peak` at `total` steps.

    After the warm-up this is transformers' `get_cosine_with_min_lr_schedule_with_warmup(min_lr_rate=final_fraction)`
    to float precision (tested). In the warm-up transformers' step 0 has lr 0 (step / warmup: a wasted step) and this
    (step + 1) / warmup; kept because a step-free pure function needs no scheduler state in checkpoints, and
    switching would shift every BC start the benchmarks measure by one step of warm-up."""
    if warmup > 0 and step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (final_fraction + (1 - final_fraction) * 0.5 * (1 + math.cos(math.pi * progress)))
