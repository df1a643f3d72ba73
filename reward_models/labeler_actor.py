"""The online loop's labeler client: one labeler as a Ray actor (restarted if it dies, asked asynchronously), or
in process for unit tests. Both expose `submit(pairs, seed) -> handle`, `wait(handle, timeout)`, `result(handle)`
(the LabelResults, or a string naming why the whole round failed), `restarts` and `name`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from reward_models.config import LabelerOptions
from reward_models.labelers.base import LabelResult
from reward_models.pairs import Pair


class LabelerActor:
    """Holds one labeler; `label(pairs, seed)` reseeds a scripted teacher so every round is reproducible."""

    def __init__(self, opts: dict[str, Any], cache_dir: str):
        import threading

        from reward_models.labelers import make_labeler

        self.opts = LabelerOptions(**opts)
        self.labeler = make_labeler(self.opts, cache_dir, show_progress=False)
        self.name = self.labeler.name
        self._lock = threading.Lock()  # the actor is threaded (so pid() answers while a round runs)

    def label(self, pairs: list[Pair], seed: int) -> list[LabelResult]:
        from reward_models.labelers import ScriptedLabeler

        if isinstance(self.labeler, ScriptedLabeler):  # its own noise stream per round: reproducible
            return ScriptedLabeler(self.opts.teacher, seed=seed).label(pairs)
        if self.opts.labeler == "openai":  # thread-safe; concurrent rounds share its request pool
            return self.labeler.label(pairs)
        with self._lock:
            return self.labeler.label(pairs)

    def pid(self) -> int:
        return os.getpid()


def labeler_name(opts: LabelerOptions) -> str:
    if opts.labeler == "scripted":
        return f"scripted:{opts.teacher}"
    return f"{opts.labeler}:{opts.vlm_model}" if opts.labeler in ("hf", "openai") else opts.labeler


def _labeler_fields(opts: LabelerOptions) -> dict[str, Any]:
    import dataclasses

    return {f.name: getattr(opts, f.name) for f in dataclasses.fields(LabelerOptions)}


class LocalLabelers:
    """Answers at once, in this process (unit tests, and `label_lag` semantics without Ray)."""

    def __init__(self, opts: LabelerOptions, cache_dir: str | Path):
        self.actor = LabelerActor(_labeler_fields(opts), str(cache_dir))
        self.name, self.restarts = labeler_name(opts), 0

    def submit(self, pairs, seed):
        try:
            return ("done", self.actor.label(pairs, seed))
        except Exception as e:  # noqa: BLE001 - a failed round keeps its pairs for the next one
            return ("failed", f"{type(e).__name__}: {e}")

    def wait(self, handle, timeout: float) -> bool:
        return True

    def result(self, handle) -> list[LabelResult] | str:
        return handle[1]

    def close(self) -> None:
        pass


class RayLabelers:
    """The labeler as a Ray actor, restarted if it dies; a task lost with it is retried on the new one."""

    def __init__(self, opts: LabelerOptions, cache_dir: str | Path):
        import ray

        self._ray = ray
        cls = ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1, max_concurrency=4)(LabelerActor)
        self.actor = cls.remote(_labeler_fields(opts), str(cache_dir))
        self._pid = None
        self.name, self.restarts = labeler_name(opts), 0

    def submit(self, pairs, seed):
        self._check_restart()
        return self.actor.label.remote(pairs, seed)

    def wait(self, handle, timeout: float) -> bool:
        ready, _ = self._ray.wait([handle], timeout=timeout)
        return bool(ready)

    def result(self, handle) -> list[LabelResult] | str:
        try:
            return self._ray.get(handle)
        except Exception as e:  # noqa: BLE001 - the labeler raised: the pairs stay pending
            return f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"

    def _check_restart(self) -> None:
        try:
            pid = self._ray.get(self.actor.pid.remote(), timeout=60)
        except Exception:  # noqa: BLE001 - counted as a restart; the next call goes to the new actor
            pid = -1
        if self._pid is not None and pid != self._pid:
            self.restarts += 1
        self._pid = pid

    def close(self) -> None:
        self._ray.kill(self.actor)
