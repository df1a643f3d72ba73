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
                   trust_remote_code: bool = False, unnorm_key: str | None = None) -> VLAPolicy:
    """Wrap a pretrained HF image-text-to-text checkpoint (local path or hub id) as a VLA.

    The action bins are the highest 256 consecutive ids that no special or added token holds
    (`action_token_offset`): for Llama-based checkpoints OpenVLA's ids, `tokenizer.vocab_size - 256`.
    An OpenVLA checkpoint (model_type "openvla") is converted to vla-rl's own model without remote code and keeps
    its own action tokens (`vla_rl.policy.openvla`): `unnorm_key` picks the dataset whose `norm_stats` un-normalise
    them (OpenVLA's `predict_action(unnorm_key=...)`); without it `action_tokenizer`'s bounds do.
    `trust_remote_code` is passed through only when the caller sets it.
    """
    from transformers import PretrainedConfig

    from vla_rl.base.hub import check_model_source
    from vla_rl.policy.backbones import FAMILIES
    from vla_rl.policy.openvla import is_openvla, load_openvla_parts
    from vla_rl.policy.vla_policy import DTYPES

    name_or_path = check_model_source(name_or_path, "policy.base_model")
    try:  # the raw config.json: its model_type may be one only vla-rl knows ("openvla", "vla_rl_openvla")
        config = PretrainedConfig.get_config_dict(name_or_path)[0]
    except (OSError, ValueError) as e:
        raise PolicyError(f"{name_or_path}: cannot load the model config ({' '.join(str(e).split())[:300]})") from None
    model_type = config.get("model_type")
    if is_openvla(config):
        model, processor, at = load_openvla_parts(name_or_path, action_tokenizer, unnorm_key, dtype, use_state)
    else:
        if unnorm_key is not None:
            raise PolicyError(f"{name_or_path}: unnorm_key={unnorm_key!r} applies to OpenVLA checkpoints; this one's "
                              f"model_type is {model_type!r}")
        if model_type not in FAMILIES:  # refused before any weight is read
            raise PolicyError(f"{name_or_path}: model_type {model_type!r} is not supported as a VLA backbone; "
                              f"supported: {sorted([*FAMILIES, 'openvla'])} (LLaVA, Idefics3/SmolVLM, PaliGemma, "
                              "Qwen2.5-VL and OpenVLA architectures)")
        family = get_family(model_type)
        try:
            model = family.load_model(name_or_path, dtype=DTYPES[dtype], trust_remote_code=trust_remote_code)
            processor = family.load_processor(name_or_path, trust_remote_code=trust_remote_code)
        except (OSError, ValueError) as e:
            raise PolicyError(f"{name_or_path}: cannot load the model or its processor "
                              f"({' '.join(str(e).split())[:300]})") from None
        family.adapt_processor(processor, family.model_image_size(model.config, int(image_size[0])))
        if use_state:
            _ensure_state_token(processor, model)  # first: a <state> it adds is an added token the bins must avoid
        at = dataclasses.replace(action_tokenizer,
                                 token_offset=action_token_offset(processor, model, action_tokenizer.n_bins, name_or_path))
    spec = PolicySpec(action_dim=at.action_dim, state_dim=state_dim, image_size=tuple(image_size), chunk_size=chunk_size,
                      use_state=use_state, max_prompt_tokens=max_prompt_tokens, prompt_template=prompt_template,
                      dtype=dtype)
    return VLAPolicy(model, processor, at, spec)


def reserved_token_ids(processor, model, n_bins: int) -> set[int]:
    """Ids the action bins must not take: every special and added token of the tokenizer (image, pad, bos, eos, unk,
    additional specials, `added_tokens_decoder`), the processor's and the config's image token — except vla-rl's own
    action tokens `<act_000>`... (a from-config policy's base holds them as added tokens, to be the bins)."""
    tok = processor.tokenizer
    own = {action_token(i) for i in range(n_bins)}
    ids = {i for i, t in tok.added_tokens_decoder.items() if t.content not in own}
    ids |= {i for i in tok.all_special_ids if tok.convert_ids_to_tokens(i) not in own}
    for holder, name in ((processor, "image_token_id"), (model.config, "image_token_id"),
                         (model.config, "image_token_index")):
        value = getattr(holder, name, None)
        if isinstance(value, int):
            ids.add(value)
    return ids


def action_token_offset(processor, model, n_bins: int, where: str) -> int:
    """The first id of the highest run of `n_bins` consecutive ids inside both the tokenizer and the embedding
    matrices that holds no reserved id (`reserved_token_ids`).

    llava-1.5: 31744 (below `<image>` = 32000 and `<pad>`, OpenVLA's Llama ids); a from-config tokenizer, whose
    action tokens are its last ids: `len(tokenizer) - n_bins`, as `build_policy` sets."""
    limit = min(len(processor.tokenizer), model.get_input_embeddings().weight.shape[0],
                model.get_output_embeddings().weight.shape[0])
    reserved, run = reserved_token_ids(processor, model, n_bins), 0
    for i in range(limit - 1, -1, -1):
        run = 0 if i in reserved else run + 1
        if run == n_bins:
            return i
    raise PolicyError(f"{where}: no {n_bins} consecutive token ids below {limit} are free of special/added tokens, "
                      f"so the action bins would overwrite one; use a checkpoint with a larger vocabulary, or add "
                      f"{n_bins} tokens <act_000>...<act_{n_bins - 1:03d}> to its tokenizer and resize its embeddings")


def _ensure_state_token(processor, model) -> None:
    """A pretrained tokenizer may lack <state>; reuse the pad id's slot rather than growing the vocab."""
    from vla_rl.policy.text_tokenizer import STATE_TOKEN

    tok = processor.tokenizer
    if tok.convert_tokens_to_ids(STATE_TOKEN) in (None, tok.unk_token_id):
        tok.add_special_tokens({"additional_special_tokens": [STATE_TOKEN]})
        if len(tok) > model.get_input_embeddings().weight.shape[0]:
            raise PolicyError("the tokenizer has no room for a <state> token; build the policy with use_state=False")
