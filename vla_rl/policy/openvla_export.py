"""A policy loaded from an OpenVLA checkpoint, written back in OpenVLA's layout (`vla-rl export --format openvla`): the
VLM with LoRA merged, through the key map of `vla_rl.policy.openvla`, and the policy's action statistics as a
`norm_stats` entry.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from vla_rl.policy.openvla import to_openvla
from vla_rl.policy.vla_policy import PolicyError


def _merged_state_dict(policy) -> dict[str, torch.Tensor]:
    """The base model's tensors with any active LoRA adapters merged in (out of place: the policy is unchanged)."""
    deltas = {}
    if policy.has_lora:
        from peft.tuners.lora import LoraLayer

        for name, module in policy.base_model.named_modules():
            if isinstance(module, LoraLayer):
                adapters = [a for a in module.active_adapters if a in module.lora_A]
                if adapters:
                    deltas[f"{name}.weight"] = sum(module.get_delta_weight(a) for a in adapters)
    out = {}
    for key, value in policy.base_model.state_dict().items():
        if "lora_" in key:
            continue
        key = key.replace(".base_layer.", ".")
        out[key] = (value + deltas[key].to(value.dtype)) if key in deltas else value
    return out


def export_openvla(policy, path: str | Path, stats_key: str | None = None) -> Path:
    """Write `policy`'s VLM (LoRA merged) to `path` in OpenVLA's layout: config.json, model.safetensors, tokenizer,
    preprocessor_config.json. `stats_key` also records the policy's action statistics (q01/q99/mask of its openvla
    tokenizer) under that `norm_stats` key. The value head is not part of the format; a policy with a <state> input is
    refused (OpenVLA has none). `policy_from_hf(path, ...)` loads the result; `path` must not exist."""
    from safetensors.torch import save_file

    from vla_rl.base.atomic_io import atomic_write_json
    from vla_rl.policy.prismatic import MODEL_TYPE, PrismaticVLAProcessor

    path = Path(path)
    config = policy.base_model.config
    if config.model_type != MODEL_TYPE or not config.openvla:
        raise PolicyError(f"this policy's model ({config.model_type}) was not loaded from an OpenVLA checkpoint; only "
                          "those export to OpenVLA's layout — use save_pretrained")
    if policy.spec.use_state:
        raise PolicyError("this policy reads a <state> token, which OpenVLA's layout cannot hold; export a policy "
                          "built with use_state=False, or keep save_pretrained")
    if path.exists():
        raise PolicyError(f"{path}: exists — give a new directory")
    norm_stats = dict(config.norm_stats or {})
    if stats_key is not None:
        at = policy.action_tokenizer
        if at.scheme != "openvla":
            raise PolicyError(f"stats_key={stats_key!r}: the policy's action tokens are not OpenVLA's scheme")
        norm_stats[stats_key] = {"action": {"q01": list(at.low), "q99": list(at.high), "mask": list(at.mask)}}
    tensors = to_openvla(_merged_state_dict(policy), config)
    tmp = path.parent / f".{path.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    atomic_write_json(tmp / "config.json", {**config.openvla, **({"norm_stats": norm_stats} if norm_stats else {})})
    save_file({k: v.detach().cpu() for k, v in tensors.items()}, str(tmp / "model.safetensors"),
              metadata={"format": "pt"})
    processor = policy.processor
    processor.tokenizer.save_pretrained(tmp)
    atomic_write_json(tmp / PrismaticVLAProcessor.FILE, processor.preprocessor)
    tmp.rename(path)
    return path
