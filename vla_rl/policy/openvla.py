"""OpenVLA checkpoints (the `openvla/openvla-7b` layout) <-> vla-rl's in-process Prismatic model, without remote code.

An OpenVLA directory holds config.json (model_type "openvla": the two towers' timm ids and image sizes, a minimal
Llama `text_config` completed by transformers-4.40 `LlamaConfig` defaults, `norm_stats` per dataset, `n_action_bins`,
`pad_to_multiple_of`), preprocessor_config.json (each tower's normalisation), a Llama tokenizer, and safetensors in
timm + HF-Llama key layout: `vision_backbone.featurizer.*` (DINOv2 ViT-L/14, 4 registers), `vision_backbone.
fused_featurizer.*` (SigLIP so400m/14), `projector.fc{1,2,3}.*`, `language_model.model.*`, `language_model.lm_head.*`.
One table (`_plan`) maps every tensor onto `vla_rl.policy.prismatic` and back: timm's fused qkv split into q/k/v, its
pooling head's q + kv joined into `nn.MultiheadAttention`'s in_proj, DINOv2's class-free position table given a zero
row for the CLS token (exported back as CLS + that row, which is the same function), LayerScale `scale_factor` (what
OpenVLA renames timm's `gamma` to) as `lambda1`. Loading reads the tensors; `vla_rl.policy.openvla_export.export_openvla` writes them back.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import torch

from vla_rl.policy.action_tokenizer import ActionTokenizer, ActionTokenizerError
from vla_rl.policy.vla_policy import DTYPES, PolicyError

DINO_ID, SIGLIP_ID = "vit_large_patch14_reg4_dinov2.lvd142m", "vit_so400m_patch14_siglip_224"
TOWER_HEADS = {DINO_ID: 16, SIGLIP_ID: 16}  # not in the weights: timm's model definitions
DEFAULT_BACKBONE = "dinosiglip-vit-so-224px"  # openvla-7b's vision_backbone_id
# The `LlamaConfig` defaults of transformers 4.40.1 (OpenVLA's pinned version), which its minimal text_config leaves
# implicit: Llama-2-7B sizes, and rms_norm_eps 1e-6 (not Llama-2's published 1e-5 — OpenVLA ran with the default).
LLAMA_DEFAULTS = dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                      num_attention_heads=32, hidden_act="silu", max_position_embeddings=2048, rms_norm_eps=1e-6,
                      rope_theta=10000.0, attention_bias=False, tie_word_embeddings=False, bos_token_id=1,
                      eos_token_id=2)
OV_DINO, OV_SIGLIP = "vision_backbone.featurizer.", "vision_backbone.fused_featurizer."
HF_DINO, HF_SIGLIP = "model.vision_tower.featurizer.", "model.vision_tower.fused_featurizer."
IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)  # a buffer some exports carry; recomputed from the config


# --- reading a checkpoint ------------------------------------------------------------------------------------------
def _json(file: Path) -> dict:
    try:
        d = json.loads(file.read_text())
    except FileNotFoundError:
        raise PolicyError(f"{file}: not found — an OpenVLA checkpoint directory holds config.json, "
                          "preprocessor_config.json, the tokenizer files and safetensors weights") from None
    except (OSError, ValueError) as e:
        raise PolicyError(f"{file}: not readable as JSON ({e})") from None
    if not isinstance(d, dict):
        raise PolicyError(f"{file}: must hold a JSON object")
    return d


def read_openvla_config(path: Path) -> tuple[dict, dict]:
    """config.json as written, and its fields this module uses (missing ones filled in), checked to be the
    architecture it converts (openvla-7b's)."""
    file = path / "config.json"
    d = _json(file)
    # Missing fields: OpenVLAConfig's defaults, and for openvla-7b's backbone id what PrismaticConfig derives from it.
    defaults = {"pad_to_multiple_of": 64, "n_action_bins": 256, "text_config": {}, "norm_stats": None}
    if d.get("vision_backbone_id", DEFAULT_BACKBONE) == DEFAULT_BACKBONE:
        defaults.update(timm_model_ids=[DINO_ID, SIGLIP_ID], timm_override_act_layers=[None, None],
                        image_sizes=[224, 224], use_fused_vision_backbone=True)
    checks = [("model_type", lambda v: v == "openvla", "'openvla'"),
              ("use_fused_vision_backbone", lambda v: v is True, "true (two fused towers)"),
              ("timm_model_ids", lambda v: v == [DINO_ID, SIGLIP_ID], f"{[DINO_ID, SIGLIP_ID]}"),
              ("timm_override_act_layers", lambda v: v == [None, None], "[null, null] (timm's GELU)"),
              ("arch_specifier", lambda v: isinstance(v, str) and v.endswith("fused-gelu-mlp"), "'...fused-gelu-mlp'"),
              ("image_sizes", lambda v: isinstance(v, list) and len(v) == 2 and v[0] == v[1] and isinstance(v[0], int)
               and v[0] > 0, "two equal image sizes"),
              ("text_config", lambda v: isinstance(v, dict) and v.get("model_type", "llama") == "llama", "a Llama config"),
              ("pad_to_multiple_of", lambda v: isinstance(v, int) and v >= 0, "an int >= 0"),
              ("n_action_bins", lambda v: isinstance(v, int) and v >= 3, "an int >= 3"),
              ("norm_stats", lambda v: v is None or isinstance(v, dict), "an object of per-dataset statistics")]
    resolved = {}
    for key, ok, want in checks:
        resolved[key] = d.get(key, defaults.get(key))
        if not ok(resolved[key]):
            raise PolicyError(f"{file}: field {key!r}={resolved[key]!r} must be {want}; this loader converts "
                              f"OpenVLA's {DEFAULT_BACKBONE} + Llama-2 architecture (openvla/openvla-7b)")
    return d, resolved


def _normalisation(path: Path) -> tuple[list, list, dict]:
    """Each tower's (mean, std) from preprocessor_config.json, and the file. After `from_pretrained`, OpenVLA's
    PrismaticImageProcessor applies the saved `tvf_normalize_params` (its constructor's values are overwritten by the
    saved ones; openvla-7b's DINOv2 mean is the bf16-rounded 0.484375, ...), so those win over `means`/`stds`."""
    file = path / "preprocessor_config.json"
    d = _json(file)
    params = d.get("tvf_normalize_params")
    field = "tvf_normalize_params" if params else "means/stds"
    try:
        means, stds = ([p["mean"] for p in params], [p["std"] for p in params]) if params else (d["means"], d["stds"])
        means = [[float(x) for x in m] for m in means]
        stds = [[float(x) for x in s] for s in stds]
        ok = len(means) == len(stds) == 2 and all(len(v) == 3 for v in means + stds) and min(min(stds)) > 0
    except (KeyError, TypeError, ValueError):
        ok = False
    if not ok:
        raise PolicyError(f"{file}: field {field!r} must give two towers' 3-channel means and positive stds")
    return means, stds, d


def _read_tensors(path: Path) -> tuple[dict[str, torch.Tensor], Path]:
    """Every tensor of model.safetensors or of the shards model.safetensors.index.json lists, and the file to name."""
    from safetensors.torch import load_file

    index = path / "model.safetensors.index.json"
    if index.is_file():
        weight_map = _json(index).get("weight_map")
        if not isinstance(weight_map, dict):
            raise PolicyError(f"{index}: field 'weight_map' must map tensor names to shard files")
        files, where = sorted(set(weight_map.values())), index
    elif (path / "model.safetensors").is_file():
        files, where = ["model.safetensors"], path / "model.safetensors"
    else:
        raise PolicyError(f"{path}: no model.safetensors or model.safetensors.index.json — OpenVLA weights are read "
                          "from safetensors only")
    tensors: dict[str, torch.Tensor] = {}
    for name in files:
        if not (path / name).is_file():
            raise PolicyError(f"{path / name}: missing (listed in {where})")
        tensors.update(load_file(str(path / name)))
    return tensors, where


def _tower_configs(tensors: Mapping[str, torch.Tensor], image_size: int, where: Path):
    """The two towers' transformers configs: widths, depths and patch size from the tensors, heads from timm's
    model definitions, exact GELU and LayerNorm eps 1e-6 (timm's)."""
    from transformers import Dinov2WithRegistersConfig, SiglipVisionConfig

    configs = []
    for prefix, timm_id in ((OV_DINO, DINO_ID), (OV_SIGLIP, SIGLIP_ID)):
        patch, fc1 = (_tensor(tensors, prefix + k, where) for k in ("patch_embed.proj.weight", "blocks.0.mlp.fc1.weight"))
        blocks = [int(k.split(".")[3]) for k in tensors if k.startswith(prefix + "blocks.")]
        width, depth = patch.shape[0], 1 + max(blocks, default=-1)
        heads = TOWER_HEADS[timm_id]
        if width % heads or depth < 2:
            raise PolicyError(f"{where}: tower {prefix[:-1]} is {width} wide and {depth} blocks deep; it needs a width "
                              f"divisible by {heads} heads and two blocks at least (its second-to-last is read)")
        common = dict(hidden_size=width, num_hidden_layers=depth, num_attention_heads=heads, image_size=image_size,
                      patch_size=patch.shape[-1], hidden_act="gelu", layer_norm_eps=1e-6)
        if prefix == OV_DINO:
            registers = _tensor(tensors, prefix + "reg_token", where).shape[1]
            configs.append(Dinov2WithRegistersConfig(**common, mlp_ratio=fc1.shape[0] // width,
                                                     num_register_tokens=registers))
        else:
            configs.append(SiglipVisionConfig(**common, intermediate_size=fc1.shape[0], vision_use_head=True))
    return configs


def _tensor(tensors: Mapping[str, torch.Tensor], key: str, where: Path) -> torch.Tensor:
    if key not in tensors:
        raise PolicyError(f"{where}: tensor {key!r} is missing — the checkpoint is incomplete or not OpenVLA's layout")
    return tensors[key]


# --- the key map, both ways ----------------------------------------------------------------------------------------
def _plan(config) -> list[tuple[str, tuple[str, ...], tuple[str, ...]]]:
    """(how, OpenVLA keys, our keys) for every tensor: "copy", "qkv" (fused -> q, k, v), "pool_qkv" (q + kv ->
    in_proj), "dino_pos" (cls, class-free table -> cls, table with a CLS row), "siglip_pos" ((1, N, D) -> (N, D)),
    "new" (our DINOv2 mask token, never used by OpenVLA: zeros in, dropped out)."""
    plan = []

    def copy(theirs, ours):
        plan.extend(("copy", (f"{theirs}.{s}",), (f"{ours}.{s}",)) for s in ("weight", "bias"))

    def qkv(theirs, ours):
        plan.extend(("qkv", (f"{theirs}.{s}",), tuple(f"{ours}.{p}_proj.{s}" for p in "qkv")) for s in ("weight", "bias"))

    d, s = OV_DINO, OV_SIGLIP
    plan += [("dino_pos", (d + "cls_token", d + "pos_embed"), (HF_DINO + "embeddings.cls_token",
                                                               HF_DINO + "embeddings.position_embeddings")),
             ("copy", (d + "reg_token",), (HF_DINO + "embeddings.register_tokens",)),
             ("new", (), (HF_DINO + "embeddings.mask_token",))]
    def blocks(theirs_prefix: str, ours_prefix: str, n: int, names: tuple[str, ...], attention: str) -> None:
        """timm's ViT blocks (norm1, norm2, attn.proj, mlp.fc1, mlp.fc2, fused attn.qkv) onto transformers' names."""
        for i in range(n):
            theirs, ours = f"{theirs_prefix}blocks.{i}.", f"{ours_prefix}{i}."
            for a, b in zip(("norm1", "norm2", "attn.proj", "mlp.fc1", "mlp.fc2"), names, strict=True):
                copy(theirs + a, ours + b)
            qkv(theirs + "attn.qkv", ours + attention)

    copy(d + "patch_embed.proj", HF_DINO + "embeddings.patch_embeddings.projection")
    n_dino = config.vision_config.num_hidden_layers
    blocks(d, HF_DINO + "encoder.layer.", n_dino, ("norm1", "norm2", "attention.o_proj", "mlp.fc1", "mlp.fc2"),
           "attention")
    plan += [("copy", (f"{d}blocks.{i}.ls{j}.scale_factor",), (f"{HF_DINO}encoder.layer.{i}.layer_scale{j}.lambda1",))
             for i in range(n_dino) for j in (1, 2)]
    copy(d + "norm", HF_DINO + "layernorm")
    plan.append(("siglip_pos", (s + "pos_embed",), (HF_SIGLIP + "embeddings.position_embedding.weight",)))
    copy(s + "patch_embed.proj", HF_SIGLIP + "embeddings.patch_embedding")
    blocks(s, HF_SIGLIP + "encoder.layers.", config.fused_vision_config.num_hidden_layers,
           ("layer_norm1", "layer_norm2", "self_attn.out_proj", "mlp.fc1", "mlp.fc2"), "self_attn")
    copy(s + "norm", HF_SIGLIP + "post_layernorm")
    pool, head = s + "attn_pool.", HF_SIGLIP + "head."
    plan.append(("copy", (pool + "latent",), (head + "probe",)))
    plan += [("pool_qkv", (f"{pool}q.{x}", f"{pool}kv.{x}"), (f"{head}attention.in_proj_{x}",)) for x in ("weight", "bias")]
    for a, b in (("proj", "attention.out_proj"), ("norm", "layernorm"), ("mlp.fc1", "mlp.fc1"), ("mlp.fc2", "mlp.fc2")):
        copy(pool + a, head + b)
    for j in (1, 2, 3):
        copy(f"projector.fc{j}", f"model.projector.fc{j}")
    plan += [("copy", (f"language_model.model.{k}",), (f"model.language_model.{k}",)) for k in _llama_keys(config)]
    plan.append(("copy", ("language_model.lm_head.weight",), ("lm_head.weight",)))
    return plan


def _llama_keys(config) -> list[str]:
    """The Llama decoder's tensor names (from a meta-device instance: no memory)."""
    from transformers import AutoModel

    with torch.device("meta"):
        return list(AutoModel.from_config(config.text_config).state_dict())


def to_prismatic(tensors: Mapping[str, torch.Tensor], config, shapes: Mapping[str, tuple], where: Path
                 ) -> dict[str, torch.Tensor]:
    """OpenVLA's tensors -> ours; a missing, unknown or misshapen tensor is a one-line PolicyError naming it."""
    ours, used = {}, set()
    for how, src, dst in _plan(config):
        got = [_tensor(tensors, k, where) for k in src]
        used.update(src)
        if how == "copy":
            out = got
        elif how == "qkv":
            out = list(got[0].chunk(3, dim=0))
        elif how == "pool_qkv":
            out = [torch.cat(got, dim=0)]
        elif how == "dino_pos":
            cls, pos = got
            out = [cls, torch.cat([torch.zeros_like(pos[:, :1]), pos], dim=1)]
        elif how == "siglip_pos":
            out = [got[0][0]]
        else:  # "new"
            out = [torch.zeros(shapes[dst[0]], dtype=tensors[OV_DINO + "cls_token"].dtype)]
        for key, value in zip(dst, out):
            if tuple(value.shape) != shapes[key]:
                raise PolicyError(f"{where}: tensor {src[0]!r} has shape {tuple(got[0].shape)}, which does not fit "
                                  f"the model its config.json describes ({key}: {shapes[key]})")
            ours[key] = value.contiguous()
    unknown = sorted(k for k in set(tensors) - used if not k.endswith(IGNORED_SUFFIXES))
    if unknown:
        raise PolicyError(f"{where}: {len(unknown)} tensor(s) this loader does not know, e.g. {unknown[0]!r} — not a "
                          "plain OpenVLA checkpoint (OpenVLA-OFT and other variants add modules it cannot convert)")
    return ours


def to_openvla(ours: Mapping[str, torch.Tensor], config) -> dict[str, torch.Tensor]:
    """Our tensors -> OpenVLA's names and shapes (the inverse of `to_prismatic`)."""
    theirs = {}
    for how, src, dst in _plan(config):
        got = [ours[k] for k in dst]
        if how == "copy":
            out = got
        elif how == "qkv":
            out = [torch.cat(got, dim=0)]
        elif how == "pool_qkv":
            width = got[0].shape[0] // 3
            out = [got[0][:width], got[0][width:]]
        elif how == "dino_pos":
            cls, pos = got
            out = [cls + pos[:, :1], pos[:, 1:]]  # the CLS position row folded into the CLS token: same function
        elif how == "siglip_pos":
            out = [got[0][None]]
        else:
            out = []
        theirs.update({k: v.contiguous() for k, v in zip(src, out)})
    return theirs


# --- loading -------------------------------------------------------------------------------------------------------
def load_openvla(path: str | Path, dtype: str = "float32"):
    """An OpenVLA checkpoint directory -> (`PrismaticVLAForConditionalGeneration`, `PrismaticVLAProcessor`)."""
    from transformers.utils import logging as hf_logging

    from vla_rl.policy.prismatic import (
        PrismaticVLAConfig,
        PrismaticVLAForConditionalGeneration,
        PrismaticVLAProcessor,
        image_seq_length,
        load_tokenizer,
    )

    path = Path(path)
    original, ov = read_openvla_config(path)
    means, stds, preprocessor = _normalisation(path)
    try:
        tokenizer = load_tokenizer(path)
    except (OSError, ValueError) as e:
        raise PolicyError(f"{path}: cannot load the tokenizer ({' '.join(str(e).split())[:300]})") from None
    tensors, where = _read_tensors(path)
    dino, siglip = _tower_configs(tensors, ov["image_sizes"][0], where)
    text = {**LLAMA_DEFAULTS, **{k: v for k, v in ov["text_config"].items() if k not in ("torch_dtype", "dtype")},
            "model_type": "llama"}
    if text["vocab_size"] <= len(tokenizer):
        raise PolicyError(f"{path / 'config.json'}: field 'text_config.vocab_size'={text['vocab_size']} leaves no "
                          f"embedding row beyond the tokenizer's {len(tokenizer)} tokens for the image token")
    config = PrismaticVLAConfig(vision_config=dino, fused_vision_config=siglip, text_config=text,
                                image_token_id=text["vocab_size"] - 1, image_means=means, image_stds=stds,
                                norm_stats=ov["norm_stats"],
                                openvla={k: v for k, v in original.items() if k != "norm_stats"})
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in PrismaticVLAForConditionalGeneration(config).state_dict().items()}
    weights = to_prismatic(tensors, config, shapes, where)
    del tensors
    hf_logging.disable_progress_bar()
    model = PrismaticVLAForConditionalGeneration.from_pretrained(None, config=config, state_dict=weights,
                                                                 dtype=DTYPES[dtype])
    model.name_or_path = model.config.name_or_path = str(path)  # else "None": peft looks that up on the hub
    processor = PrismaticVLAProcessor(tokenizer, config.image_token_id, image_seq_length(config),
                                      ov["image_sizes"][0], preprocessor)
    return model.eval(), processor


def openvla_action_tokenizer(config, requested: ActionTokenizer, unnorm_key: str | None, where) -> ActionTokenizer:
    """OpenVLA's token scheme on this checkpoint's ids (`vocab_size - pad_to_multiple_of - n_bins` ...): with
    `unnorm_key`, un-normalised by that dataset's q01/q99/mask from `norm_stats` (what `predict_action` does); without,
    by the bounds of `requested` (e.g. the demos' quantiles, to fine-tune on another robot)."""
    ov = config.openvla
    n_bins = int(ov.get("n_action_bins", 256))  # OpenVLAConfig's defaults
    offset = config.text_config.vocab_size - int(ov.get("pad_to_multiple_of", 64)) - n_bins
    if requested.n_bins != n_bins:
        raise PolicyError(f"{where}: the checkpoint has {n_bins} action bins; the action tokenizer asks for "
                          f"{requested.n_bins}")
    low, high, mask = requested.low, requested.high, None
    if unnorm_key is not None:
        stats = config.norm_stats or {}
        if unnorm_key not in stats:
            raise PolicyError(f"{where}: unnorm_key={unnorm_key!r} is not in the checkpoint's norm_stats; choose one "
                              f"of {sorted(stats)}")
        action = stats[unnorm_key].get("action") if isinstance(stats[unnorm_key], dict) else None
        try:
            low, high = tuple(map(float, action["q01"])), tuple(map(float, action["q99"]))
            mask = None if action.get("mask") is None else tuple(bool(m) for m in action["mask"])
        except (TypeError, KeyError, ValueError):
            raise PolicyError(f"{where}: norm_stats[{unnorm_key!r}] has no 'action' statistics q01/q99") from None
        if len(low) != requested.action_dim:
            raise PolicyError(f"{where}: norm_stats[{unnorm_key!r}] has {len(low)} action dimensions; the action "
                              f"tokenizer passed has {requested.action_dim} — pass one with {len(low)}")
    try:
        return ActionTokenizer(low, high, n_bins, offset, scheme="openvla", mask=mask)
    except ActionTokenizerError as e:
        raise PolicyError(f"{where}: {e}") from None


def is_openvla(config_dict: Mapping) -> bool:
    """An OpenVLA checkpoint, or a saved base converted from one (its action tokens follow OpenVLA's scheme)."""
    from vla_rl.policy.prismatic import MODEL_TYPE

    return config_dict.get("model_type") == "openvla" or (config_dict.get("model_type") == MODEL_TYPE
                                                          and bool(config_dict.get("openvla")))


def load_openvla_parts(name_or_path: str, action_tokenizer: ActionTokenizer, unnorm_key: str | None, dtype: str,
                       use_state: bool):
    """(model, processor, action tokenizer) for `policy_from_hf`: an OpenVLA checkpoint is converted, a saved base of
    one loads as it is; a hub id is downloaded first (weights, configs and tokenizer — no code)."""
    from vla_rl.policy.backbones import get_family
    from vla_rl.policy.factory import _ensure_state_token
    from vla_rl.policy.prismatic import MODEL_TYPE

    path = Path(name_or_path)
    if not path.is_dir():
        from huggingface_hub import snapshot_download

        path = Path(snapshot_download(name_or_path, allow_patterns=["*.json", "*.safetensors", "tokenizer.model"]))
    if _json(path / "config.json").get("model_type") == "openvla":
        model, processor = load_openvla(path, dtype)
    else:
        family = get_family(MODEL_TYPE)
        model, processor = family.load_model(path, dtype=DTYPES[dtype]), family.load_processor(path)
    if use_state:
        _ensure_state_token(processor, model)
    return model, processor, openvla_action_tokenizer(model.config, action_tokenizer, unnorm_key, name_or_path)
