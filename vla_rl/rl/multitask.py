"""Multi-task RL (`vla-rl train --suite NAME` / `--envs '[id,...]'`): one language-conditioned policy, the envs of every
runner spread over several tasks.

Task assignment (deterministic; `task_of_slot`): the run's env slots are numbered across runners,
slot = (runner − 1) × envs_per_runner + i for the i-th env of runner 1, 2, ... (the driver's runner, index 0, when
`env_runners` is 0, counts as runner 1), and slot k holds task `tasks[(k // group_size) mod T]`: round-robin over the
tasks in their order, one env at a time — or one group of `group_size` envs at a time, so that every group of
group-relative advantages (`queue_group_seeds` groups consecutive envs) lies within one task. With 8 envs per runner
and 2 tasks, each runner holds 4 + 4; with 3 tasks, runner 1 holds 3/3/2 of tasks 1/2/3 and runner 2 continues where
runner 1 stopped (3/3/2 of tasks 3/1/2), so that several runners together cover more tasks than one runner holds envs.
Every task needs at least one slot (`check_runs_every_task`).

Episode seeds are drawn exactly as in a single-task run (`env_seed` of the run's seed, the runner and the env's
creation order). Each env reports its task in `info["task"]` (`TASK`), from which `episode_stats` counts success per
task. Which runner env is which slot: RLlib builds a runner's vector env by calling the env creator once per env, in
order, so the creator counts its calls per runner (`slot_position`).
"""

from __future__ import annotations

import itertools
from collections import defaultdict

import gymnasium as gym

from envs import EnvOptions

TASK = "task"  # info key (reset and step) of a multi-task env: its env id

_positions: dict[tuple, itertools.count] = defaultdict(itertools.count)  # env creator calls per (runner, settings)


class TaskLabel(gym.Wrapper):
    """Report the env's task (env id) in every info under `TASK`; `task` is also an attribute."""

    def __init__(self, env: gym.Env, task: str):
        super().__init__(env)
        self.task = task

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        return obs, {**info, TASK: self.task}

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, reward, terminated, truncated, {**info, TASK: self.task}


def task_of_slot(tasks: list[str] | tuple[str, ...], worker_index: int, env_index: int, envs_per_runner: int,
                 group_size: int = 1) -> str:
    """The task of env `env_index` of runner `worker_index` (see the module docstring)."""
    slot = (max(int(worker_index), 1) - 1) * int(envs_per_runner) + int(env_index)
    return tasks[(slot // max(1, int(group_size))) % len(tasks)]


def task_assignment(tasks: list[str] | tuple[str, ...], env_runners: int, envs_per_runner: int,
                    group_size: int = 1) -> list[list[str]]:
    """Every runner's envs' tasks, in env order (one list per runner; one runner when env_runners is 0)."""
    return [[task_of_slot(tasks, w, i, envs_per_runner, group_size) for i in range(envs_per_runner)]
            for w in range(1, max(1, int(env_runners)) + 1)]


def slot_position(key: tuple, envs_per_runner: int) -> int:
    """The index in its runner's vector env of the env being created now: the creator's calls for this runner and
    these settings, modulo envs_per_runner (a rebuilt vector env in the same process starts over at 0)."""
    return next(_positions[key]) % int(envs_per_runner)


def runner_tasks(vector_env) -> list[str]:
    """The task of each sub-env of an EnvRunner's vector env, in env order."""
    from vla_rl.rl.env import sub_envs

    return [e.get_wrapper_attr("task") for e in sub_envs(vector_env)]


def check_runs_every_task(tasks: list[str], env_runners: int, envs_per_runner: int, group_size: int) -> None:
    """Every task gets an env slot; else one ConfigError naming the sizes."""
    from vla_rl.base.errors import ConfigError

    runners = max(1, int(env_runners))
    slots = runners * int(envs_per_runner) // max(1, int(group_size))
    if slots < len(tasks):
        unit = ("env group" if group_size > 1 else "env") + ("" if slots == 1 else "s")
        raise ConfigError(f"{len(tasks)} tasks but only {slots} {unit} per iteration (env_runners x envs_per_runner"
                          f"{' / group_size' if group_size > 1 else ''} = {runners} x {envs_per_runner}"
                          f"{f' / {group_size}' if group_size > 1 else ''}): each task needs at least one — raise "
                          "--envs_per_runner or --env_runners, or train on fewer tasks")


def check_tasks_batch_together(tasks: list[str], options, privileged: bool) -> None:
    """The tasks' observations batch in one vector env: the same state size, the same instruction length (with
    `instruction_length: 0` each task family fills in its own), and with the privileged critic the same
    privileged-state size (read from one env of each task). One ConfigError naming the first task that differs."""
    from envs import get_spec, make_env, resolve_options
    from vla_rl.base.errors import ConfigError

    first = get_spec(tasks[0])
    lengths = {env_id: resolve_options(env_id, options).instruction_length for env_id in tasks}
    for env_id in tasks[1:]:
        spec = get_spec(env_id)
        if spec.state_dim != first.state_dim:
            raise ConfigError(f"env {env_id} has a {spec.state_dim}-D state, env {tasks[0]} a {first.state_dim}-D one:"
                              " the tasks of one run must share the state size (their observations are batched)")
        if lengths[env_id] != lengths[tasks[0]]:
            raise ConfigError(f"env_options.instruction_length={options.instruction_length}: env {env_id} gets "
                              f"{lengths[env_id]}-byte instructions, env {tasks[0]} {lengths[tasks[0]]}-byte ones (their "
                              "families' defaults) — the tasks of one run share one length: set "
                              f"--env_options.instruction_length {max(lengths.values())}")
    if not privileged:
        return
    dims = {}
    for env_id in tasks:
        env = make_env(env_id, options)
        try:
            dims[env_id] = int(env.get_wrapper_attr("backend").privileged_dim)
        finally:
            env.close()
        if dims[env_id] != dims[tasks[0]]:
            raise ConfigError(f"critic=privileged: env {env_id} has a {dims[env_id]}-D privileged state, env "
                              f"{tasks[0]} a {dims[tasks[0]]}-D one — the privileged critic needs one size on every "
                              "task: use --critic vla, or train tasks whose simulator states match")


def assignment_text(tasks: list[str], env_runners: int, envs_per_runner: int, group_size: int) -> str:
    """'task x count, ...' over every runner's envs (for the run's first line)."""
    counts: dict[str, int] = dict.fromkeys(tasks, 0)
    for row in task_assignment(tasks, env_runners, envs_per_runner, group_size):
        for t in row:
            counts[t] += 1
    return ", ".join(f"{t} x{n}" for t, n in counts.items())


def per_task_stats(started: list[tuple[str, bool | None]]) -> dict[str, float]:
    """Rollout metrics per task from each env's first episode of the iteration, as (task, success) with success None
    for an episode cut by the rollout boundary: `episodes/<task>` (finished first episodes), `success_rate/<task>`
    (where one finished), and with Meta-World difficulty groups `group_success_rate/<group>` (the mean of its tasks'
    rates; only when every task of the group has one, so that a group's value always averages the same tasks)."""
    from envs import task_groups

    finished: dict[str, list[bool]] = {}
    for task, success in started:
        finished.setdefault(task, [])
        if success is not None:
            finished[task].append(bool(success))
    out = {f"episodes/{t}": float(len(s)) for t, s in finished.items()}
    rates = {t: sum(s) / len(s) for t, s in finished.items() if s}
    out.update({f"success_rate/{t}": r for t, r in rates.items()})
    for group, ids in task_groups(list(finished)).items():
        if all(t in rates for t in ids):
            out[f"group_success_rate/{group}"] = sum(rates[t] for t in ids) / len(ids)
    return out


def resolve_train_tasks(cfg, policy) -> tuple[list[str], EnvOptions]:
    """The tasks of a TrainConfig's --suite / --envs and the env options they run with (the policy's training options
    unless given), every task checked against the policy as `vla-rl eval --suite` checks it (action, state and image
    size, instruction length) and the tasks against each other (`check_tasks_batch_together`)."""
    from envs import resolve_env_ids
    from vla_rl.evaluation import training_options
    from vla_rl.suite_evaluation import check_suite_fits, per_env_options

    tasks = resolve_env_ids(cfg.suite, cfg.envs)
    options = training_options(cfg.env_options, policy, cfg.policy)
    check_suite_fits(policy, tasks, per_env_options(tasks, options))
    check_tasks_batch_together(tasks, options, cfg.critic == "privileged")
    return tasks, options
