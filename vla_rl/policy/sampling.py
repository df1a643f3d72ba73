"""Seeded categorical sampling whose random stream does not depend on the device that samples.

`torch.multinomial(probs, generator=g)` needs `g` on the probabilities' device (CUDA refuses a CPU generator),
and a CUDA generator draws a different stream from a CPU one, so a run's samples — and an exact resume — would
depend on where the runner sits. Here the uniforms come from the caller's CPU generator (one per row), move to
the logits' device, and pick a bin by inverse CDF: the same seed gives the same uniforms on any device, and the
tokens agree wherever the CDFs agree (they can differ only where float rounding moves a bin boundary past a
uniform). The generator's state is the one RNG state a checkpoint saves, as before.
"""

from __future__ import annotations

import torch


def sample_categorical(logp: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One index per row of `logp` (..., N) (log-probabilities, possibly unnormalised), drawn with `generator`.

    Only bins with positive probability can be drawn (`searchsorted(..., right=True)` skips a zero-width bin)."""
    probs = logp.detach().float().exp()
    cdf = probs.cumsum(-1)
    u = torch.rand(probs.shape[:-1], generator=generator, dtype=torch.float32, device="cpu").to(probs.device)
    point = (u * cdf[..., -1]).unsqueeze(-1)
    return torch.searchsorted(cdf, point, right=True).squeeze(-1).clamp_(max=probs.shape[-1] - 1)
