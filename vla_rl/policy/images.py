"""The policy's image preprocessing as tensor ops: what an HF image processor's rescale + normalise does, without PIL,
because it runs on every decision (and on every frame a reward model with the policy's vision tower scores)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def normalize_images(images: torch.Tensor, size: int, mean, std, dtype: torch.dtype) -> torch.Tensor:
    """uint8 `(B, H, W, 3)` -> normalised float `(B, 3, size, size)`, the processor's rescale+normalise.

    A tensor path (not the PIL processor) because it runs on every decision; it equals the
    processor's output when no resize is needed (tested) and uses antialiased bilinear otherwise.
    """
    return normalize_unit_images(images.permute(0, 3, 1, 2).to(torch.float32) / 255.0, size, mean, std, dtype)


def normalize_unit_images(x: torch.Tensor, size: int, mean, std, dtype: torch.dtype) -> torch.Tensor:
    """Float images in [0, 1] `(B, 3, H, W)` -> resized and normalised `(B, 3, size, size)`."""
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    mean = torch.as_tensor(mean, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    std = torch.as_tensor(std, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    return ((x - mean) / std).to(dtype)
