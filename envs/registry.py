"""Every task id, the `make_env` / `make_vector_env` factories, and gymnasium registration."""

from __future__ import annotations

import difflib
from functools import lru_cache

import gymnasium as gym

from envs.metaworld_backend import metaworld_specs
from envs.options import EnvOptions
from envs.spec import TaskSpec
from envs.tabletop.tasks import tabletop_specs
from envs.wrapper import VLAEnv


@lru_cache(maxsize=1)
def _specs() -> dict[str, TaskSpec]:
    return {s.id: s for s in tabletop_specs() + metaworld_specs()}


def list_specs() -> list[TaskSpec]:
    return list(_specs().values())


def get_spec(env_id: str) -> TaskSpec:
    """Look up a task by project id ("metaworld/drawer-open") or gymnasium id ("vla_rl/metaworld.drawer-open")."""
    key = env_id
    if key.startswith("vla_rl/"):
        key = key[len("vla_rl/") :].replace(".", "/", 1)
    specs = _specs()
    if key not in specs:
        close = difflib.get_close_matches(key, specs, n=3)
        hint = f"; did you mean {close}?" if close else ""
        raise KeyError(f"unknown env id {env_id!r}{hint} (run `vla-rl envs` to list all {len(specs)} ids)")
    return specs[key]


def make_env(env_id: str, options: EnvOptions | None = None, render_mode: str | None = "rgb_array") -> VLAEnv:
    """Build one task with the observation contract of DESIGN.md."""
    spec = get_spec(env_id)
    options = options or EnvOptions()
    options.validate()
    if spec.family == "metaworld":
        from envs.metaworld_backend import MetaWorldBackend

        backend = MetaWorldBackend(spec, options.image_size, options.camera)
    else:
        from envs.tabletop.tasks import make_tabletop_backend

        backend = make_tabletop_backend(spec, options.image_size, options.camera)
    return VLAEnv(backend, options, render_mode=render_mode)


def make_vector_env(
    env_id: str, num_envs: int, options: EnvOptions | None = None, asynchronous: bool = False
) -> gym.vector.VectorEnv:
    """`num_envs` copies in one gymnasium vector env (subprocesses when `asynchronous`)."""
    if num_envs < 1:
        raise ValueError(f"num_envs must be >= 1, got {num_envs}")
    get_spec(env_id)  # fail fast in the parent process
    options = options or EnvOptions()
    fns = [lambda: make_env(env_id, options) for _ in range(num_envs)]
    if asynchronous:
        return gym.vector.AsyncVectorEnv(fns, context="spawn")
    return gym.vector.SyncVectorEnv(fns)


def _gym_entry_point(task_id: str, **kwargs) -> VLAEnv:
    render_mode = kwargs.pop("render_mode", "rgb_array")
    return make_env(task_id, EnvOptions(**kwargs), render_mode=render_mode)


def register_gym_envs() -> None:
    """Register every task as `vla_rl/<family>.<task>`; kwargs of gym.make are EnvOptions fields."""
    for spec in list_specs():
        if spec.gym_id in gym.registry:
            continue
        gym.register(
            id=spec.gym_id,
            entry_point=_gym_entry_point,
            kwargs={"task_id": spec.id},
            disable_env_checker=True,
        )
