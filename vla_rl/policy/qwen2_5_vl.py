"""Qwen2.5-VL glue for the generic policy (`backbones.Qwen2_5_VLFamily`): the patch layout, M-RoPE positions and an
image-only processor. Pure tensor functions (tested against transformers' own image processor and `get_rope_index`).
"""

from __future__ import annotations

import torch
from transformers import ProcessorMixin
from transformers.models.qwen2_5_vl.processing_qwen2_5_vl import Qwen2_5_VLProcessor


class Qwen2_5_VLImageProcessor(Qwen2_5_VLProcessor):
    """`Qwen2_5_VLProcessor` without its video processor, which needs torchvision (not a vla-rl dependency): the
    policy feeds one image per prompt. Text and images are processed exactly as by the stock processor (it expands
    `<|image_pad|>` to `t*h*w / merge^2` tokens); it saves and loads (`from_pretrained`) a stock checkpoint's
    tokenizer and image processor files too."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        self.image_token = getattr(tokenizer, "image_token", None) or "<|image_pad|>"
        self.video_token = getattr(tokenizer, "video_token", None) or "<|video_pad|>"
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)


def flatten_patches(pixel_values: torch.Tensor, patch_size: int, temporal_patch_size: int,
                    merge_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised images `(B, C, H, W)` -> Qwen2-VL's `pixel_values` `(B*gh*gw, C*T*p*p)` and `image_grid_thw` (B, 3).

    The image processor's `patchify` on a batch: patches ordered by merge window (window row, window column, then the
    merge_size x merge_size patches inside it), each patch flattened as (C, T, p, p) with the still image repeated
    over the T temporal slots."""
    b, c, h, w = pixel_values.shape
    p, m = patch_size, merge_size
    if h % (p * m) or w % (p * m):
        raise ValueError(f"image {h}x{w} is not a multiple of patch_size*merge_size = {p * m}")
    gh, gw = h // p, w // p
    x = pixel_values.reshape(b, c, gh // m, m, p, gw // m, m, p).permute(0, 2, 5, 3, 6, 1, 4, 7)
    x = x.unsqueeze(6).expand(*x.shape[:6], temporal_patch_size, p, p)  # (B, gh/m, gw/m, m, m, C, T, p, p)
    grid = torch.tensor([1, gh, gw], dtype=torch.long, device=pixel_values.device).repeat(b, 1)
    return x.reshape(b * gh * gw, c * temporal_patch_size * p * p), grid


def mrope_position_ids(positions: torch.Tensor, input_ids: torch.Tensor, image_grid_thw: torch.Tensor,
                       image_token_id: int, merge_size: int) -> torch.Tensor:
    """1-D positions `(B, P)` of prompts holding one image each -> Qwen2.5-VL's 3-D M-RoPE positions `(3, B, P)`.

    What `Qwen2_5_VLModel.get_rope_index` computes from the ids, the grid and the attention mask (`positions` count
    the unmasked tokens from 0; padding keeps 0): text before the image keeps its position on all three axes; the
    image's (row, column) merged patch at 1-D start s + k gets (s, s + row, s + column); text after it continues from
    s + max(rows, columns), i.e. its 1-D position shifted by max(rows, columns) - rows*columns (the rope delta). Text
    positions keep equal axes, so the positions of later tokens are the last prompt position + 1, + 2, ... as for a
    1-D RoPE."""
    image = input_ids == image_token_id
    rows = (image_grid_thw[:, 1] // merge_size)[:, None]
    cols = (image_grid_thw[:, 2] // merge_size)[:, None]
    start = torch.where(image, positions, torch.iinfo(positions.dtype).max).amin(-1, keepdim=True)
    k = positions - start
    after = k >= rows * cols
    text = torch.where(after, positions + torch.maximum(rows, cols) - rows * cols, positions)
    height = torch.where(image, start + k // cols, text)
    width = torch.where(image, start + k % cols, text)
    temporal = torch.where(image, start, text)
    return torch.stack([temporal, height, width])
