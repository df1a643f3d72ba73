"""Checkpoints of both training verbs, in one layout: `OUT/checkpoints/<step>/` + `last` (and `best`) links.

`vla-rl pretrain` (BC), `save_checkpoint` / `load_training_state`:

    checkpoints/000500/pretrained_model/     the policy (vla_rl.policy.policy_io format)
    checkpoints/000500/training_state/       optimizer.safetensors (AdamW moments, by parameter
                                             name) + state.json (step, param groups, RNG states)
                                             [+ raw_weights.safetensors with --ema_decay: pretrained_model then
                                             holds the averaged weights, these the ones training continues from]
    checkpoints/last -> 000500               symlink, swapped atomically after a save completes
    checkpoints/best -> 000500               (--val_episodes N) the best validation success so far; state.json's
                                             extra.best holds its step and success

`vla-rl train` (RL), `save_rl_checkpoint` / `load_train_state`:

    checkpoints/base_model/                the run's frozen base (the VLM without LoRA + processor, base.json with
                                           each file's sha256), written once by the first checkpoint
    checkpoints/000010/pretrained_model/   the policy (vla_rl.policy format: adapter/ in PEFT format + value head,
                                           referencing ../../base_model by path and sha256 instead of a copy of
                                           the base), what `vla-rl eval` reads; `vla-rl export` writes it
                                           self-contained
    checkpoints/000010/rllib/              RLlib's own state: LoRA + value head, both optimizers, the KL
                                           controller, lifetime counters (cloudpickle: this run's own files)
    checkpoints/000010/train_state.json    iteration, env steps, wall time, RNG states of driver and runners
    checkpoints/000010/preference/         (--reward preference) the loop's state: counters, RNG, labelled ids in
                                           order, pending rounds (preference_state.json) + reward_model/
    checkpoints/last -> 000010
    checkpoints/best -> 000010             (--val_episodes N) the checkpoint of the best validation success so far;
                                           train_state.json's "best" holds its iteration and success

No pickles of the project's own: optimizer tensors and the torch RNG go to safetensors, the rest to JSON (RLlib's
resume state is the run's own file). A step directory is assembled under a temporary name and renamed into place
only when complete, and the links are swapped atomically afterwards, so `last` always names a whole checkpoint.
The RL half only calls the algorithm it is given (`policy_module()`, `save_to_path`, `rng_state`): no RLlib import.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vla_rl.base.atomic_io import atomic_write_json, replace_dir
from vla_rl.base.errors import CheckpointError

LAST = "last"
RAW_WEIGHTS = "raw_weights.safetensors"


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
                    extra: dict[str, Any], np_rng: np.random.Generator,
                    raw_weights: dict[str, torch.Tensor] | None = None) -> Path:
    """Write checkpoint `step` (policy + optimizer + RNGs + `extra` [+ the raw weights behind an averaged policy])
    and move `last` to it."""
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
    if raw_weights is not None:
        save_file({n: t.detach().cpu().contiguous() for n, t in raw_weights.items()},
                  str(tmp / "training_state" / RAW_WEIGHTS))
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
    from vla_rl.base.errors import ConfigError
    from vla_rl.config import config_to_yaml, load_config

    if not saved_path.is_file():
        raise CheckpointError(f"{saved_path}: missing — {saved_path.parent} is not {what} directory")
    saved = load_config(config_class, saved_path)
    for name in changeable:
        setattr(saved, name, getattr(cfg, name))
    _accept_family_instruction_length(saved, cfg)
    a, b = config_to_yaml(saved).splitlines(), config_to_yaml(cfg).splitlines()
    diff = [f"{x.strip()} -> {y.strip()}" for x, y in zip(a, b, strict=False) if x != y]
    if diff or len(a) != len(b):
        raise ConfigError(f"--resume: options differ from {saved_path}: {diff[:3]}; resume with the same options "
                          f"(only {', '.join(n for n in changeable if n != 'resume')} may change)")


def _accept_family_instruction_length(saved, cfg) -> None:
    """A run saved before `env_options.instruction_length: 0` (= the task family's length) recorded the old default, 64.
    Resuming it with the new default is no change where every named task's family length is 64 too."""
    from envs import resolve_env_ids, resolve_options
    from envs.options import DEFAULT_INSTRUCTION_LENGTH

    old, new = getattr(saved, "env_options", None), getattr(cfg, "env_options", None)
    if old is None or new is None or new.instruction_length != 0 or old.instruction_length != DEFAULT_INSTRUCTION_LENGTH:
        return
    try:
        named = [getattr(cfg, "env", "")] + list(getattr(cfg, "envs", ()) or ())
        ids = resolve_env_ids(getattr(cfg, "suite", ""), [e for e in named if e])
        lengths = {resolve_options(e).instruction_length for e in ids}
    except KeyError:  # an unknown task: let the comparison report the difference
        return
    if lengths <= {DEFAULT_INSTRUCTION_LENGTH}:
        old.instruction_length = 0


def latest(root: str | Path) -> Path | None:
    link = Path(root) / LAST
    return link.resolve() if link.exists() else None


def read_state_json(path: Path, required: tuple[str, ...]) -> dict[str, Any]:
    """A checkpoint's JSON state with its required fields, or a CheckpointError naming the file and what is wrong."""
    if not path.is_file():
        raise CheckpointError(f"{path}: missing — the checkpoint is incomplete")
    try:
        state = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a JSON object")
    for key in required:
        if key not in state:
            raise CheckpointError(f"{path}: field {key!r} is missing")
    return state


def load_training_state(ckpt: str | Path, optimizer: torch.optim.Optimizer, names: list[str],
                        np_rng: np.random.Generator) -> dict[str, Any]:
    """Restore optimizer moments and RNGs in place; returns state.json (step, extra)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    ckpt = Path(ckpt)
    state_path, tensor_path = ckpt / "training_state" / "state.json", ckpt / "training_state" / "optimizer.safetensors"
    state = read_state_json(state_path, ("step", "param_names", "param_groups", "numpy_rng"))
    if not tensor_path.is_file():
        raise CheckpointError(f"{tensor_path}: missing — the checkpoint is incomplete")
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


def load_raw_weights(ckpt: str | Path, names: list[str]) -> dict[str, torch.Tensor]:
    """The raw (not averaged) weights of an --ema_decay checkpoint, one per trained parameter."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(ckpt) / "training_state" / RAW_WEIGHTS
    if not path.is_file():
        raise CheckpointError(f"{path}: missing — the run averages its weights (--ema_decay) but this checkpoint has "
                              "no raw weights to continue from; start again with --overwrite true")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path}: cannot read ({e})") from e
    if sorted(tensors) != sorted(names):
        diff = sorted(set(tensors) ^ set(names))[:5]
        raise CheckpointError(f"{path}: the tensors do not match the policy's trainable parameters (e.g. {diff})")
    return tensors


# --- RL checkpoints (vla-rl train) ------------------------------------------------------------------
STATE_FILE = "train_state.json"
SHARED_BASE = "base_model"  # checkpoints/base_model: the run's frozen base, written once; checkpoints reference it


def save_rl_checkpoint(root: str | Path, iteration: int, algo, state: dict[str, Any]) -> Path:
    root = Path(root)
    final = step_dir(root, iteration)
    tmp = root / f".{final.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    from vla_rl.policy.policy_io import save_shared_base

    policy = algo.policy_module().policy  # the learner's weights, not a runner's
    base = save_shared_base(policy, root / SHARED_BASE)  # once per run: the base is frozen
    policy.save_pretrained(tmp / "pretrained_model", shared_base=base)
    algo.save_to_path(str((tmp / "rllib").resolve()))
    atomic_write_json(tmp / STATE_FILE, {**state, "iteration": iteration, "rng": algo.rng_state()})
    if getattr(algo, "preference", None) is not None:
        algo.preference.save(tmp / "preference")
    replace_dir(tmp, final)
    point_last(root, final)
    return final


BEST = "best"


def is_better(val_success: float, best: dict | None) -> bool:
    """Does a checkpoint with this validation success replace `best` ({"iteration", "success_rate"} or None)?
    Ties go to the later checkpoint: equal validation success, more training."""
    return best is None or val_success >= float(best["success_rate"])


def point_best(root: str | Path, iteration: int) -> None:
    point_last(Path(root), step_dir(Path(root), iteration), BEST)


def load_train_state(ckpt: str | Path) -> dict[str, Any]:
    state = read_state_json(Path(ckpt) / STATE_FILE, ("iteration", "env_steps", "rng"))
    if not (Path(ckpt) / "rllib").is_dir():
        raise CheckpointError(f"{Path(ckpt) / 'rllib'}: missing — the checkpoint is incomplete")
    return state
