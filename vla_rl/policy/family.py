"""The VLA-family interface: what a family tells the generic policy (`Family`), the size presets a from-config model is
built at, and the preset's transformers config kwargs. The families themselves and their registry:
`vla_rl.policy.backbones`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch

from vla_rl.base.errors import VLARLError


@dataclass(frozen=True)
class BackbonePreset:
    """Widths and depths of a from-config model (the image size comes from the env)."""

    vision_hidden: int
    vision_layers: int
    vision_heads: int
    patch_size: int
    text_hidden: int
    text_layers: int
    text_heads: int
    text_intermediate: int
    bpe_vocab_size: int = 512


PRESETS: dict[str, BackbonePreset] = {
    # Unit tests: ~0.2 M parameters, a 64 px image becomes 16 tokens.
    "tiny": BackbonePreset(32, 1, 2, 16, 64, 2, 2, 128),
    # The CPU quickstart: ~4.7 M parameters (SigLIP 2x128, Llama 4x256), a 64 px image -> 16 tokens
    # (patch 16: 2.5x faster to train on 2 cores than patch 8 / 64 image tokens, measured).
    "small": BackbonePreset(128, 2, 4, 16, 256, 4, 4, 768),
    # GPU checks only (experiments/bench_gpu.py): the shape of a 1B VLA — SigLIP-so400m-like vision (1152 x 27,
    # patch 14) + a Llama-3.2-1B-like LM (2048 x 16, 32 heads, MLP 8192); 1.51 B parameters (vision 0.43 B), random
    # weights; LoRA r 16 on every LM projection = 12.1 M parameters.
    "1b": BackbonePreset(1152, 27, 16, 14, 2048, 16, 32, 8192),
}


class BackboneError(VLARLError):
    """An unsupported family or preset, or an image the backbone cannot take."""


class Family(ABC):
    model_type: str = ""
    image_placeholder: str = "<image>"
    # Tokens the family's processor adds to any tokenizer it is given; the from-config tokenizer holds them before
    # the action tokens (`build_text_tokenizer(family_tokens=...)`), so the action tokens stay the last ids.
    processor_tokens: tuple[str, ...] = ()

    @abstractmethod
    def build(self, preset: BackbonePreset, image_size: int, tokenizer):
        """A randomly initialised (model, processor) of this architecture."""

    def processor_images(self, image):
        """The `images=` argument the processor expects for one prompt with one image."""
        return [image]

    def pixel_kwargs(self, pixel_values: torch.Tensor, config) -> dict[str, torch.Tensor]:
        """Model kwargs for normalised images `(B, 3, H, W)` (`config`: the HF model's)."""
        return {"pixel_values": pixel_values}

    def position_ids(self, positions: torch.Tensor, input_ids: torch.Tensor, pixels: dict[str, torch.Tensor],
                     config) -> torch.Tensor:
        """The model's `position_ids` for left-padded prompts `input_ids` `(B, P)` whose 1-D positions (from the
        attention mask) are `positions`, with `pixels` = `pixel_kwargs(...)`. The policy numbers later tokens from
        the last prompt position + 1, + 2, ... along the last axis. The 1-D positions by default; Qwen2.5-VL: 3-D
        M-RoPE positions `(3, B, P)`."""
        return positions

    def load_processor(self, path, **kwargs):
        """The processor of a checkpoint (a policy's `base/`, an HF directory or hub id); kwargs: `from_pretrained`'s."""
        from transformers import AutoProcessor

        return AutoProcessor.from_pretrained(path, **kwargs)

    def load_model(self, path, **kwargs):
        """The model of a checkpoint, as `load_processor`; a family whose model class is not in transformers'
        Auto mappings loads its own class here."""
        from transformers import AutoModelForImageTextToText

        return AutoModelForImageTextToText.from_pretrained(path, **kwargs)

    def vision_module(self, inner):
        """The vision tower inside the HF model's inner model (`model.model`): what a reward model with
        `encoder: vla` reads, frozen."""
        return getattr(inner, "vision_tower", None) or inner.vision_model

    def vision_features(self, tower, pixel_values: torch.Tensor, config) -> torch.Tensor:
        """Mean-pooled features `(B, vision_feature_dim)` of `tower` (= `vision_module(...)`) on normalised images
        `(B, 3, H, W)`."""
        return tower(pixel_values=pixel_values).last_hidden_state.mean(1)

    def vision_feature_dim(self, config) -> int:
        return int(config.vision_config.hidden_size)

    def model_image_size(self, config, image_size: int) -> int:
        """The square image side a pretrained checkpoint's vision tower takes (the env's frames are resized to it):
        its config's `vision_config.image_size` for fixed-resolution towers; `image_size` is the env's."""
        return int(config.vision_config.image_size)

    def adapt_processor(self, processor, image_size: int) -> None:
        """Make a pretrained processor expand one image to one tile (what the tensor path feeds)."""

    def sequence_kwargs(self, batch: int, seq_len: int, n_action: int, device) -> dict[str, torch.Tensor]:
        """Model kwargs for an input of `seq_len` positions whose last `n_action` are action tokens, the rest the
        prompt (image, text, <state>). None by default: a causal LM attends the same way to both."""
        return {}


def preset_text_config(preset: BackbonePreset, tokenizer) -> dict:
    """The Llama language model of a preset, as transformers config kwargs (its vocabulary is the tokenizer's)."""
    return dict(model_type="llama", vocab_size=len(tokenizer), hidden_size=preset.text_hidden,
                intermediate_size=preset.text_intermediate, num_hidden_layers=preset.text_layers,
                num_attention_heads=preset.text_heads, num_key_value_heads=preset.text_heads,
                max_position_embeddings=1024, pad_token_id=tokenizer.pad_token_id,
                bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=False)


def preset_vision_config(preset: BackbonePreset, image_size: int) -> dict:
    """The vision tower of a preset, as transformers config kwargs (SigLIP / CLIP vision fields)."""
    if image_size % preset.patch_size:
        raise BackboneError(f"image size {image_size} is not a multiple of the preset's patch size {preset.patch_size}")
    return dict(hidden_size=preset.vision_hidden, intermediate_size=4 * preset.vision_hidden,
                num_hidden_layers=preset.vision_layers, num_attention_heads=preset.vision_heads,
                image_size=image_size, patch_size=preset.patch_size)


def get_preset(name: str) -> BackbonePreset:
    if name not in PRESETS:
        raise BackboneError(f"preset {name!r} is unknown; choose one of {sorted(PRESETS)}")
    return PRESETS[name]
