"""Gymnasium MuJoCo tasks with the vla-rl observation contract, scripted experts and demo data.

Public API::

    from envs import make_env, make_vector_env, list_specs, get_spec, EnvOptions
    from envs import ScriptedExpert, has_scripted_expert, DemoDataset, DemoWriter, check_appendable
    from envs import EnvFamily, register_family    # more simulators (docs/environments.md)
    from envs import get_suite, suite_names         # named suites: metaworld/mt10, metaworld/mt50, libero/<suite>
    from envs import metaworld_group, task_groups   # Meta-World difficulty groups (easy, medium, hard, very_hard)

Every task is also a gymnasium env: ``gym.make("vla_rl/metaworld.drawer-open")`` (gymnasium ids
allow one "/", so the family separator becomes "."). Importing `envs` registers them.
"""

import os

# Headless MuJoCo rendering unless the user chose a backend — before anything imports mujoco, so that
# Ray actors (which import `envs` when they unpickle an env creator) render too.
os.environ.setdefault("MUJOCO_GL", "egl")

from envs.backend import TaskBackend, TaskStatus  # noqa: E402
from envs.chunking import ActionChunkWrapper  # noqa: E402
from envs.demos import DatasetError, DemoDataset, DemoWriter, Episode, check_appendable, env_facts
from envs.experts import ScriptedExpert, has_scripted_expert
from envs.family import EnvFamily
from envs.instruction import decode_instruction, encode_instruction
from envs.options import EnvOptions
from envs.registry import (
    CORE_FAMILIES,
    family_names,
    get_family,
    get_spec,
    list_specs,
    make_env,
    make_vector_env,
    register_entry_point_families,
    register_family,
    register_gym_envs,
    resolve_options,
)
from envs.spec import TaskSpec
from envs.suites import (
    METAWORLD_DIFFICULTY,
    METAWORLD_MT10,
    Suite,
    get_suite,
    metaworld_group,
    resolve_env_ids,
    suite_names,
    task_groups,
)
from envs.wrapper import PRIVILEGED_INFO_KEYS, VLAEnv

register_entry_point_families()

__all__ = [
    "METAWORLD_DIFFICULTY",
    "METAWORLD_MT10",
    "PRIVILEGED_INFO_KEYS",
    "ActionChunkWrapper",
    "DatasetError",
    "DemoDataset",
    "DemoWriter",
    "EnvFamily",
    "EnvOptions",
    "Episode",
    "ScriptedExpert",
    "Suite",
    "TaskBackend",
    "TaskSpec",
    "TaskStatus",
    "CORE_FAMILIES",
    "VLAEnv",
    "check_appendable",
    "decode_instruction",
    "encode_instruction",
    "env_facts",
    "family_names",
    "get_family",
    "get_spec",
    "get_suite",
    "has_scripted_expert",
    "list_specs",
    "make_env",
    "make_vector_env",
    "metaworld_group",
    "register_entry_point_families",
    "register_family",
    "register_gym_envs",
    "resolve_env_ids",
    "resolve_options",
    "suite_names",
    "task_groups",
]
