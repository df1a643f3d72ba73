"""Demonstration datasets: a versioned, validated, append-only on-disk format.

Layout (format "vla-rl-demos", version 1)::

    DIR/dataset.json          index: format, version, env facts, one entry per episode, collections
    DIR/episodes/000000.npz   one compressed NumPy archive per episode (lossless frames)

Arrays of an episode of T steps (observations include the final one, so they have T + 1 rows):

    image        uint8   (T+1, H, W, 3)   camera frames o_0 .. o_T
    state        float32 (T+1, S)         proprioception
    instruction  int64   (L,)             instruction ids (see envs.instruction)
    action       float32 (T, D)           continuous actions in [-1, 1] taken at o_0 .. o_{T-1}
    reward       float32 (T,)             environment reward of each step (dense ground truth)
    success      bool    (T+1,)           task success at each observation (privileged)
    progress     float32 (T+1,)           task progress in [0, 1] at each observation (privileged)

Each index entry carries the file's sha256, so a corrupt or truncated file is reported by name.
Every write is atomic (episode file first, then the index): a crash leaves at most an unindexed
file, which is ignored and overwritten by the next append. A writer with `index_every_s` > 0 rewrites the
index at most that often (and at `flush`): rewriting it after every episode is quadratic in the dataset's size
(10,000 episodes: ~3 MB rewritten 10,000 times); a crash then loses at most that many seconds of episodes.
"""

from __future__ import annotations

import hashlib
import io
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vla_rl.base.atomic_io import atomic_write_bytes, atomic_write_json
from vla_rl.base.errors import VLARLError
from vla_rl.base.formats import read_checked_bytes, read_versioned_json

FORMAT = "vla-rl-demos"
VERSION = 1
INDEX = "dataset.json"
ARRAY_DTYPES = {
    "image": np.uint8,
    "state": np.float32,
    "instruction": np.int64,
    "action": np.float32,
    "reward": np.float32,
    "success": np.bool_,
    "progress": np.float32,
}
ENV_FIELDS = ("env_id", "action_dim", "state_dim", "image_shape", "instruction_length")
EPISODE_FIELDS = {"file": str, "length": int, "success": bool, "return": float, "instruction": str, "sha256": str}


def env_facts(env) -> dict[str, Any]:
    """The facts a dataset records about the env that wrote it (all appends must agree)."""
    return {
        "env_id": env.task_spec.id,
        "action_dim": int(env.action_space.shape[0]),
        "state_dim": int(env.observation_space["state"].shape[0]),
        "image_shape": list(env.observation_space["image"].shape),
        "instruction_length": int(env.observation_space["instruction"].shape[0]),
    }


class DatasetError(VLARLError):
    """A dataset is missing, corrupt or incompatible; the message names the file and the field."""


@dataclass
class Episode:
    image: np.ndarray
    state: np.ndarray
    instruction: np.ndarray
    action: np.ndarray
    reward: np.ndarray
    success: np.ndarray
    progress: np.ndarray
    instruction_text: str = ""
    seed: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def length(self) -> int:
        return int(self.action.shape[0])

    @property
    def succeeded(self) -> bool:
        return bool(self.success.any())

    def arrays(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in ARRAY_DTYPES}


def check_episode(arrays: dict[str, np.ndarray], env: dict[str, Any], where: str) -> None:
    """Raise DatasetError naming `where` and the field unless the arrays fit the env facts."""
    for name, dtype in ARRAY_DTYPES.items():
        if name not in arrays:
            raise DatasetError(f"{where}: missing array {name!r}")
        if arrays[name].dtype != dtype:
            raise DatasetError(f"{where}: field {name!r} has dtype {arrays[name].dtype}, expected {np.dtype(dtype)}")
    t = arrays["action"].shape[0]
    expected = {
        "image": (t + 1, *env["image_shape"]),
        "state": (t + 1, env["state_dim"]),
        "instruction": (env["instruction_length"],),
        "action": (t, env["action_dim"]),
        "reward": (t,),
        "success": (t + 1,),
        "progress": (t + 1,),
    }
    for name, shape in expected.items():
        if tuple(arrays[name].shape) != tuple(shape):
            raise DatasetError(f"{where}: field {name!r} has shape {arrays[name].shape}, expected {shape}")
    for name in ("state", "action", "reward", "progress"):
        if not np.all(np.isfinite(arrays[name])):
            raise DatasetError(f"{where}: field {name!r} contains NaN or inf")
    if t == 0:
        raise DatasetError(f"{where}: episode has no steps")


class DemoDataset:
    """Read-only view of a dataset directory; validates the index on open and each file on load."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        index_path = self.path / INDEX
        index = read_versioned_json(index_path, FORMAT, VERSION, DatasetError, f"is {self.path} a vla-rl demo dataset?")
        self.index = _validate_index(index, index_path)

    # --- facts ---------------------------------------------------------------------------------
    @property
    def env(self) -> dict[str, Any]:
        return {k: self.index[k] for k in ENV_FIELDS}

    @property
    def episodes(self) -> list[dict[str, Any]]:
        return self.index["episodes"]

    def __len__(self) -> int:
        return len(self.episodes)

    @property
    def num_steps(self) -> int:
        return sum(e["length"] for e in self.episodes)

    @property
    def success_rate(self) -> float:
        return float(np.mean([e["success"] for e in self.episodes])) if self.episodes else 0.0

    # --- data ----------------------------------------------------------------------------------
    def __getitem__(self, i: int) -> Episode:
        entry = self.episodes[i]
        file = self.path / entry["file"]
        data = read_checked_bytes(file, entry["sha256"], DatasetError, f"{self.path / INDEX} as episode {i}")
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
        except Exception as e:
            raise DatasetError(f"{file}: cannot be read as .npz ({e})") from e
        check_episode(arrays, self.env, str(file))
        if arrays["action"].shape[0] != entry["length"]:
            raise DatasetError(f"{file}: has {arrays['action'].shape[0]} steps but the index says length={entry['length']}")
        return Episode(**arrays, instruction_text=entry["instruction"], seed=entry.get("seed"), meta=entry)

    def __iter__(self) -> Iterator[Episode]:
        for i in range(len(self)):
            yield self[i]

    def verify(self) -> None:
        """Check every episode file against the sha256 in the index (cheap: no decompression)."""
        for i, entry in enumerate(self.episodes):
            read_checked_bytes(self.path / entry["file"], entry["sha256"], DatasetError, f"{self.path / INDEX} as episode {i}")


def check_appendable(dataset: DemoDataset, env: dict[str, Any]) -> None:
    """DatasetError naming the field unless episodes of an env with these facts (`env_facts`) may join `dataset`."""
    for k in ENV_FIELDS:
        have = list(env[k]) if isinstance(env[k], tuple) else env[k]
        if dataset.index[k] != have:
            raise DatasetError(
                f"{dataset.path / INDEX}: cannot append — field {k!r} is {dataset.index[k]!r} in the "
                f"dataset but {have!r} for this run; write to a new --out directory"
            )


class DemoWriter:
    """Creates a dataset or appends to an existing compatible one; each `add` is atomic."""

    def __init__(self, path: str | Path, env: dict[str, Any], index_every_s: float = 0.0):
        self.path = Path(path)
        self.index_every_s = index_every_s
        self._index_written = float("-inf")  # the first add writes it: the directory is a dataset at once
        self._unwritten = False
        env = {k: (list(v) if isinstance(v, tuple) else v) for k, v in env.items()}
        from vla_rl.base.outputs import DEMOS, existing_output

        if existing_output(self.path, DEMOS):
            existing = DemoDataset(self.path)
            existing.verify()  # never append to a dataset whose files are already corrupt
            self.index = existing.index
            check_appendable(existing, env)
        else:
            self.index = {"format": FORMAT, "version": VERSION, **{k: env[k] for k in ENV_FIELDS}, "episodes": [], "collections": []}

    def begin_collection(self, info: dict[str, Any]) -> None:
        """Record who wrote the next episodes (resolved config, time); saved with the next add."""
        self.index["collections"].append({**info, "first_episode": len(self.index["episodes"])})

    def add(self, episode: Episode, extra: dict[str, Any] | None = None) -> None:
        arrays = episode.arrays()
        number = len(self.index["episodes"])
        rel = f"episodes/{number:06d}.npz"
        check_episode(arrays, self.index, f"{self.path / rel} (episode being written)")
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        data = buf.getvalue()
        atomic_write_bytes(self.path / rel, data)
        self.index["episodes"].append(
            {
                "file": rel,
                "length": episode.length,
                "success": episode.succeeded,
                "return": float(episode.reward.sum()),
                "instruction": episode.instruction_text,
                "seed": episode.seed,
                "sha256": hashlib.sha256(data).hexdigest(),
                **(extra or {}),
            }
        )
        self._unwritten = True
        if time.monotonic() - self._index_written >= self.index_every_s:
            self.flush()

    def flush(self) -> None:
        """Write the index if episodes were added since it was last written."""
        if self._unwritten:
            atomic_write_json(self.path / INDEX, self.index)
            self._index_written, self._unwritten = time.monotonic(), False


def _validate_index(index: dict[str, Any], where: Path) -> dict[str, Any]:
    """Field checks after the format/version header (vla_rl.base.formats.read_versioned_json)."""
    for k, typ in (("env_id", str), ("action_dim", int), ("state_dim", int), ("image_shape", list),
                   ("instruction_length", int), ("episodes", list), ("collections", list)):
        if not isinstance(index.get(k), typ):
            raise DatasetError(f"{where}: field {k!r} is missing or not a {typ.__name__} (got {index.get(k)!r})")
    for i, entry in enumerate(index["episodes"]):
        for k, typ in EPISODE_FIELDS.items():
            value = entry.get(k) if isinstance(entry, dict) else None
            if typ is float and isinstance(value, int) and not isinstance(value, bool):
                continue
            if not isinstance(value, typ):
                raise DatasetError(f"{where}: field 'episodes[{i}].{k}' is missing or not a {typ.__name__} (got {value!r})")
    return index
