"""Vision-language backbones: size presets built from transformers configs, and per-family glue.

A family knows three things the generic policy cannot guess: how to build a small model of its
architecture from configs (no download), which placeholder text marks the image in a prompt (the
processor expands it to the right number of image tokens), and the shape of `pixel_values`.
Supported: LLaVA (SigLIP vision tower + Llama LM, the default), Idefics3/SmolVLM (SigLIP +
pixel-shuffle connector + Llama LM) and PaliGemma (SigLIP + linear projector + Gemma LM, pi0's
backbone; a prefix-LM, so its family also marks prompt vs action tokens: `sequence_kwargs`, and
lists the tokens its processor adds: `processor_tokens`). Any checkpoint of these architectures loads through
`vla_rl.policy.policy_from_hf`. `register_vla_family` adds another (docs/policy.md, "Adding a VLA family").
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
import torch.nn.functional as F

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

    def pixel_kwargs(self, pixel_values: torch.Tensor) -> dict[str, torch.Tensor]:
        """Model kwargs for normalised images `(B, 3, H, W)`."""
        return {"pixel_values": pixel_values}

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


class LlavaFamily(Family):
    model_type = "llava"

    def build(self, preset, image_size, tokenizer):
        from transformers import (
            LlavaConfig,
            LlavaForConditionalGeneration,
            LlavaProcessor,
            SiglipVisionConfig,
        )
        from transformers.models.siglip.image_processing_pil_siglip import (
            SiglipImageProcessorPil,
        )

        # No attention-pooling head: LLaVA reads the patch features, the pooled output would be computed and dropped.
        vision = SiglipVisionConfig(**preset_vision_config(preset, image_size), vision_use_head=False)
        config = LlavaConfig(vision_config=vision, text_config=preset_text_config(preset, tokenizer),
                             image_token_id=tokenizer.convert_tokens_to_ids(self.image_placeholder),
                             vision_feature_select_strategy="full", vision_feature_layer=-1)
        image_processor = SiglipImageProcessorPil(size={"height": image_size, "width": image_size})
        processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=preset.patch_size,
                                   vision_feature_select_strategy="full", image_token=self.image_placeholder,
                                   num_additional_image_tokens=0)
        return LlavaForConditionalGeneration(config), processor


class Idefics3Family(Family):
    model_type = "idefics3"
    scale_factor = 2

    def build(self, preset, image_size, tokenizer):
        from transformers import (
            Idefics3Config,
            Idefics3ForConditionalGeneration,
            Idefics3Processor,
        )
        from transformers.models.idefics3.image_processing_pil_idefics3 import (
            Idefics3ImageProcessorPil,
        )

        grid = image_size // preset.patch_size
        if grid % self.scale_factor:
            raise BackboneError(f"idefics3 needs (image size / patch size) divisible by {self.scale_factor}, got {grid}")
        config = Idefics3Config(vision_config=preset_vision_config(preset, image_size),
                                text_config=preset_text_config(preset, tokenizer),
                                scale_factor=self.scale_factor,
                                image_token_id=tokenizer.convert_tokens_to_ids(self.image_placeholder))
        image_processor = Idefics3ImageProcessorPil(do_image_splitting=False, size={"longest_edge": image_size},
                                                    max_image_size={"longest_edge": image_size})
        processor = Idefics3Processor(image_processor=image_processor, tokenizer=tokenizer,
                                      image_seq_len=(grid // self.scale_factor) ** 2)
        return Idefics3ForConditionalGeneration(config), processor

    def processor_images(self, image):
        return [[image]]

    def adapt_processor(self, processor, image_size):
        # SmolVLM splits large images into tiles by default; the policy feeds one global image.
        processor.image_processor.do_image_splitting = False
        processor.image_processor.size = {"longest_edge": image_size}
        processor.image_processor.max_image_size = {"longest_edge": image_size}

    def pixel_kwargs(self, pixel_values):
        return {"pixel_values": pixel_values[:, None]}  # (B, num_images=1, 3, H, W)


class PaliGemmaFamily(Family):
    """PaliGemma (SigLIP + linear projector + Gemma; pi0's backbone), through the generic policy path.

    - **Prefix-LM.** PaliGemma attends bidirectionally within the prefix (token_type_ids 0) and causally in the
      suffix (1). `sequence_kwargs` marks the prompt (image, BOS, text, "\n", <state>) as prefix and the action tokens
      as suffix. The prompt is fixed before any action token, so the KV-cached `act` (prompt forward with the prefix
      mask, then single causal steps) and the teacher-forced `evaluate` compute the same thing. They must be passed:
      without them transformers' mask depends on the batch (causal when a prompt is padded; with no padding it skips
      the mask and SDPA runs Gemma's `is_causal=False`, i.e. everything, action tokens too, bidirectional).
    - **Gemma's sqrt(hidden) embedding scale** lives in the embedding module (`GemmaTextScaledWordEmbedding`), so the
      policy's `get_input_embeddings()(ids)` is already scaled and nothing rescales `inputs_embeds`: the projected
      image features and the policy's <state> projection enter the LM unscaled, alike.
    - **Positions.** transformers counts PaliGemma positions from 1, the policy from 0 (from the attention mask);
      RoPE sees only differences, so the two are the same function.
    - **Processor.** The stock `PaliGemmaProcessor` takes the local BPE tokenizer as is (it writes BOS as text after
      the image tokens, appends "\n", and expands `<image>` to `(image_size / patch)^2` tokens), but it adds 1024
      <locNNNN> + 128 <segNNN> tokens to any tokenizer lacking them: `processor_tokens` lists them so the from-config
      tokenizer holds them before the action tokens (as PaliGemma's own vocabulary does) and they stay the last ids.
    """

    model_type = "paligemma"

    @property
    def processor_tokens(self) -> tuple[str, ...]:
        from transformers.models.paligemma.processing_paligemma import EXTRA_TOKENS

        return tuple(EXTRA_TOKENS)

    def build(self, preset, image_size, tokenizer):
        from transformers import (
            GemmaConfig,
            PaliGemmaConfig,
            PaliGemmaForConditionalGeneration,
            PaliGemmaProcessor,
            SiglipVisionConfig,
        )
        from transformers.models.siglip.image_processing_pil_siglip import (
            SiglipImageProcessorPil,
        )

        vision = SiglipVisionConfig(**preset_vision_config(preset, image_size), vision_use_head=False)
        # Gemma as PaliGemma uses it (tied LM head, one KV head), sized from the preset.
        text = GemmaConfig(vocab_size=len(tokenizer), hidden_size=preset.text_hidden,
                           intermediate_size=preset.text_intermediate, num_hidden_layers=preset.text_layers,
                           num_attention_heads=preset.text_heads, num_key_value_heads=1,
                           head_dim=preset.text_hidden // preset.text_heads, max_position_embeddings=1024,
                           pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                           eos_token_id=tokenizer.eos_token_id)
        config = PaliGemmaConfig(vision_config=vision, text_config=text, vocab_size=len(tokenizer),
                                 hidden_size=preset.text_hidden, projection_dim=preset.text_hidden,
                                 image_token_index=tokenizer.convert_tokens_to_ids(self.image_placeholder))
        image_processor = SiglipImageProcessorPil(size={"height": image_size, "width": image_size},
                                                  image_seq_length=(image_size // preset.patch_size) ** 2)
        processor = PaliGemmaProcessor(image_processor=image_processor, tokenizer=tokenizer)
        return PaliGemmaForConditionalGeneration(config), processor

    def sequence_kwargs(self, batch, seq_len, n_action, device):
        token_type_ids = torch.zeros((batch, seq_len), dtype=torch.long, device=device)
        token_type_ids[:, seq_len - n_action:] = 1
        return {"token_type_ids": token_type_ids}


FAMILIES: dict[str, Family] = {"llava": LlavaFamily(), "idefics3": Idefics3Family(), "smolvlm": Idefics3Family(),
                               "paligemma": PaliGemmaFamily()}


ENTRY_POINT_GROUP = "vla_rl.vla_families"  # an installed package's Family instances, loaded when first asked for


def register_vla_family(family: Family) -> None:
    """Make `family` build and load policies whose HF `model_type` is `family.model_type`, in this process.

    A policy finds its family by its model's `config.model_type`, so the family must build models of that type.
    A taken model_type is refused (the built-in families included).
    """
    if not isinstance(family, Family):
        raise TypeError(f"{type(family).__name__} is not a vla_rl.policy.backbones.Family subclass instance")
    if not family.model_type:
        raise ValueError(f"{type(family).__name__}.model_type is empty: set it to the HF config's model_type")
    if family.model_type in FAMILIES:
        raise ValueError(f"VLA family {family.model_type!r} is registered already")
    FAMILIES[family.model_type] = family


_ENTRY_POINTS_LOADED = False


def _load_entry_point_families() -> None:
    """Register the `Family` objects installed packages name under the `vla_rl.vla_families` entry point (each
    entry point loads to a Family instance), once per process, so that every process — Ray runners and learners
    included — knows them. An entry point that fails to load, or names no Family, is a one-line BackboneError."""
    global _ENTRY_POINTS_LOADED
    if _ENTRY_POINTS_LOADED:
        return
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            family = ep.load()
        except Exception as e:  # an installed package's import error, whatever it is
            raise BackboneError(f"entry point {ENTRY_POINT_GROUP}:{ep.name} ({ep.value}) failed to load: "
                                f"{type(e).__name__}: {e}") from None
        if not isinstance(family, Family):
            raise BackboneError(f"entry point {ENTRY_POINT_GROUP}:{ep.name} ({ep.value}) is a "
                                f"{type(family).__name__}, not a vla_rl.policy.backbones.Family instance")
        if family.model_type in FAMILIES and FAMILIES[family.model_type] is not family:
            raise BackboneError(f"entry point {ENTRY_POINT_GROUP}:{ep.name} ({ep.value}): model_type "
                                f"{family.model_type!r} is taken by another family — give it another model_type")
        FAMILIES[family.model_type] = family
    _ENTRY_POINTS_LOADED = True


def vla_family_names() -> list[str]:
    """Every model_type a policy may have: the built-in families, then registered and entry-point ones."""
    _load_entry_point_families()
    return sorted(FAMILIES)


def get_family(model_type: str) -> Family:
    if model_type not in FAMILIES:
        _load_entry_point_families()
    if model_type not in FAMILIES:
        raise BackboneError(f"model_type {model_type!r} is not supported; supported: {sorted(FAMILIES)}")
    return FAMILIES[model_type]


def get_preset(name: str) -> BackbonePreset:
    if name not in PRESETS:
        raise BackboneError(f"preset {name!r} is unknown; choose one of {sorted(PRESETS)}")
    return PRESETS[name]


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
