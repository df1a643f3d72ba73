"""Saving and loading a VLAPolicy (format "vla-rl-policy", version 1).

Layout::

    DIR/policy.json              format, version, PolicySpec, sha256 of every other file
    DIR/action_tokenizer.json    bin statistics (vla-rl-action-tokenizer)
    DIR/heads.safetensors        value head (+ state projection)
    DIR/base/                    HF `save_pretrained` of the VLM: config.json, model.safetensors,
                                 processor and tokenizer files (loadable by transformers alone)
    DIR/adapter/                 LoRA adapters in PEFT format (only when the policy has LoRA)

Weights are safetensors only. The directory is written next to its final place and renamed in,
so a crash never leaves a half-written policy; on load every file is checked against its
sha256, so corruption is reported by file name.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import torch

from vla_rl.atomic_io import atomic_write_json, replace_dir
from vla_rl.policy.action_tokenizer import ActionTokenizer, ActionTokenizerError
from vla_rl.policy.vla_policy import PolicyError, PolicySpec, VLAPolicy

FORMAT = "vla-rl-policy"
VERSION = 1
INDEX = "policy.json"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _base_state_dict(policy: VLAPolicy) -> dict[str, torch.Tensor]:
    """The VLM's own weights: PEFT-injected LoRA tensors dropped, `base_layer` names restored."""
    sd = {}
    for key, value in policy.base_model.state_dict().items():
        if "lora_" in key:
            continue
        sd[key.replace(".base_layer.", ".")] = value
    return sd


def save_policy(policy: VLAPolicy, path: str | Path) -> Path:
    from safetensors.torch import save_file
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # per-file "Writing model shards" bars would drown the trainer's
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    policy.base_model.save_pretrained(tmp / "base", state_dict=_base_state_dict(policy))
    policy.processor.save_pretrained(tmp / "base")
    if policy.has_lora:
        policy.model.save_pretrained(tmp / "adapter")
    heads = {f"value_head.{k}": v for k, v in policy.value_head.state_dict().items()}
    if policy.state_proj is not None:
        heads.update({f"state_proj.{k}": v for k, v in policy.state_proj.state_dict().items()})
    save_file({k: v.detach().contiguous().cpu() for k, v in heads.items()}, str(tmp / "heads.safetensors"))
    policy.action_tokenizer.save(tmp / "action_tokenizer.json")
    files = {str(p.relative_to(tmp)): _sha256(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
    atomic_write_json(tmp / INDEX, {"format": FORMAT, "version": VERSION, "spec": policy.spec_dict(), "files": files})
    replace_dir(tmp, path)
    return path


def read_index(path: Path) -> dict:
    from vla_rl.formats import read_versioned_json

    return read_versioned_json(path / INDEX, FORMAT, VERSION, PolicyError,
                               f"is {path} a vla-rl policy directory (vla-rl pretrain writes one)?",
                               {"spec": dict, "files": dict})


def verify_files(path: Path, files: dict[str, str]) -> None:
    for rel, digest in files.items():
        f = path / rel
        if not f.is_file():
            raise PolicyError(f"{f}: missing (listed in {path / INDEX})")
        if _sha256(f) != digest:
            raise PolicyError(f"{f}: checksum mismatch — the file is corrupt or was modified after saving")


def load_policy(path: str | Path, trainable: bool = False, device: str | torch.device = "cpu") -> VLAPolicy:
    from safetensors.torch import load_file
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    path = Path(path)
    index = read_index(path)
    verify_files(path, index["files"])
    spec_d = dict(index["spec"])
    try:
        spec_d["image_size"] = tuple(spec_d["image_size"])
        spec = PolicySpec(**spec_d)
    except (KeyError, TypeError) as e:
        raise PolicyError(f"{path / INDEX}: field 'spec' is invalid ({e})") from e
    try:
        action_tokenizer = ActionTokenizer.load(path / "action_tokenizer.json")
    except ActionTokenizerError as e:
        raise PolicyError(str(e)) from e
    model = AutoModelForImageTextToText.from_pretrained(path / "base", local_files_only=True)
    processor = AutoProcessor.from_pretrained(path / "base", local_files_only=True)
    if (path / "adapter").is_dir():
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, path / "adapter", is_trainable=trainable)
    policy = VLAPolicy(model, processor, action_tokenizer, spec)
    heads = load_file(str(path / "heads.safetensors"))
    own = {k: v for k, v in policy.state_dict().items() if k.startswith(("value_head.", "state_proj."))}
    if set(heads) != set(own):
        raise PolicyError(f"{path / 'heads.safetensors'}: tensors {sorted(set(heads) ^ set(own))} do not match the spec")
    policy.load_state_dict(heads, strict=False)
    if policy.has_lora and policy.state_proj is not None:
        policy.state_proj.requires_grad_(False)
    with torch.no_grad():  # own, aligned memory (not safetensors' mmap): bit-identical numerics to the saver's
        for t in list(policy.parameters()) + list(policy.buffers()):
            t.data = t.data.clone()
    if not trainable:
        policy.requires_grad_(False)
    policy.train(trainable)
    return policy.to(device)
