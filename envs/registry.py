"""Every task id, the `make_env` / `make_vector_env` factories, and gymnasium registration."""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
from importlib.metadata import entry_points

import gymnasium as gym

from envs.family import EnvFamily
from envs.options import EnvOptions
from envs.spec import TaskSpec
from envs.wrapper import VLAEnv

ENTRY_POINT_GROUP = "vla_rl.env_families"  # a package's `EnvFamily` objects, registered when `envs` is imported
_FAMILIES: dict[str, EnvFamily] = {}
_SPECS: dict[str, TaskSpec] = {}
CORE_FAMILIES = ("tabletop", "metaworld")  # registered on every install (the default VLA's tokenizer reads these)
# Families behind an optional extra: registered only when the extra is installed (see _register_builtin_families).
OPTIONAL_FAMILIES = {"libero": 'pip install -e ".[libero]"'}


def register_family(family: EnvFamily) -> None:
    """Add a family's tasks to every list, factory and `gym.make` id. A name or task id taken already is refused."""
    if family.name in _FAMILIES:
        raise ValueError(f"env family {family.name!r} is registered already")
    specs = list(family.specs())
    family.check_specs(specs)
    taken = sorted(s.id for s in specs if s.id in _SPECS)
    if taken:
        raise ValueError(f"env family {family.name!r}: task ids {taken} are registered already")
    _FAMILIES[family.name] = family
    _SPECS.update({s.id: s for s in specs})
    register_gym_envs()


def get_family(name: str) -> EnvFamily:
    if name not in _FAMILIES:
        raise KeyError(f"unknown env family {name!r}: registered are {family_names()}")
    return _FAMILIES[name]


def family_names() -> list[str]:
    return list(_FAMILIES)


def list_specs() -> list[TaskSpec]:
    return list(_SPECS.values())


def get_spec(env_id: str) -> TaskSpec:
    """Look up a task by project id ("metaworld/drawer-open") or gymnasium id ("vla_rl/metaworld.drawer-open")."""
    key = env_id
    if key.startswith("vla_rl/"):  # "vla_rl/libero.object.<task>": the family's and the suite's "/" became "."
        key = next((s.id for s in _SPECS.values() if s.gym_id == env_id), key[len("vla_rl/") :].replace(".", "/", 1))
    if key not in _SPECS:
        family = key.split("/", 1)[0]
        if family in OPTIONAL_FAMILIES and family not in _FAMILIES:
            raise KeyError(f"env id {env_id!r} is a task of the optional family {family!r}, which is not installed: "
                           f"{OPTIONAL_FAMILIES[family]}")
        raise KeyError(f"unknown env id {env_id!r}{_close_ids(key)} (run `vla-rl envs` to list all {len(_SPECS)} ids)")
    return _SPECS[key]


def _close_ids(key: str) -> str:
    """"; did you mean [...]?" for an unknown id, or "" when nothing is close."""
    close = difflib.get_close_matches(key, _SPECS, n=3)
    if close:
        return f"; did you mean {close}?"
    head = key.rsplit("/", 1)[0] + "/"  # a short or garbled task name: compare within its prefix ("libero/object/")
    same = [i for i in _SPECS if i.startswith(head)]
    if same:
        close = difflib.get_close_matches(key, same, n=3, cutoff=0.3)
        return f"; did you mean {close}?" if close else ""
    heads = sorted({i.rsplit("/", 1)[0] + "/" for i in _SPECS if "/" in i.split("/", 1)[1]})  # e.g. an unknown suite
    near = difflib.get_close_matches(head, heads, n=3)
    return f"; no ids start with {head!r}, did you mean one under {near}?" if near else ""


def resolve_options(env_id: str, options: EnvOptions | None = None) -> EnvOptions:
    """The options with the task family's defaults filled in where they are left at 0 (instruction_length)."""
    options = options or EnvOptions()
    if options.instruction_length:
        return options
    return dataclasses.replace(options, instruction_length=_FAMILIES[get_spec(env_id).family].instruction_length)


def make_env(env_id: str, options: EnvOptions | None = None, render_mode: str | None = "rgb_array") -> VLAEnv:
    """Build one task with the observation contract of DESIGN.md."""
    spec = get_spec(env_id)
    options = resolve_options(env_id, options)
    options.validate()
    backend = _FAMILIES[spec.family].make_backend(spec, options.image_size, options.camera)
    try:
        return VLAEnv(backend, options, render_mode=render_mode)
    except BaseException:  # e.g. an instruction longer than options.instruction_length: free the simulator
        backend.close()
        raise


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


def _make_metaworld_backend(spec: TaskSpec, image_size: int, camera: str):
    from envs.metaworld_backend import MetaWorldBackend  # imports metaworld only when a task is built

    return MetaWorldBackend(spec, image_size, camera)


def _register_builtin_families() -> None:
    from envs.metaworld_backend import metaworld_specs
    from envs.tabletop.tasks import make_tabletop_backend, tabletop_specs

    register_family(EnvFamily("tabletop", tabletop_specs, make_tabletop_backend, reward_max=1.0))
    # Meta-World's v2 dense reward lies in [0, 10] per step.
    register_family(EnvFamily("metaworld", metaworld_specs, _make_metaworld_backend, reward_max=10.0))
    # LIBERO only with its extra installed: otherwise its 130 ids (and their instructions, which also train the default
    # VLA's tokenizer) would be listed for tasks that cannot be built. envs.libero_backend imports LIBERO lazily.
    if importlib.util.find_spec("libero") is not None:
        from envs.libero_backend import libero_specs, make_libero_backend
        from envs.libero_expert import libero_expert

        # The dense reward is the task's progress, in [0, 1]. The expert covers the object and spatial suites. The
        # longest instruction (a spatial task's) is 88 bytes.
        register_family(EnvFamily("libero", libero_specs, make_libero_backend, reward_max=1.0, expert=libero_expert,
                                  instruction_length=96))


def register_entry_point_families() -> None:
    """Register every `EnvFamily` that an installed package names under the `vla_rl.env_families` entry point."""
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in _FAMILIES:
            continue
        family = ep.load()
        if not isinstance(family, EnvFamily):
            raise TypeError(f"entry point {ep.value!r} ({ENTRY_POINT_GROUP}) is a {type(family).__name__}, "
                            "not an envs.EnvFamily")
        register_family(family)


_register_builtin_families()
