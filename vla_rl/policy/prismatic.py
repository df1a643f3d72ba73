"""OpenVLA's Prismatic architecture as an in-process transformers model (no remote code).

Prismatic (OpenVLA's VLM): two ViTs read at their second-to-last block — DINOv2 ViT-L/14 with 4 registers and SigLIP
so400m/14 — whose patch tokens (DINOv2's CLS and register tokens dropped, no final norm) are concatenated along
channels, a 3-layer GELU MLP projector, and a Llama LM that reads the projected patches at the image-token positions.
The towers here are transformers' `Dinov2WithRegistersModel` and `SiglipVisionModel` with exact GELU (timm's
`nn.GELU`, not SigLIP's tanh default), so an OpenVLA checkpoint's timm weights map onto them tensor for tensor
(`vla_rl.policy.openvla`). The last block, the final norms and SigLIP's pooling head are kept — the towers stay whole
models and a checkpoint round-trips — but never run.

`pixel_values` are OpenVLA's: `(B, 6, H, W)`, DINOv2's ImageNet-normalised copy of the image then SigLIP's (0.5/0.5);
`tower_pixels` makes them from `[0, 1]` images with the config's `image_means` / `image_stds`. Importing this module
registers the config and models with the Auto classes under model_type "vla_rl_openvla", in this process only.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from huggingface_hub.dataclasses import strict
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForImageTextToText,
    Dinov2WithRegistersConfig,
    PreTrainedConfig,
    PreTrainedModel,
    SiglipVisionConfig,
)
from transformers.configuration_utils import SubConfigSpec
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast

MODEL_TYPE = "vla_rl_openvla"
IMAGE_PLACEHOLDER = "<image>"  # marks the image in a prompt; the processor replaces it, the tokenizer never sees it
EMPTY_PIECE = "▁"  # Llama's empty piece (id 29871): OpenVLA's predict_action ends every prompt with it
DINO_MEAN, DINO_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]  # timm's ImageNet statistics
SIGLIP_MEAN, SIGLIP_STD = [0.5, 0.5, 0.5], [0.5, 0.5, 0.5]


@strict
class PrismaticVLAConfig(PreTrainedConfig):
    """Two vision towers (`vision_config`: DINOv2 with registers, `fused_vision_config`: SigLIP), a Llama
    `text_config`, the image token, each tower's pixel normalisation, and — for a converted OpenVLA checkpoint — its
    `norm_stats` and the rest of its config.json (`openvla`, kept verbatim for export; None when built from a preset)."""

    model_type = MODEL_TYPE
    sub_configs_defaults = {
        "vision_config": Dinov2WithRegistersConfig,
        "fused_vision_config": SiglipVisionConfig,
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="llama"),
    }
    vision_config: dict | PreTrainedConfig | None = None
    fused_vision_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    image_token_id: int = 32063  # OpenVLA-7b: the last of the 63 embedding rows no token uses
    image_means: list | None = None  # per tower, applied to [0, 1] pixels
    image_stds: list | None = None
    norm_stats: dict | None = None
    openvla: dict | None = None
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        if self.image_means is None:
            self.image_means = [DINO_MEAN, SIGLIP_MEAN]
        if self.image_stds is None:
            self.image_stds = [DINO_STD, SIGLIP_STD]
        super().__post_init__(**kwargs)


def tower_pixels(images01: torch.Tensor, config: PrismaticVLAConfig) -> torch.Tensor:
    """`[0, 1]` images `(B, 3, H, W)` -> OpenVLA's `(B, 6, H, W)` pixel_values (each tower's normalisation, in
    float32, then the input dtype)."""
    x = images01.float()
    copies = []
    for mean, std in zip(config.image_means, config.image_stds):
        m = torch.as_tensor(mean, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
        s = torch.as_tensor(std, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
        copies.append((x - m) / s)
    return torch.cat(copies, dim=1).to(images01.dtype)


class PrismaticVisionTower(nn.Module):
    """DINOv2-with-registers (`featurizer`) and SigLIP (`fused_featurizer`), each run up to its second-to-last
    block — OpenVLA's `get_intermediate_layers(n={depth - 2})` — patch tokens concatenated along channels."""

    def __init__(self, config: PrismaticVLAConfig):
        super().__init__()
        self.featurizer = AutoModel.from_config(config.vision_config)
        self.fused_featurizer = AutoModel.from_config(config.fused_vision_config)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        dino_pixels, siglip_pixels = pixel_values.split(3, dim=1)
        dino = self.featurizer
        x = dino.embeddings(dino_pixels)
        for layer in dino.encoder.layer[:-1]:
            x = layer(x, None)
        patches = x[:, 1 + dino.config.num_register_tokens:]  # drop CLS and the registers
        siglip = self.fused_featurizer
        y = siglip.embeddings(siglip_pixels)
        for layer in siglip.encoder.layers[:-1]:
            y = layer(y, None)
        return torch.cat([patches, y], dim=-1)


class FusedMLPProjector(nn.Module):
    """OpenVLA's projector for fused towers: fc1 (vision -> 4 x vision) -> GELU -> fc2 (-> LM width) -> GELU -> fc3."""

    def __init__(self, vision_dim: int, text_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(vision_dim, 4 * vision_dim)
        self.fc2 = nn.Linear(4 * vision_dim, text_dim)
        self.fc3 = nn.Linear(text_dim, text_dim)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        return self.fc3(F.gelu(self.fc2(F.gelu(self.fc1(patches)))))


class PrismaticVLAPreTrainedModel(PreTrainedModel):
    config_class = PrismaticVLAConfig  # not an annotation: this module's annotations are strings
    base_model_prefix = "model"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _no_split_modules = ["Dinov2WithRegistersLayer", "SiglipEncoderLayer", "LlamaDecoderLayer"]
    _skip_keys_device_placement = ["past_key_values"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_attention_backend = True


class PrismaticVLAModel(PrismaticVLAPreTrainedModel):
    """Towers + projector + the Llama decoder (no LM head); the image features replace the image-token embeddings."""

    def __init__(self, config: PrismaticVLAConfig):
        super().__init__(config)
        self.vision_tower = PrismaticVisionTower(config)
        vision_dim = config.vision_config.hidden_size + config.fused_vision_config.hidden_size
        self.projector = FusedMLPProjector(vision_dim, config.text_config.hidden_size)
        self.language_model = AutoModel.from_config(config.text_config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """`(B, 6, H, W)` -> projected patch features `(B, N, text hidden)`."""
        return self.projector(self.vision_tower(pixel_values))

    def forward(self, input_ids=None, pixel_values=None, attention_mask=None, position_ids=None, past_key_values=None,
                inputs_embeds=None, use_cache=None, **kwargs) -> BaseModelOutputWithPast:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)
        if pixel_values is not None:
            features = self.get_image_features(pixel_values).to(inputs_embeds.dtype)
            if input_ids is not None:
                image = input_ids == self.config.image_token_id
            else:  # the image token's embedding marks the positions (as LLaVA does given embeddings)
                token = torch.tensor(self.config.image_token_id, device=inputs_embeds.device)
                image = (inputs_embeds == self.get_input_embeddings()(token)).all(-1)
            if int(image.sum()) != features.shape[0] * features.shape[1]:
                raise ValueError(f"{int(image.sum())} image tokens for {features.shape[0]} x {features.shape[1]} "
                                 "image features")
            inputs_embeds = inputs_embeds.masked_scatter(image[..., None], features)
        out = self.language_model(inputs_embeds=inputs_embeds, attention_mask=attention_mask, position_ids=position_ids,
                                  past_key_values=past_key_values, use_cache=use_cache, **kwargs)
        return BaseModelOutputWithPast(last_hidden_state=out.last_hidden_state, past_key_values=out.past_key_values,
                                       hidden_states=out.hidden_states, attentions=out.attentions)


class PrismaticVLAForConditionalGeneration(PrismaticVLAPreTrainedModel):
    """`PrismaticVLAModel` + an untied LM head (Llama-2's). Forward gives logits; there is no `generate()`:
    `VLAPolicy.act` decodes the action tokens itself."""

    def __init__(self, config: PrismaticVLAConfig):
        super().__init__(config)
        self.model = PrismaticVLAModel(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Module) -> None:
        self.lm_head = value

    def forward(self, input_ids=None, pixel_values=None, attention_mask=None, position_ids=None, past_key_values=None,
                inputs_embeds=None, use_cache=None, **kwargs) -> CausalLMOutputWithPast:
        out = self.model(input_ids=input_ids, pixel_values=pixel_values, attention_mask=attention_mask,
                         position_ids=position_ids, past_key_values=past_key_values, inputs_embeds=inputs_embeds,
                         use_cache=use_cache, **kwargs)
        return CausalLMOutputWithPast(logits=self.lm_head(out.last_hidden_state), past_key_values=out.past_key_values,
                                      hidden_states=out.hidden_states, attentions=out.attentions)


AutoConfig.register(MODEL_TYPE, PrismaticVLAConfig, exist_ok=True)
AutoModel.register(PrismaticVLAConfig, PrismaticVLAModel, exist_ok=True)
AutoModelForImageTextToText.register(PrismaticVLAConfig, PrismaticVLAForConditionalGeneration, exist_ok=True)


# --- the processor -------------------------------------------------------------------------------------------------
class UnitImageProcessor:
    """What the policy's tensor path reads (`image_mean`, `image_std`): pixels go to the model family as `[0, 1]`
    images; `tower_pixels` applies each tower's own normalisation."""

    image_mean = (0.0, 0.0, 0.0)
    image_std = (1.0, 1.0, 1.0)

    def __init__(self, size: int):
        self.size = size


class PrismaticVLAProcessor:
    """Text -> input ids in OpenVLA's layout: `<s>`, the image tokens (where OpenVLA's model inserts the patches:
    after the first token), the prompt without BOS, and Llama's empty piece "▁" when the prompt does not end with it
    (OpenVLA's `predict_action` appends id 29871 the same way). Images are not processed here: `VLAPolicy` builds the
    pixels itself (`UnitImageProcessor`, `tower_pixels`).

    `preprocessor` is OpenVLA's preprocessor_config.json, kept verbatim and saved back as that file; the normalisation
    the model uses is the model config's (`image_means` / `image_stds`), which the loader takes from it."""

    FILE = "preprocessor_config.json"

    def __init__(self, tokenizer, image_token_id: int, image_seq_length: int, image_size: int, preprocessor: dict):
        self.tokenizer = tokenizer
        self.image_token_id = image_token_id
        self.image_seq_length = image_seq_length
        self.image_processor = UnitImageProcessor(image_size)
        self.preprocessor = preprocessor
        empty = tokenizer.convert_tokens_to_ids(EMPTY_PIECE)
        self.empty_token_id = None if empty is None or empty == tokenizer.unk_token_id else empty

    def __call__(self, text, images=None, **_) -> dict[str, list[list[int]]]:
        return {"input_ids": [self._ids(t) for t in ([text] if isinstance(text, str) else text)]}

    def _ids(self, text: str) -> list[int]:
        body = text[len(IMAGE_PLACEHOLDER):]
        if not text.startswith(IMAGE_PLACEHOLDER) or IMAGE_PLACEHOLDER in body:
            raise ValueError(f"a prompt must start with one {IMAGE_PLACEHOLDER} and hold no other: {text!r}")
        ids = self.tokenizer(body, add_special_tokens=False)["input_ids"]
        ids = [self.tokenizer.bos_token_id] + [self.image_token_id] * self.image_seq_length + list(ids)
        if self.empty_token_id is not None and ids[-1] != self.empty_token_id:
            ids.append(self.empty_token_id)
        return ids

    def save_pretrained(self, path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save_pretrained(path)
        (path / self.FILE).write_text(json.dumps(self.preprocessor, indent=2) + "\n")

    @classmethod
    def from_pretrained(cls, path, **kwargs) -> PrismaticVLAProcessor:
        """The processor of a saved `vla_rl_openvla` model directory (config.json gives the image token and size)."""
        path = Path(path)
        kwargs.pop("trust_remote_code", None)  # our own class: no remote code
        config = PrismaticVLAConfig.from_pretrained(path, **kwargs)
        tokenizer = load_tokenizer(path, **kwargs)
        preprocessor = json.loads((path / cls.FILE).read_text())
        return cls(tokenizer, config.image_token_id, image_seq_length(config), config.vision_config.image_size,
                   preprocessor)


def load_tokenizer(path: Path, **kwargs):
    """The tokenizer class tokenizer_config.json names, loaded directly: `AutoTokenizer` would first load config.json,
    and an OpenVLA config's `auto_map` makes transformers ask to run its remote code."""
    from transformers import AutoTokenizer
    from transformers.models.auto.tokenization_auto import tokenizer_class_from_name

    file = Path(path) / "tokenizer_config.json"
    name = json.loads(file.read_text()).get("tokenizer_class") if file.is_file() else None
    cls = tokenizer_class_from_name(name) if isinstance(name, str) else None
    return (cls or AutoTokenizer).from_pretrained(path, **kwargs)


def image_seq_length(config: PrismaticVLAConfig) -> int:
    """Image tokens per image: the towers' patch grid (both towers see the same grid)."""
    return (config.vision_config.image_size // config.vision_config.patch_size) ** 2


def default_preprocessor(image_size: int, means: list, stds: list) -> dict:
    """An OpenVLA-format preprocessor_config.json (resize-naive, bicubic) for a model built from a preset."""
    return {"image_processor_type": "PrismaticImageProcessor", "processor_class": "PrismaticProcessor",
            "use_fused_vision_backbone": True, "image_resize_strategy": "resize-naive",
            "input_sizes": [[3, image_size, image_size]] * 2, "interpolations": ["bicubic", "bicubic"],
            "means": means, "stds": stds}


def build_prismatic(preset, image_size: int, tokenizer) -> tuple[PrismaticVLAForConditionalGeneration,
                                                                 PrismaticVLAProcessor]:
    """A random Prismatic VLA sized from a `BackbonePreset` (both towers the preset's vision size, one block more
    than the preset's depth since the last is not read), with the project's local tokenizer."""
    from vla_rl.policy.backbones import preset_text_config, preset_vision_config

    vision = preset_vision_config(preset, image_size)
    vision["num_hidden_layers"] += 1
    dino = Dinov2WithRegistersConfig(**{k: v for k, v in vision.items() if k != "intermediate_size"},
                                     hidden_act="gelu", layer_norm_eps=1e-6)
    siglip = SiglipVisionConfig(**vision, hidden_act="gelu", layer_norm_eps=1e-6)
    config = PrismaticVLAConfig(vision_config=dino, fused_vision_config=siglip,
                                text_config=preset_text_config(preset, tokenizer),
                                image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_PLACEHOLDER))
    processor = PrismaticVLAProcessor(tokenizer, config.image_token_id, image_seq_length(config), image_size,
                                      default_preprocessor(image_size, config.image_means, config.image_stds))
    return PrismaticVLAForConditionalGeneration(config), processor
