"""Build a VLAPolicy: a small from-config model (default) or any supported HF checkpoint."""

from __future__ import annotations

import dataclasses

from vla_rl.policy.action_tokenizer import ActionTokenizer
from vla_rl.policy.backbones import get_family, get_preset
from vla_rl.policy.text_tokenizer import action_token, build_text_tokenizer, default_corpus
from vla_rl.policy.vla_policy import OPENVLA_PROMPT, PolicyError, PolicySpec, VLAPolicy


def build_policy(action_tokenizer: ActionTokenizer, state_dim: int, image_size: tuple[int, int], family: str = "llava",
                 preset: str = "small", chunk_size: int = 1, use_state: bool = True, max_prompt_tokens: int = 32,
                 prompt_template: str = OPENVLA_PROMPT, dtype: str = "float32", seed: int = 0) -> VLAPolicy:
    """A randomly initialised VLA of a real transformers architecture, built offline.

    The text tokenizer is trained locally on the prompt + every registered instruction; the action
    tokens are the vocabulary's last 256 ids (the action tokenizer's offset is set to match).
    """
    import torch

    fam, size = get_family(family), get_preset(preset)
    if image_size[0] != image_size[1]:
        raise PolicyError(f"image_size={tuple(image_size)}: the from-config presets take square images")
    torch.manual_seed(seed)
    tokenizer = build_text_tokenizer(default_corpus(prompt_template), size.bpe_vocab_size, action_tokenizer.n_bins,
                                     fam.processor_tokens)
    model, processor = fam.build(size, int(image_size[0]), tokenizer)
    if tokenizer.convert_ids_to_tokens(len(tokenizer) - 1) != action_token(action_tokenizer.n_bins - 1):
        raise PolicyError(f"family {family!r}: its processor added tokens after the action tokens; list them in "
                          f"{type(fam).__name__}.processor_tokens so the tokenizer holds them before")
    at = dataclasses.replace(action_tokenizer, token_offset=len(tokenizer) - action_tokenizer.n_bins)
    spec = PolicySpec(action_dim=at.action_dim, state_dim=state_dim, image_size=tuple(image_size), chunk_size=chunk_size,
                      use_state=use_state, max_prompt_tokens=max_prompt_tokens, prompt_template=prompt_template,
                      dtype=dtype)
    return VLAPolicy(model, processor, at, spec)


def policy_from_hf(name_or_path: str, action_tokenizer: ActionTokenizer, state_dim: int, image_size: tuple[int, int],
                   chunk_size: int = 1, use_state: bool = True, max_prompt_tokens: int = 64,
                   prompt_template: str = OPENVLA_PROMPT, dtype: str = "float32",
                   trust_remote_code: bool = False) -> VLAPolicy:
    """Wrap a pretrained HF image-text-to-text checkpoint (local path or hub id) as a VLA.

    As OpenVLA does with Llama, the last 256 ids of the model's vocabulary become the action bins.
    `trust_remote_code` is passed through only when the caller sets it.
    """
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

    from vla_rl.base.hub import check_model_source
    from vla_rl.policy.backbones import FAMILIES
    from vla_rl.policy.vla_policy import DTYPES

    name_or_path = check_model_source(name_or_path, "policy.base_model")
    try:
        model_type = AutoConfig.from_pretrained(name_or_path, trust_remote_code=trust_remote_code).model_type
    except (OSError, ValueError) as e:
        raise PolicyError(f"{name_or_path}: cannot load the model config ({' '.join(str(e).split())[:300]})") from None
    if model_type not in FAMILIES:  # refused before any weight is read
        raise PolicyError(f"{name_or_path}: model_type {model_type!r} is not supported as a VLA backbone; supported: "
                          f"{sorted(FAMILIES)} (LLaVA, Idefics3/SmolVLM and PaliGemma architectures)")
    try:
        model = AutoModelForImageTextToText.from_pretrained(name_or_path, dtype=DTYPES[dtype],
                                                            trust_remote_code=trust_remote_code)
        processor = AutoProcessor.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise PolicyError(f"{name_or_path}: cannot load the model or its processor ({' '.join(str(e).split())[:300]})") from None
    get_family(model.config.model_type).adapt_processor(processor, int(model.config.vision_config.image_size))
    n_vocab = model.get_output_embeddings().weight.shape[0]
    at = dataclasses.replace(action_tokenizer, token_offset=n_vocab - action_tokenizer.n_bins)
    spec = PolicySpec(action_dim=at.action_dim, state_dim=state_dim, image_size=tuple(image_size), chunk_size=chunk_size,
                      use_state=use_state, max_prompt_tokens=max_prompt_tokens, prompt_template=prompt_template,
                      dtype=dtype)
    if use_state:
        _ensure_state_token(processor, model)
    return VLAPolicy(model, processor, at, spec)


def _ensure_state_token(processor, model) -> None:
    """A pretrained tokenizer may lack <state>; reuse the pad id's slot rather than growing the vocab."""
    from vla_rl.policy.text_tokenizer import STATE_TOKEN

    tok = processor.tokenizer
    if tok.convert_tokens_to_ids(STATE_TOKEN) in (None, tok.unk_token_id):
        tok.add_special_tokens({"additional_special_tokens": [STATE_TOKEN]})
        if len(tok) > model.get_input_embeddings().weight.shape[0]:
            raise PolicyError("the tokenizer has no room for a <state> token; build the policy with use_state=False")
