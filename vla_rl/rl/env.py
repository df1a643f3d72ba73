"""The env an RLlib EnvRunner steps: a project task whose actions are the policy's bins.

Stack (inside out): `VLAEnv` → `RLRewardWrapper` (the reward RL optimises) → `ActionChunkWrapper`
(K actions per decision, as `envs/chunking.py`; only the chunk's last frame is rendered) → `BinActionWrapper` (MultiDiscrete([256]·K·D) →
the (K, D) chunk through the policy's own action tokenizer) → `PrivilegedObservation` (only with the
asymmetric critic: adds the simulator's state under `privileged`). The observation is otherwise the
project's Dict contract, unchanged.

Reward semantics (`reward`):
    dense   the task's shaped reward as is. With `terminate_on_success` it punishes success on
            Meta-World: a near-miss that hovers for the whole episode collects more (up to ~574
            on drawer-open) than a success that ends the episode early (~330).
    sparse  1 on the step that succeeds, else 0.
    shaped  (default) dense / (reward_max · action_repeat · T) per step, plus 1 at success: a
            failure returns at most 1 and a success at least 1, more than any failure, while
            the shaping still guides. T = the episode length in env steps; reward_max = the
            family's per-step maximum (10 on Meta-World, 1 on the tabletop tasks).
Episode end (`bootstrap_time_limit`): by default the episode's time limit ends the task — the step
that reaches it is reported `terminated` (info `time_limit` = True), so GAE does not bootstrap
V(s_T) there. The task is finite-horizon (success within T steps) and the observation does not
show the time left; bootstrapping a value that cannot know the clock, with gamma 1, has no anchor:
the targets of every timed-out failure become "its return + V(s_T)", V drifts up on its own
targets, and once V(s_T) exceeds a success's return (about 1 + shaping), failing looks better
than succeeding (measured: value mean 0.3 -> 1.5 in 50 iterations of drawer-open while the
rollout return fell 0.8 -> 0.2). CleanRL does the same (`done = terminated or truncated`).
`bootstrap_time_limit=True` keeps the truncation (bootstrap V(s_T), Pardo et al. 2018) for a
task whose time limit is only a cut of an endless one. A chunk cut at the rollout boundary is
always bootstrapped: that episode really goes on.
The env's own reward and success stay in `info` (`gt_reward`, `success`, and the episode's running
`episode_env_return` / `episode_env_steps`) for audit.

Episodes are seeded by the env's own generator (seed, runner index and creation order), not by
RLlib's reset seed, so every iteration sees fresh initial states and a checkpoint can restore
exactly where each env's sequence of seeds stands (`seed_state` / `set_seed_state`). With
`group_size` > 1, each iteration's first episodes start in groups from shared initial states
(`queue_group_seeds`), for group-relative advantages.

With several tasks (`RLEnvSettings.tasks`), each env of a runner runs one of them, assigned deterministically by its
slot (`vla_rl.rl.multitask`), and reports it in `info["task"]`; seeds are drawn exactly as with one task.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from envs import ActionChunkWrapper, EnvOptions, get_family, get_spec, make_env
from envs.errors import ActionError

REWARDS = ("shaped", "sparse", "dense")
_created = itertools.count()  # creation order of envs in this process (RLlib's SyncVectorEnv gives no index)


class RLRewardWrapper(gym.Wrapper):
    """Replace the env's reward with the RL reward of `mode`, and report the time limit as the task's end
    unless `bootstrap_time_limit` (see the module docstring)."""

    def __init__(self, env: gym.Env, mode: str, reward_max: float, bootstrap_time_limit: bool = False):
        super().__init__(env)
        self.bootstrap_time_limit = bool(bootstrap_time_limit)
        if mode not in REWARDS:
            raise ValueError(f"reward={mode!r}: choose one of {list(REWARDS)}")
        self.mode = mode
        self.horizon = float(reward_max * env.get_wrapper_attr("options").action_repeat
                             * env.get_wrapper_attr("max_episode_steps"))
        self.env_return, self.env_steps = 0.0, 0

    def reset(self, **kwargs):
        self.env_return, self.env_steps = 0.0, 0
        return self.env.reset(**kwargs)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        success = bool(info.get("success", False))
        gt = float(info.get("gt_reward", reward))
        self.env_return += gt
        self.env_steps += 1
        info = dict(info, episode_env_return=self.env_return, episode_env_steps=self.env_steps)
        if self.mode == "sparse":
            reward = float(success)
        elif self.mode == "shaped":
            reward = gt / self.horizon + float(success)
        if truncated and not terminated and not self.bootstrap_time_limit:
            terminated, truncated = True, False
            info["time_limit"] = True
        return obs, float(reward), terminated, truncated, info


class BinActionWrapper(gym.ActionWrapper):
    """Actions are bin indices (K·D,) in [0, n_bins); the wrapped env gets bin-centre (K, D) chunks."""

    def __init__(self, env: gym.Env, tokenizer, chunk_size: int):
        super().__init__(env)
        self.tokenizer = tokenizer
        self.chunk = (chunk_size, tokenizer.action_dim)
        self.action_space = gym.spaces.MultiDiscrete([tokenizer.n_bins] * (chunk_size * tokenizer.action_dim))

    def action(self, bins):
        bins = np.asarray(bins)
        if bins.shape != self.action_space.shape:
            raise ActionError(f"action has shape {bins.shape}; the policy's env expects {self.action_space.shape} "
                              f"bins (chunk {self.chunk[0]} x {self.chunk[1]} dims)")
        if bins.min() < 0 or bins.max() >= self.tokenizer.n_bins:
            raise ActionError(f"action bins must lie in [0, {self.tokenizer.n_bins}), got {bins.tolist()}")
        return self.tokenizer.from_bins(bins.reshape(self.chunk))


PRIVILEGED = "privileged"  # observation key of the simulator's state, for the asymmetric critic only


class PrivilegedObservation(gym.ObservationWrapper):
    """Add the simulator's full state (`TaskBackend.privileged_state()`) and the fraction of the episode's time left
    as observation key `privileged`.

    For the asymmetric critic (`critic: privileged`; Pinto et al. 2018, "Asymmetric Actor Critic"): the value
    function may read what the policy cannot — legitimate in simulation because the critic never acts and is
    dropped at deployment. The time left is there because the time limit ends the task (see `RLRewardWrapper`):
    the same state is worth less with fewer steps left, and a critic without the clock cannot know it (Pardo et al.
    2018, "Time Limits in Reinforcement Learning"). The policy ignores the key (it reads image, state and
    instruction only). Outermost in the stack, so it reads the state after a whole action chunk."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.backend = env.get_wrapper_attr("backend")
        self.horizon = float(env.get_wrapper_attr("max_episode_steps"))
        spaces = dict(env.observation_space.spaces)
        spaces[PRIVILEGED] = gym.spaces.Box(-np.inf, np.inf, (self.backend.privileged_dim + 1,), np.float32)
        self.observation_space = gym.spaces.Dict(spaces)

    def observation(self, observation):
        time_left = 1.0 - self.env.get_wrapper_attr("elapsed_steps") / self.horizon
        state = np.append(self.backend.privileged_state(), np.float32(time_left)).astype(np.float32)
        return {**observation, PRIVILEGED: state}


GROUP_SEED = "group_seed"  # reset-info key: the shared initial-state seed of a group episode (-1: not in a group)
FIRST_EPISODE = "first_episode"  # reset-info key: True on each env's first episode after `mark_first_episodes`


class SeededEpisodes(gym.Wrapper):
    """Draw each episode's reset seed from this env's own generator (RLlib's reset seed is ignored).

    `queue_seed(s)` makes the next reset use `s` instead (without drawing): group-relative advantages
    start several envs from one initial state; the reset info then carries `group_seed` = s.
    `mark_first()` flags the next reset's info with `first_episode` = True (every later one: False), so that
    an iteration's success rate can count each env's first episode only (see `episode_stats`).
    """

    def __init__(self, env: gym.Env, seed: int):
        super().__init__(env)
        self.rng = np.random.default_rng(seed)
        self.queued: int | None = None
        self.first_pending = False

    def draw_seed(self) -> int:
        return int(self.rng.integers(0, 2**31 - 1))

    def queue_seed(self, seed: int) -> None:
        self.queued = int(seed)

    def mark_first(self) -> None:
        self.first_pending = True

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        queued, self.queued = self.queued, None
        first, self.first_pending = self.first_pending, False
        obs, info = self.env.reset(seed=self.draw_seed() if queued is None else queued, options=options)
        return obs, {**info, GROUP_SEED: -1 if queued is None else queued, FIRST_EPISODE: first}

    def seed_state(self) -> dict:
        return self.rng.bit_generator.state

    def set_seed_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state


def env_seed(base: int, worker_index: int, env_index: int) -> int:
    """Distinct, reproducible seed streams per (runner, env); runner 0 is the driver's local runner."""
    return int(base) * 1_000_003 + int(worker_index) * 1009 + int(env_index)


def build_rl_env(env_id: str, options: EnvOptions, tokenizer, chunk_size: int, reward: str, seed: int,
                 bootstrap_time_limit: bool = False, render_inner_steps: bool = False,
                 privileged_obs: bool = False) -> gym.Env:
    env = make_env(env_id, options)
    env = RLRewardWrapper(env, reward, get_family(get_spec(env_id).family).reward_max, bootstrap_time_limit)
    env = SeededEpisodes(env, seed)
    env = ActionChunkWrapper(env, chunk_size, render_inner_steps=render_inner_steps)
    env = BinActionWrapper(env, tokenizer, chunk_size)
    return PrivilegedObservation(env) if privileged_obs else env


@dataclass(frozen=True)
class RLEnvSettings:
    """What RLlib's `env_config` holds for `make_rl_env`, typed: built once per run from `TrainConfig`
    (`vla_rl.rl.run`), pickled to every env runner. Like `ModuleSettings`, no field repeats a TrainConfig default:
    every field that a run sets is required; only the benchmark-only `render_inner_steps` and `tasks` (one task
    unless given) have defaults."""

    env_id: str
    env_options: dict[str, Any]  # EnvOptions as a dict
    action_tokenizer: dict[str, Any]  # the policy's ActionTokenizer.to_dict()
    chunk_size: int  # K env steps per decision
    reward: str  # one of REWARDS
    seed: int  # the run's seed; each env draws its own stream from it (env_seed)
    bootstrap_time_limit: bool  # see the module docstring
    privileged_obs: bool  # add the simulator's state for the asymmetric critic
    # The run's TrainConfig.envs_per_runner and group_size: with `tasks`, they give each env its slot, hence its task.
    envs_per_runner: int
    group_size: int
    render_inner_steps: bool = False  # benchmarks only: render every inner step of a chunk too
    # Several tasks (`vla_rl.rl.multitask`): each env runs tasks[slot's task] instead of env_id, and reports it in
    # info["task"]. () = env_id alone.
    tasks: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def of(cls, env_config: Mapping[str, Any]) -> RLEnvSettings:
        """The settings in an env_config; a missing or unknown key is a bug in whoever built it."""
        names = {f.name for f in dataclasses.fields(cls)}
        required = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING]
        data = dict(env_config)  # RLlib's EnvContext is a dict; its worker_index is an attribute, not a key
        unknown, missing = sorted(set(data) - names), [n for n in required if n not in data]
        if unknown or missing:
            raise ValueError(f"env_config: unknown keys {unknown}, missing keys {missing} "
                             "(build it with RLEnvSettings(...).as_dict())")
        if "tasks" in data:
            data["tasks"] = tuple(data["tasks"])
        return cls(**data)


def make_rl_env(env_config: Mapping[str, Any]) -> gym.Env:
    """RLlib env creator: `env_config` is `RLEnvSettings(...).as_dict()`; RLlib adds `worker_index` (an EnvContext
    attribute), which seeds each runner's envs apart."""
    from vla_rl.policy import ActionTokenizer

    s = RLEnvSettings.of(env_config)
    tokenizer = ActionTokenizer.from_dict(s.action_tokenizer)  # its scheme too: OpenVLA's bins decode differently
    worker = int(getattr(env_config, "worker_index", 0) or 0)
    env_id = s.env_id
    if s.tasks:
        from vla_rl.rl.multitask import slot_position, task_of_slot

        position = slot_position((worker, s.tasks, s.seed, s.envs_per_runner, s.group_size), s.envs_per_runner)
        env_id = task_of_slot(s.tasks, worker, position, s.envs_per_runner, s.group_size)
    env = build_rl_env(env_id, EnvOptions(**s.env_options), tokenizer, s.chunk_size, s.reward,
                       env_seed(s.seed, worker, next(_created)), s.bootstrap_time_limit, s.render_inner_steps,
                       s.privileged_obs)
    if s.tasks:
        from vla_rl.rl.multitask import TaskLabel

        env = TaskLabel(env, env_id)
    return env


def sub_envs(vector_env) -> list[gym.Env]:
    """The sub-envs of an EnvRunner's (possibly wrapped) gymnasium SyncVectorEnv."""
    env = vector_env
    while not hasattr(env, "envs") and hasattr(env, "env"):
        env = env.env
    return list(env.envs)


def seed_states(vector_env) -> list[dict]:
    return [e.get_wrapper_attr("seed_state")() for e in sub_envs(vector_env)]


def queue_group_seeds(vector_env, group_size: int) -> None:
    """Consecutive sub-envs in groups of `group_size` start their next episode from one initial state: the
    seed drawn from the group's first env's generator (so an exact resume replays the same groups)."""
    envs = sub_envs(vector_env)
    if len(envs) % group_size:
        raise ValueError(f"{len(envs)} envs per runner do not split into groups of {group_size}")
    for start in range(0, len(envs), group_size):
        seed = envs[start].get_wrapper_attr("draw_seed")()
        for e in envs[start:start + group_size]:
            e.get_wrapper_attr("queue_seed")(seed)


def mark_first_episodes(vector_env) -> None:
    """Flag the episode each sub-env starts next (at the iteration's forced reset) as its first."""
    for e in sub_envs(vector_env):
        e.get_wrapper_attr("mark_first")()


def set_seed_states(vector_env, states: list[dict]) -> None:
    envs = sub_envs(vector_env)
    if len(states) != len(envs):
        raise ValueError(f"{len(states)} saved env seed states for {len(envs)} envs")
    for e, s in zip(envs, states, strict=True):
        e.get_wrapper_attr("set_seed_state")(s)
