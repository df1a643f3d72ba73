"""RL checkpoints: `OUT/checkpoints/<iteration>/` + a `last` link, written whole or not at all.

    checkpoints/000010/pretrained_model/   the policy (vla_rl.policy format: base + adapter/ in PEFT format
                                           + value head), what `vla-rl eval` and `vla-rl export` read
    checkpoints/000010/rllib/              RLlib's own state: LoRA + value head, both optimizers, the KL
                                           controller, lifetime counters (cloudpickle: this run's own files)
    checkpoints/000010/train_state.json    iteration, env steps, wall time, RNG states of driver and runners
    checkpoints/000010/preference/         (--reward preference) the loop's state: counters, RNG, labelled ids in
                                           order, pending rounds (preference_state.json) + reward_model/
    checkpoints/last -> 000010
    checkpoints/best -> 000010             (--val_episodes N) the checkpoint of the best validation success so far;
                                           train_state.json's "best" holds its iteration and success

The step directory is assembled under a temporary name and renamed into place; `last` is swapped
atomically afterwards, so it always names a complete checkpoint.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from vla_rl.atomic_io import atomic_write_json, replace_dir
from vla_rl.checkpoints import CheckpointError, latest, point_last, step_dir

STATE_FILE = "train_state.json"
__all__ = ["BEST", "STATE_FILE", "is_better", "latest", "load_train_state", "point_best", "save_rl_checkpoint"]


def learner_module(algo):
    """The learner's RLModule with its current weights (`algo.get_module()` is a runner's): the learner's own with
    num_learners=0, a driver-side copy refreshed from learner 0 with remote learners."""
    return algo.policy_module()


def save_rl_checkpoint(root: str | Path, iteration: int, algo, state: dict[str, Any]) -> Path:
    root = Path(root)
    final = step_dir(root, iteration)
    tmp = root / f".{final.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    learner_module(algo).policy.save_pretrained(tmp / "pretrained_model")
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
    path = Path(ckpt) / STATE_FILE
    if not path.is_file():
        raise CheckpointError(f"{path}: missing — the checkpoint is incomplete")
    try:
        state = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from None
    for key in ("iteration", "env_steps", "rng"):
        if key not in state:
            raise CheckpointError(f"{path}: field {key!r} is missing")
    if not (Path(ckpt) / "rllib").is_dir():
        raise CheckpointError(f"{Path(ckpt) / 'rllib'}: missing — the checkpoint is incomplete")
    return state
