"""Vision-language backbones: the per-family glue and the family registry (the `Family` interface and the size presets
live in `vla_rl.policy.family` and are re-exported here).

A family knows three things the generic policy cannot guess: how to build a small model of its
architecture from configs (no download), which placeholder text marks the image in a prompt (the
processor expands it to the right number of image tokens), and the shape of `pixel_values`.
Supported: LLaVA (SigLIP vision tower + Llama LM, the default), Idefics3/SmolVLM (SigLIP +
pixel-shuffle connector + Llama LM), PaliGemma (SigLIP + linear projector + Gemma LM, pi0's
backbone; a prefix-LM, so its family also marks prompt vs action tokens: `sequence_kwargs`, and
lists the tokens its processor adds: `processor_tokens`), Qwen2.5-VL (windowed ViT + patch merger + Qwen2 LM;
flattened patches in `pixel_kwargs`, 3-D M-RoPE positions: `position_ids`) and OpenVLA's Prismatic (DINOv2 + SigLIP
fused, Llama; vla-rl's own transformers model `vla_rl_openvla`, which OpenVLA checkpoints convert to). Any checkpoint of
these architectures loads through `vla_rl.policy.policy_from_hf`. `register_vla_family` adds another (docs/policy.md,
"Adding a VLA family").
"""

from __future__ import annotations

import torch

from vla_rl.policy.family import (  # re-exported: a family's author imports the interface from here too
    PRESETS,
    BackboneError,
    BackbonePreset,
    Family,
    get_preset,
    preset_text_config,
    preset_vision_config,
)

__all__ = ["PRESETS", "BackboneError", "BackbonePreset", "Family", "get_preset", "preset_text_config",
           "preset_vision_config", "LlavaFamily", "Idefics3Family", "PaliGemmaFamily", "Qwen2_5_VLFamily", "OpenVLAFamily",
           "FAMILIES", "register_vla_family", "vla_family_names", "get_family"]


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

    def pixel_kwargs(self, pixel_values, config):
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


class Qwen2_5_VLFamily(Family):
    """Qwen2.5-VL (windowed-attention ViT + 2x2 patch merger + Qwen2 LM), through the generic policy path.

    - **Pixels**: flattened patches `(B*gh*gw, C*T*p*p)` + `image_grid_thw` `(B, 3)`, laid out by `pixel_kwargs` as
      the image processor does (tested). A 64 px image at patch 16: 4x4 patches, merged 2x2 into 4 image tokens.
    - **M-RoPE**: image tokens get (temporal, row, column) positions; the text after the image continues from the
      image's larger side. transformers derives them from `input_ids` (`get_rope_index`); given only `inputs_embeds`
      (the policy's <state> path) it reuses the `rope_deltas` its last call left on the model, or 1-D positions that
      ignore the padding. So `position_ids` passes them, computed from the left-padded prompt (equal to
      `get_rope_index`, tested); action tokens are text: +1 per cached step in `act`, +1, +2, ... in `evaluate`.
    - **Vocabulary**: the prompt opens with `<|vision_start|><|image_pad|><|vision_end|>`; those and `<|video_pad|>`
      (whose embedding the model looks up) are `processor_tokens`. `vision_config.image_size` records the size.
    - **Processor**: the stock one needs torchvision for videos; `load_processor` loads `Qwen2_5_VLImageProcessor`.
    """

    model_type = "qwen2_5_vl"
    image_placeholder = "<|vision_start|><|image_pad|><|vision_end|>"
    processor_tokens = ("<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")
    merge_size = 2
    temporal_patch_size = 2

    def build(self, preset, image_size, tokenizer):
        from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
            Qwen2VLImageProcessorPil,
        )

        from vla_rl.policy.qwen2_5_vl import Qwen2_5_VLImageProcessor

        unit = preset.patch_size * self.merge_size
        if image_size % unit:
            raise BackboneError(f"qwen2_5_vl needs the image size divisible by patch size x merge size = {unit}, "
                                f"got {image_size}")
        ids = {name: tokenizer.convert_tokens_to_ids(token) for name, token in (
            ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>"),
            ("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"))}
        # Windows of 2x2 merged tokens (Qwen's 112 px = 4x4 at patch 14); full attention in the last layer only.
        vision = dict(depth=preset.vision_layers, hidden_size=preset.vision_hidden,
                      intermediate_size=4 * preset.vision_hidden, num_heads=preset.vision_heads,
                      patch_size=preset.patch_size, spatial_merge_size=self.merge_size,
                      temporal_patch_size=self.temporal_patch_size, window_size=2 * unit,
                      fullatt_block_indexes=[preset.vision_layers - 1] if preset.vision_layers > 1 else [],
                      out_hidden_size=preset.text_hidden, image_size=image_size)
        half = preset.text_hidden // preset.text_heads // 2  # M-RoPE splits a head's frequencies 2:3:3 (Qwen's 16:24:24)
        text = dict(vocab_size=len(tokenizer), hidden_size=preset.text_hidden,
                    intermediate_size=preset.text_intermediate, num_hidden_layers=preset.text_layers,
                    num_attention_heads=preset.text_heads, num_key_value_heads=preset.text_heads,
                    max_position_embeddings=1024, pad_token_id=tokenizer.pad_token_id,
                    bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                    rope_parameters={"rope_type": "default", "rope_theta": 1e6,
                                     "mrope_section": [half - 6 * (half // 8), 3 * (half // 8), 3 * (half // 8)]})
        config = Qwen2_5_VLConfig(vision_config=vision, text_config=text, **ids)
        image_processor = Qwen2VLImageProcessorPil(size={"shortest_edge": image_size ** 2, "longest_edge": image_size ** 2},
                                                   patch_size=preset.patch_size, merge_size=self.merge_size,
                                                   temporal_patch_size=self.temporal_patch_size)
        return Qwen2_5_VLForConditionalGeneration(config), Qwen2_5_VLImageProcessor(image_processor, tokenizer)

    def model_image_size(self, config, image_size):
        """Qwen2.5-VL reads any multiple of patch x merge (28 px for the published models) and its config names no
        size: a checkpoint without one takes the env's frames as they are, recorded in `vision_config.image_size`
        (saved with the policy, read back by `VLAPolicy.vision_image_size`)."""
        v = config.vision_config
        if getattr(v, "image_size", None):
            return int(v.image_size)
        unit = v.patch_size * v.spatial_merge_size
        if image_size % unit:
            raise BackboneError(f"qwen2_5_vl reads images whose side is a multiple of patch size x merge size = {unit} "
                                f"px; the env renders {image_size} px — set --env_options.image_size to a multiple "
                                f"of {unit} (e.g. {unit * max(1, round(image_size / unit))})")
        v.image_size = int(image_size)
        return v.image_size

    def vision_module(self, inner):
        return inner.visual

    def vision_features(self, tower, pixel_values, config):
        """The merged patch tokens (the patch merger's output, what the LM reads), mean-pooled per image."""
        pixels = self.pixel_kwargs(pixel_values, config)
        merged = tower(pixels["pixel_values"], grid_thw=pixels["image_grid_thw"]).pooler_output
        return merged.view(pixel_values.shape[0], -1, merged.shape[-1]).mean(1)

    def vision_feature_dim(self, config):
        return int(config.vision_config.out_hidden_size)

    def adapt_processor(self, processor, image_size):
        """One image of `image_size`^2 pixels exactly: min = max pixels (a hub processor allows a range)."""
        ip, pixels = processor.image_processor, int(image_size) ** 2
        ip.size = {"shortest_edge": pixels, "longest_edge": pixels}
        for name in ("min_pixels", "max_pixels"):
            if hasattr(ip, name):
                setattr(ip, name, pixels)

    def pixel_kwargs(self, pixel_values, config):
        from vla_rl.policy.qwen2_5_vl import flatten_patches

        v = config.vision_config
        flat, grid = flatten_patches(pixel_values, v.patch_size, v.temporal_patch_size, v.spatial_merge_size)
        return {"pixel_values": flat, "image_grid_thw": grid}

    def position_ids(self, positions, input_ids, pixels, config):
        from vla_rl.policy.qwen2_5_vl import mrope_position_ids

        return mrope_position_ids(positions, input_ids, pixels["image_grid_thw"], config.image_token_id,
                                  config.vision_config.spatial_merge_size)

    def load_processor(self, path, **kwargs):
        from vla_rl.policy.qwen2_5_vl import Qwen2_5_VLImageProcessor

        kwargs.pop("trust_remote_code", None)  # a transformers class: no remote code
        return Qwen2_5_VLImageProcessor.from_pretrained(path, **kwargs)


class OpenVLAFamily(Family):
    """OpenVLA's Prismatic VLM (DINOv2 + SigLIP read at their second-to-last blocks and concatenated, a 3-layer GELU
    projector, Llama) as vla-rl's transformers model `vla_rl.policy.prismatic` (model_type "vla_rl_openvla").
    `policy_from_hf` converts an OpenVLA checkpoint (model_type "openvla") to it (`vla_rl.policy.openvla`); `build`
    makes a small random one from a preset.

    - **Pixels**: OpenVLA's `(B, 6, H, W)`, DINOv2's then SigLIP's normalisation of one image. The processor reports
      mean 0 / std 1, so the policy's tensor path hands `pixel_kwargs` `[0, 1]` images, which it normalises per tower
      with the model config's statistics (`prismatic.tower_pixels`).
    - **Prompt**: `<s>`, the image tokens (where OpenVLA inserts its patches), the text, and Llama's empty piece "▁"
      (id 29871) that OpenVLA's `predict_action` appends; the image token is an embedding row no token uses.
    """

    model_type = "vla_rl_openvla"

    def build(self, preset, image_size, tokenizer):
        from vla_rl.policy.prismatic import build_prismatic

        return build_prismatic(preset, image_size, tokenizer)

    def pixel_kwargs(self, pixel_values, config):
        from vla_rl.policy.prismatic import tower_pixels

        return {"pixel_values": tower_pixels(pixel_values, config)}

    def load_processor(self, path, **kwargs):
        from vla_rl.policy.prismatic import PrismaticVLAProcessor

        return PrismaticVLAProcessor.from_pretrained(path, **kwargs)

    def vision_features(self, tower, pixel_values, config):
        """Both towers' patch features (the fused 2176-channel ones at openvla-7b's size), mean-pooled; the images
        arrive as the processor leaves them (mean 0, std 1: in [0, 1]) and get each tower's normalisation here."""
        return tower(self.pixel_kwargs(pixel_values, config)["pixel_values"]).mean(1)

    def vision_feature_dim(self, config):
        return int(config.vision_config.hidden_size + config.fused_vision_config.hidden_size)

    def load_model(self, path, **kwargs):
        from vla_rl.policy.prismatic import PrismaticVLAForConditionalGeneration

        kwargs.pop("trust_remote_code", None)  # vla-rl's own class: no remote code
        return PrismaticVLAForConditionalGeneration.from_pretrained(path, **kwargs)


FAMILIES: dict[str, Family] = {"llava": LlavaFamily(), "idefics3": Idefics3Family(), "smolvlm": Idefics3Family(),
                               "paligemma": PaliGemmaFamily(), "qwen2_5_vl": Qwen2_5_VLFamily(),
                               "vla_rl_openvla": OpenVLAFamily()}


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
