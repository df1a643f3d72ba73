"""Training checkpoints: `OUT/checkpoints/<step>/{pretrained_model,training_state}` + a `last` link.

    checkpoints/000500/pretrained_model/     the policy (vla_rl.policy.policy_io format)
    checkpoints/000500/training_state/       optimizer.safetensors (AdamW moments, by parameter
                                             name) + state.json (step, param groups, RNG states)
    checkpoints/last -> 000500               symlink, swapped atomically after a save completes

No pickles: optimizer tensors and the torch RNG go to safetensors, the rest to JSON. A step
directory is renamed into place only when complete, so `last` always points at a whole one.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vla_rl.atomic_io import atomic_write_json, replace_dir
from vla_rl.errors import VLARLError

LAST = "last"


class CheckpointError(VLARLError):
    """A checkpoint is missing or does not fit the run; the message names the file and field."""


def step_dir(root: Path, step: int) -> Path:
    return root / f"{step:06d}"


def _optimizer_tensors(optimizer: torch.optim.Optimizer, names: list[str]) -> tuple[dict, list]:
    sd = optimizer.state_dict()
    tensors = {}
    for idx, state in sd["state"].items():
        for key, value in state.items():
            tensors[f"{names[idx]}::{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
    return tensors, sd["param_groups"]


def save_checkpoint(root: str | Path, step: int, policy, optimizer: torch.optim.Optimizer, names: list[str],
                    extra: dict[str, Any], np_rng: np.random.Generator) -> Path:
    """Write checkpoint `step` (policy + optimizer + RNGs + `extra`) and move `last` to it."""
    from safetensors.torch import save_file

    root = Path(root)
    final = step_dir(root, step)
    tmp = root / f".{final.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    policy.save_pretrained(tmp / "pretrained_model")
    tensors, groups = _optimizer_tensors(optimizer, names)
    tensors["__torch_rng__"] = torch.get_rng_state()
    (tmp / "training_state").mkdir()
    save_file(tensors, str(tmp / "training_state" / "optimizer.safetensors"))
    atomic_write_json(tmp / "training_state" / "state.json", {
        "step": step, "param_names": names, "param_groups": groups,
        "numpy_rng": np_rng.bit_generator.state, "extra": extra})
    replace_dir(tmp, final)
    point_last(root, final)
    return final


def point_last(root: Path, final: Path, name: str = LAST) -> None:
    """Swap `root/<name>` (`last`, or `best` of a train run) to `final` atomically (a new link renamed over the old)."""
    link_tmp = root / f".{name}.tmp"
    if link_tmp.is_symlink() or link_tmp.exists():
        link_tmp.unlink()
    os.symlink(final.name, link_tmp)
    os.replace(link_tmp, root / name)


def check_same_options(config_class, cfg, saved_path: Path, changeable: tuple[str, ...], what: str) -> None:
    """Refuse `--resume` when an option other than `changeable` differs from the run's saved config."""
    from envs.errors import ConfigError
    from vla_rl.config import config_to_yaml, load_config

    if not saved_path.is_file():
        raise CheckpointError(f"{saved_path}: missing — {saved_path.parent} is not {what} directory")
    saved = load_config(config_class, saved_path)
    for name in changeable:
        setattr(saved, name, getattr(cfg, name))
    a, b = config_to_yaml(saved).splitlines(), config_to_yaml(cfg).splitlines()
    diff = [f"{x.strip()} -> {y.strip()}" for x, y in zip(a, b, strict=False) if x != y]
    if diff or len(a) != len(b):
        raise ConfigError(f"--resume: options differ from {saved_path}: {diff[:3]}; resume with the same options "
                          f"(only {', '.join(n for n in changeable if n != 'resume')} may change)")


def latest(root: str | Path) -> Path | None:
    link = Path(root) / LAST
    return link.resolve() if link.exists() else None


def load_training_state(ckpt: str | Path, optimizer: torch.optim.Optimizer, names: list[str],
                        np_rng: np.random.Generator) -> dict[str, Any]:
    """Restore optimizer moments and RNGs in place; returns state.json (step, extra)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    ckpt = Path(ckpt)
    state_path, tensor_path = ckpt / "training_state" / "state.json", ckpt / "training_state" / "optimizer.safetensors"
    for p in (state_path, tensor_path):
        if not p.is_file():
            raise CheckpointError(f"{p}: missing — the checkpoint is incomplete")
    try:
        state = json.loads(state_path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{state_path}: not valid JSON ({e})") from e
    for key in ("step", "param_names", "param_groups", "numpy_rng"):
        if key not in state:
            raise CheckpointError(f"{state_path}: field {key!r} is missing")
    if state["param_names"] != names:
        diff = sorted(set(state["param_names"]) ^ set(names))[:5]
        raise CheckpointError(f"{state_path}: field 'param_names' does not match the policy's trainable parameters "
                              f"(e.g. {diff}); was the checkpoint written with other policy options?")
    try:
        tensors = load_file(str(tensor_path))
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{tensor_path}: cannot read ({e})") from e
    per_param: dict[int, dict[str, torch.Tensor]] = {}
    index = {n: i for i, n in enumerate(names)}
    for key, value in tensors.items():
        if key == "__torch_rng__":
            continue
        name, field = key.split("::")
        per_param.setdefault(index[name], {})[field] = value.clone()
    optimizer.load_state_dict({"state": per_param, "param_groups": state["param_groups"]})
    torch.set_rng_state(tensors["__torch_rng__"])
    np_rng.bit_generator.state = state["numpy_rng"]
    return state
