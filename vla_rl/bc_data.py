"""Behaviour-cloning samples from demo datasets: (observation, next K actions) pairs in memory.

Every step t of every episode becomes one sample: image/state at o_t, the instruction, and the
action chunk a_t .. a_{t+K-1}; a chunk running past the episode's end repeats its last action
(the arm holds still), as ACT / OpenVLA-OFT pad their chunks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from envs.demos import INDEX, DatasetError, DemoDataset


@dataclass
class BCData:
    image: np.ndarray  # (N, H, W, 3) uint8
    state: np.ndarray  # (N, S) float32
    instruction: np.ndarray  # (N, L) int64
    actions: np.ndarray  # (N, K, D) float32
    env: dict  # env facts of the first dataset (action/state/image sizes must agree across datasets)
    episodes: int
    env_options: dict  # EnvOptions the first dataset was collected with (for evaluation)
    # Every env id of the datasets, in order of first appearance, with the EnvOptions its first dataset was collected
    # with: a multi-task run evaluates on each.
    env_ids: list[str] = field(default_factory=list)
    env_options_by_id: dict[str, dict] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.image)

    def batch(self, idx: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
        obs = {"image": self.image[idx], "state": self.state[idx], "instruction": self.instruction[idx]}
        return obs, self.actions[idx]

    @property
    def all_actions(self) -> np.ndarray:
        """Every demo action `(N, D)` (the first of each chunk): the action tokenizer's statistics."""
        return self.actions[:, 0]

    @classmethod
    def load(cls, paths: Sequence[str | Path], chunk_size: int = 1, max_episodes: int = 0,
             successful_only: bool = True) -> BCData:
        """Load datasets; `max_episodes` > 0 keeps the first that many (successful) episodes of each. A path that
        is not a dataset but holds datasets (what `vla-rl collect --suite` writes) stands for all of them."""
        images, states, instrs, chunks, env, n_eps = [], [], [], [], None, 0
        options_by_id: dict[str, dict] = {}
        paths = expand_dataset_dirs(paths)
        for path in paths:
            ds = DemoDataset(path)
            facts = {k: ds.env[k] for k in ("action_dim", "state_dim", "image_shape", "instruction_length")}
            collections = ds.index.get("collections") or [{}]
            options_by_id.setdefault(ds.env["env_id"], collections[0].get("config", {}).get("env_options", {}))
            if env is None:
                env = dict(ds.env)
                first = facts
                env_options = options_by_id[ds.env["env_id"]]
            elif facts != first:
                raise DatasetError(f"{path}: env facts {facts} differ from {paths[0]}'s {first}; "
                                   "datasets trained together must share action/state/image sizes")
            taken = 0
            for i, entry in enumerate(ds.episodes):
                if successful_only and not entry["success"]:
                    continue
                if max_episodes and taken >= max_episodes:
                    break
                ep = ds[i]
                t = ep.length
                steps = np.minimum(np.arange(t)[:, None] + np.arange(chunk_size)[None, :], t - 1)
                images.append(ep.image[:t])
                states.append(ep.state[:t])
                instrs.append(np.repeat(ep.instruction[None], t, axis=0))
                chunks.append(ep.action[steps])
                taken += 1
            if taken == 0:
                raise DatasetError(f"{path}: no {'successful ' if successful_only else ''}episodes to train on")
            n_eps += taken
        if env is None:
            raise DatasetError("no demo datasets given (--demos)")
        return cls(np.concatenate(images), np.concatenate(states).astype(np.float32), np.concatenate(instrs),
                   np.concatenate(chunks).astype(np.float32), env, n_eps, env_options, list(options_by_id),
                   options_by_id)


def expand_dataset_dirs(paths: Sequence[str | Path]) -> list[Path]:
    """Each path as is, except a directory without a dataset index whose subdirectories hold datasets (one per task,
    as `vla-rl collect --suite` writes them): those datasets, sorted by name."""
    expanded = []
    for path in map(Path, paths):
        inner = sorted(p.parent for p in path.glob(f"*/{INDEX}")) if path.is_dir() and not (path / INDEX).exists() else []
        expanded.extend(inner or [path])
    return expanded


def random_shift(images: np.ndarray, pad: int, rng: np.random.Generator) -> np.ndarray:
    """DrQ's augmentation: replicate-pad by `pad` pixels, crop back at a random offset per image.

    Small translations stop a from-scratch vision tower from memorising pixel positions of the few
    demo scenes (without it, BC fits the training seeds and fails on new ones).
    """
    if pad <= 0:
        return images
    b, h, w, _ = images.shape
    padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="edge")
    dy, dx = rng.integers(0, 2 * pad + 1, b), rng.integers(0, 2 * pad + 1, b)
    return np.stack([padded[i, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(b)])
