"""Saving and loading a VLAPolicy (format "vla-rl-policy", version 1).

Layout::

    DIR/policy.json              format, version, PolicySpec, sha256 of every other file
    DIR/action_tokenizer.json    bin statistics (vla-rl-action-tokenizer)
    DIR/heads.safetensors        value head (+ state projection)
    DIR/base/                    HF `save_pretrained` of the VLM: config.json, model.safetensors,
                                 processor and tokenizer files (loadable by transformers alone)
    DIR/adapter/                 LoRA adapters in PEFT format (only when the policy has LoRA)

A policy may instead reference a shared base (`save_policy(..., shared_base=B)`): no DIR/base/, and policy.json's
`base` = {"path": B relative to DIR, "files": sha256 of each of B's files}. An RL run writes its frozen base once
(`save_shared_base`: B/ holds what base/ would, plus B/base.json) and each checkpoint holds only the adapters and
heads — for a 7B VLA ~13.5 GB less per checkpoint. Loading checks B's files against the checksums the policy was
saved with; `vla-rl export` writes a self-contained directory again.

Weights are safetensors only. The directory is written next to its final place and renamed in,
so a crash never leaves a half-written policy; on load every file is checked against its
sha256, so corruption is reported by file name.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import torch

from vla_rl.base.atomic_io import atomic_write_json, replace_dir
from vla_rl.policy.action_tokenizer import ActionTokenizer, ActionTokenizerError
from vla_rl.policy.vla_policy import DTYPES, PolicyError, PolicySpec, VLAPolicy

FORMAT = "vla-rl-policy"
VERSION = 1
INDEX = "policy.json"
BASE_INDEX = "base.json"  # the file list of a shared base directory (`save_shared_base`)
BASE_FORMAT = "vla-rl-base"


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


def _save_base(policy: VLAPolicy, where: Path) -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # per-file "Writing model shards" bars would drown the trainer's
    policy.base_model.save_pretrained(where, state_dict=_base_state_dict(policy))
    policy.processor.save_pretrained(where)


def _file_digests(root: Path, skip: str = "") -> dict[str, str]:
    return {str(p.relative_to(root)): _sha256(p) for p in sorted(root.rglob("*")) if p.is_file() and p.name != skip}


def save_shared_base(policy: VLAPolicy, path: str | Path) -> Path:
    """Write the policy's frozen base (the VLM without LoRA, and its processor) to `path` once, atomically; an
    existing shared base there is kept (an RL run's base never changes)."""
    path = Path(path)
    if (path / BASE_INDEX).is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    _save_base(policy, tmp)
    atomic_write_json(tmp / BASE_INDEX, {"format": BASE_FORMAT, "version": VERSION, "files": _file_digests(tmp)})
    replace_dir(tmp, path)
    return path


def save_policy(policy: VLAPolicy, path: str | Path, shared_base: str | Path | None = None) -> Path:
    """Write the policy to `path` (atomically); with `shared_base` (a `save_shared_base` directory) reference that
    base instead of copying it."""
    import os

    from safetensors.torch import save_file

    from vla_rl.base.outputs import POLICY, check_replaceable

    path = Path(path)
    check_replaceable(path, POLICY)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    base_ref = None
    if shared_base is None:
        _save_base(policy, tmp / "base")
    else:
        shared_base = Path(shared_base)
        base_ref = {"path": os.path.relpath(shared_base.resolve(), path.parent.resolve() / path.name),
                    "files": _read_base_index(shared_base)["files"]}
    if policy.has_lora:
        policy.model.save_pretrained(tmp / "adapter")
    heads = {f"value_head.{k}": v for k, v in policy.value_head.state_dict().items()}
    if policy.state_proj is not None:
        heads.update({f"state_proj.{k}": v for k, v in policy.state_proj.state_dict().items()})
    save_file({k: v.detach().contiguous().cpu() for k, v in heads.items()}, str(tmp / "heads.safetensors"))
    policy.action_tokenizer.save(tmp / "action_tokenizer.json")
    index = {"format": FORMAT, "version": VERSION, "spec": policy.spec_dict(), "files": _file_digests(tmp)}
    atomic_write_json(tmp / INDEX, index if base_ref is None else {**index, "base": base_ref})
    replace_dir(tmp, path)
    return path


def read_index(path: Path) -> dict:
    from vla_rl.base.formats import read_versioned_json

    return read_versioned_json(path / INDEX, FORMAT, VERSION, PolicyError,
                               f"is {path} a vla-rl policy directory (vla-rl pretrain writes one)?",
                               {"spec": dict, "files": dict})


def _read_base_index(path: Path) -> dict:
    from vla_rl.base.formats import read_versioned_json

    return read_versioned_json(path / BASE_INDEX, BASE_FORMAT, VERSION, PolicyError,
                               "is it a shared base an RL run wrote (checkpoints/base_model)?", {"files": dict})


def base_dir(path: Path, index: dict) -> Path:
    """Where a policy's base weights are: its own base/, or the shared base its policy.json references (checked
    against the checksums saved with the policy)."""
    ref = index.get("base")
    if ref is None:
        return path / "base"
    if not (isinstance(ref, dict) and isinstance(ref.get("path"), str) and isinstance(ref.get("files"), dict)):
        raise PolicyError(f"{path / INDEX}: field 'base'={ref!r} must be {{'path': str, 'files': {{file: sha256}}}}")
    shared = (path / ref["path"]).resolve()
    if not shared.is_dir():
        raise PolicyError(f"{path / INDEX}: field 'base.path' points to {shared}, which is missing — this checkpoint "
                          "shares its run's base (checkpoints/base_model); keep it beside the checkpoint, or "
                          "`vla-rl export` the checkpoint from its run for a self-contained copy")
    verify_files(shared, ref["files"], BASE_INDEX)
    return shared


def verify_files(path: Path, files: dict[str, str], index_name: str = INDEX) -> None:
    """Every file in the directory is listed in its index (policy.json) with its sha256, and matches it.

    Loading reads whatever transformers and peft find under base/ and adapter/, so an unlisted file
    is refused too: a coverage gap would let a swapped or corrupted file load unchecked.
    """
    present = {str(p.relative_to(path)) for p in path.rglob("*") if p.is_file()} - {index_name}
    unlisted = sorted(present - set(files))
    if unlisted:
        raise PolicyError(f"{path / unlisted[0]}: not listed in {path / index_name} (field 'files'), so it cannot be "
                          "verified — remove it, or save the policy again")
    for rel, digest in files.items():
        f = path / rel
        if not isinstance(digest, str):
            raise PolicyError(f"{path / index_name}: field 'files.{rel}' must be a sha256 string, got {digest!r}")
        if not f.is_file():
            raise PolicyError(f"{f}: missing (listed in {path / index_name})")
        if _sha256(f) != digest:
            raise PolicyError(f"{f}: checksum mismatch — the file is corrupt or was modified after saving")


def _spec_from_index(spec_d: dict, where: Path) -> PolicySpec:
    """PolicySpec from policy.json's 'spec', each field type-checked (a dataclass checks nothing)."""
    kinds = {"action_dim": int, "state_dim": int, "chunk_size": int, "use_state": bool, "max_prompt_tokens": int,
             "prompt_template": str, "dtype": str, "value_hidden": int, "lora": dict, "train_env": str,
             "train_env_options": dict}
    spec_d = dict(spec_d)
    for key, kind in kinds.items():
        if key not in spec_d:
            if key in ("action_dim", "state_dim"):
                raise PolicyError(f"{where}: field 'spec.{key}' is missing")
            continue
        value = spec_d[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise PolicyError(f"{where}: field 'spec.{key}'={value!r} must be a {kind.__name__}")
    size = spec_d.get("image_size")
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(x, int) and x > 0 for x in size)):
        raise PolicyError(f"{where}: field 'spec.image_size'={size!r} must be [height, width]")
    spec_d["image_size"] = tuple(size)
    if spec_d.get("dtype", "float32") not in DTYPES:
        raise PolicyError(f"{where}: field 'spec.dtype'={spec_d['dtype']!r}; choose one of {sorted(DTYPES)}")
    try:
        return PolicySpec(**spec_d)
    except TypeError as e:
        raise PolicyError(f"{where}: field 'spec' is invalid ({e})") from None


def _check_architecture(base: Path) -> str:
    """The base's model_type (config.json); an unsupported model family is refused before any weight is read."""
    import json

    from vla_rl.policy.backbones import FAMILIES

    config = base / "config.json"
    try:
        model_type = json.loads(config.read_text()).get("model_type")
    except (OSError, ValueError, AttributeError) as e:
        raise PolicyError(f"{config}: cannot be read as a transformers config ({e})") from None
    if model_type not in FAMILIES:
        raise PolicyError(f"{config}: field 'model_type'={model_type!r} is not supported; supported: {sorted(FAMILIES)}")
    return model_type


def load_policy(path: str | Path, trainable: bool = False, device: str | torch.device = "cpu") -> VLAPolicy:
    from safetensors.torch import load_file
    from transformers.utils import logging as hf_logging

    from vla_rl.policy.backbones import get_family

    hf_logging.disable_progress_bar()
    path = Path(path)
    index = read_index(path)
    verify_files(path, index["files"])
    spec = _spec_from_index(index["spec"], path / INDEX)
    try:
        action_tokenizer = ActionTokenizer.load(path / "action_tokenizer.json")
    except ActionTokenizerError as e:
        raise PolicyError(str(e)) from e
    if action_tokenizer.action_dim != spec.action_dim:
        raise PolicyError(f"{path / 'action_tokenizer.json'}: has {action_tokenizer.action_dim} action dimensions but "
                          f"{path / INDEX} field 'spec.action_dim' is {spec.action_dim} — the two files do not belong "
                          "together; save the policy again")
    base = base_dir(path, index)
    family = get_family(_check_architecture(base))
    model = family.load_model(base, local_files_only=True)
    processor = family.load_processor(base, local_files_only=True)
    if (path / "adapter").is_dir():
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, path / "adapter", is_trainable=trainable)
    try:
        policy = VLAPolicy(model, processor, action_tokenizer, spec)
    except PolicyError as e:
        raise PolicyError(f"{path}: {e}") from None
    heads = load_file(str(path / "heads.safetensors"))
    own = {k: v for k, v in policy.state_dict().items() if k.startswith(("value_head.", "state_proj."))}
    if set(heads) != set(own):
        raise PolicyError(f"{path / 'heads.safetensors'}: tensors {sorted(set(heads) ^ set(own))} do not match the spec")
    try:
        policy.load_state_dict(heads, strict=False)
    except RuntimeError as e:
        raise PolicyError(f"{path / 'heads.safetensors'}: tensors do not fit the spec ({str(e).splitlines()[-1]})") from None
    if policy.has_lora and policy.state_proj is not None:
        policy.state_proj.requires_grad_(False)
    with torch.no_grad():  # own, aligned memory (not safetensors' mmap): bit-identical numerics to the saver's
        for t in list(policy.parameters()) + list(policy.buffers()):
            t.data = t.data.clone()
    if not trainable:
        policy.requires_grad_(False)
    policy.train(trainable)
    return policy.to(device)
