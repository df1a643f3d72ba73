"""PPO on RLlib's new API stack, configured for a LoRA VLA: `build_algorithm(cfg, policy_dir, ...)`.

`VLAPPO.training_step` is PPO's (sample → learner update → weight sync) with two changes:
- every iteration starts from fresh episodes: each runner resets its envs and samples
  `rollout_length` decisions per env (`sample(num_timesteps=..., force_reset=True)`), so the run's
  state between iterations is weights + optimizers + RNGs — which is what makes resume exact;
- with `group_size` > 1, each runner's envs start the iteration in groups from shared initial states
  (`queue_group_seeds`) and the learner replaces GAE's advantages by group-relative ones;
- episode statistics (success of each env's first episode, RL return, the env's own return, length) and per-phase times are
  logged under `rollout/` and `perf/` from the episodes themselves;
- with an attached online preference loop (`attach_preference`, --reward preference), its step runs
  between sampling and learning (queries, answers, reward-model updates; `labels/`, `reward_model/`),
  its newest model goes to the learner's relabelling piece, and while no model exists yet the
  update is skipped rather than trained on zero rewards.

Only trainable tensors cross the wire (the module's `get_state`); `sync_bytes` is logged.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from ray.rllib.algorithms.ppo import PPO, PPOConfig
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.utils.metrics import (
    ALL_MODULES,
    ENV_RUNNER_RESULTS,
    LEARNER_RESULTS,
    NUM_ENV_STEPS_SAMPLED_LIFETIME,
    NUM_MODULE_STEPS_TRAINED_LIFETIME,
)

from vla_rl.rl import rllib_internals
from vla_rl.rl.env import (
    FIRST_EPISODE,
    RLEnvSettings,
    make_rl_env,
    mark_first_episodes,
    queue_group_seeds,
    seed_states,
    set_seed_states,
)
from vla_rl.rl.episodes import LearnedRewardSettings, episode_frames, write_model_rewards
from vla_rl.rl.learner import VLAPPOLearner
from vla_rl.rl.learner_settings import LearnerSettings
from vla_rl.rl.module import VLARLModule
from vla_rl.rl.module_settings import ModuleSettings
from vla_rl.rl.multitask import TASK, per_task_stats

ENV_NAME = "vla_rl_env"
ROLLOUT = "rollout"
PERF = "perf"


def episode_stats(episodes, per_task: bool = False) -> dict[str, float]:
    """Success rate, returns and lengths of each env's first episode of the iteration (reset info
    `first_episode`), plus `success_rate_all` / `episodes_all` over every finished episode in the batch.

    Only first episodes estimate the policy's success on fresh initial states: an env whose first episode
    succeeds early starts a second one, which finishes inside the rollout window only if it also succeeds
    early, so pooling every finished episode over-counts success (by up to 20 points on Meta-World at 32
    envs x 40 decisions). A first episode cut by the rollout boundary is not counted (`first_episodes_cut`:
    its outcome is unknown; make the window cover the time limit so that none is).

    With several tasks (`per_task`: the run's `RLEnvSettings.tasks`; every env's info carries its `task`, so the
    info alone cannot tell), also `success_rate/<env id>`, `episodes/<env id>` and
    `group_success_rate/<group>` by the same first-episode rule (`multitask.per_task_stats`)."""
    done = [e for e in episodes if e.is_done]
    started = [e for e in episodes if e.t_started == 0 and e.get_infos(0).get(FIRST_EPISODE, False)]
    first = [e for e in started if e.is_done]
    steps = sum(len(e) for e in episodes)
    out: dict[str, float] = {"env_steps": float(steps), "episodes": float(len(first)),
                             "episodes_all": float(len(done)), "first_episodes_cut": float(len(started) - len(first))}
    if done:
        out["success_rate_all"] = float(np.mean([_succeeded(e) for e in done]))
    if first:
        infos = [e.get_infos(-1) for e in first]
        out["success_rate"] = float(np.mean([_succeeded(e) for e in first]))
        out["return"] = float(np.mean([e.get_return() for e in first]))
        out["env_return"] = float(np.mean([i.get("episode_env_return", np.nan) for i in infos]))
        out["length"] = float(np.mean([i.get("episode_env_steps", len(e)) for i, e in zip(infos, first, strict=True)]))
    if per_task and started:  # several tasks: the same per task (vla_rl.rl.multitask)
        out.update(per_task_stats([(e.get_infos(0)[TASK], _succeeded(e) if e.is_done else None) for e in started]))
    return out


def _succeeded(episode) -> bool:
    return any(i.get("success", False) for i in episode.get_infos())


def _sample_runner(runner, n: int, group_size: int) -> tuple[int, list, dict]:
    """One runner's iteration: `n` decisions from fresh episodes (started in groups when group_size > 1)."""
    mark_first_episodes(runner.env)
    if group_size > 1:
        queue_group_seeds(runner.env, group_size)
    return int(runner.worker_index), runner.sample(num_timesteps=n, force_reset=True, explore=True), runner.get_metrics()


def _runner_rng_state(runner) -> dict:
    return {"module_generator": runner.module.generator.get_state().tolist(), "envs": seed_states(runner.env),
            "torch": torch.get_rng_state().tolist()}


def _set_runner_rng_state(runner, state: dict) -> None:
    runner.module.generator.set_state(torch.tensor(state["module_generator"], dtype=torch.uint8))
    set_seed_states(runner.env, state["envs"])
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))


class VLAPPO(PPO):
    preference = None  # the online preference loop (reward_models.online.PreferenceLoop), when attached
    reward_model = None  # a frozen reward model (--reward model), when set
    reward_settings = None  # how the model's scores become rewards (LearnedRewardSettings), given with the model

    def attach_preference(self, loop, settings: LearnedRewardSettings) -> None:
        """Every batch's rewards come from the loop's newest reward model, turned into rewards by `settings`."""
        self.preference, self.reward_settings = loop, settings

    def use_reward_model(self, model, settings: LearnedRewardSettings) -> None:
        """Every batch's rewards come from `model` (a `RewardEnsemble`), turned into rewards by `settings`."""
        self.reward_model, self.reward_settings = model.eval(), settings

    def setup(self, config) -> None:
        super().setup(config)
        seed = int(self.config.seed or 0)
        # Each runner samples with its own stream (the module config's seed is the same everywhere).
        self.env_runner_group.foreach_env_runner(
            lambda r: r.module.generator.manual_seed(seed * 7919 + int(r.worker_index)),
            local_env_runner=self._sample_locally)

    @property
    def _sample_locally(self) -> bool:
        return (self.config.num_env_runners or 0) == 0

    # --- faults: crashed and hung env runners -------------------------------------------------------
    runner_restarts = 0  # runners brought back (after a crash or a timeout) over the run's lifetime
    runner_timeouts = 0  # runners killed because their rollouts were later than sample_timeout_s

    def fault_metrics(self) -> dict[str, float]:
        healthy = 1 if self._sample_locally else len(self.env_runner_group.healthy_env_runner_ids())
        return {"faults/runner_restarts": float(self.runner_restarts), "faults/runner_timeouts": float(self.runner_timeouts),
                "faults/healthy_runners": float(healthy)}

    def restore_env_runners(self, env_runner_group) -> list[int]:
        """RLlib's restore (a restarted runner gets the learner's weights) + a fresh sampling stream for it (a
        restarted actor re-runs setup(), which would replay its first stream)."""
        restored = super().restore_env_runners(env_runner_group)
        if restored and env_runner_group is self.env_runner_group:
            self.runner_restarts += len(restored)
            seed, k = int(self.config.seed or 0), self.runner_restarts
            env_runner_group.foreach_env_runner(
                lambda r: r.module.generator.manual_seed(seed * 7919 + int(r.worker_index) + 100_003 * k),
                local_env_runner=False, remote_worker_ids=restored)
        return restored

    def _sample(self, n: int) -> list:
        """(runner index, episodes, metrics) of every runner that returned within sample_timeout_s.

        A runner that crashed is restarted by Ray (max_restarts) and restored by RLlib before a later sample; one that
        timed out (a hung env step) is killed here so that Ray replaces it. When no runner returned anything, wait
        for the restarts (up to runner_restore_timeout_s) and sample again: every iteration trains on a batch."""

        timeout = float(self.config.sample_timeout_s or 0) or None
        settings = LearnerSettings.of(self.config)
        group = settings.group_size
        deadline = time.monotonic() + settings.runner_restore_timeout_s
        runners = self.env_runner_group
        while True:
            asked = [] if self._sample_locally else runners.healthy_env_runner_ids()
            results = []
            if self._sample_locally or asked:
                results = self.env_runner_group.foreach_env_runner(
                    lambda r: _sample_runner(r, n, group),
                    local_env_runner=self._sample_locally, timeout_seconds=timeout)
            late = [i for i in set(asked) - {i for i, _, _ in results} if rllib_internals.is_runner_healthy(runners, i)]
            for i in late:  # still healthy = still busy: hung. Kill it; Ray restarts it (RLlib restores it later).
                rllib_internals.kill_hung_runner(runners, i)
                self.runner_timeouts += 1
            if results or self._sample_locally:
                return results
            if time.monotonic() > deadline:
                raise RuntimeError(f"no env runner returned rollouts and none came back within "
                                   f"runner_restore_timeout_s={settings.runner_restore_timeout_s}"
                                   " — see the runners' errors above (ray logs) or raise the timeout")
            time.sleep(1.0)
            self.restore_env_runners(self.env_runner_group)

    def training_step(self) -> None:
        t0 = time.perf_counter()
        rollout_length = LearnerSettings.of(self.config).rollout_length
        results = self._sample(rollout_length * int(self.config.num_envs_per_env_runner))
        episodes = [e for _, eps, _ in results for e in eps]
        self.metrics.log_dict(self.fault_metrics(), key="vla", window=1)
        if not episodes:
            return
        self.metrics.aggregate([m for _, _, m in results], key=ENV_RUNNER_RESULTS)
        t1 = time.perf_counter()
        t_sample = t1 - t0
        stats = episode_stats(episodes, per_task=bool(RLEnvSettings.of(self.config.env_config).tasks))
        pref: dict[str, float] = {}
        model, frames = self.reward_model, None
        if self.preference is not None:
            it = self.preference.state.iterations + 1
            frames = episode_frames(episodes, f"rollout:iteration {it}")
            pref, _ = self.preference.step(it, frames)
            model = self.preference.model
            if model is None:  # no reward yet (every label failed so far): do not train on zeros
                self.metrics.log_dict({**{f"{ROLLOUT}/{k}": v for k, v in stats.items()}, **pref,
                                       f"{PERF}/sample_s": t_sample, "losses/skipped_updates": 1.0}, key="vla", window=1)
                return
        if model is not None:
            pref.update(self._relabel(episodes, frames or episode_frames(episodes, "rollout"), model))
            t1 = time.perf_counter()  # learn_s excludes the reward phases (perf/time_label, time_reward_model, ...)
        learner_results = self.learner_group.update(
            episodes=episodes,
            timesteps={
                NUM_ENV_STEPS_SAMPLED_LIFETIME: self.metrics.peek((ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME)),
                NUM_MODULE_STEPS_TRAINED_LIFETIME: self.metrics.peek(
                    (LEARNER_RESULTS, ALL_MODULES, NUM_MODULE_STEPS_TRAINED_LIFETIME), default=0),
            },
            num_epochs=self.config.num_epochs,
            minibatch_size=self.config.minibatch_size,
            shuffle_batch_per_epoch=True,
        )
        self.metrics.aggregate(learner_results, key=LEARNER_RESULTS)
        t2 = time.perf_counter()
        modules = set(learner_results[0].keys()) - {ALL_MODULES}
        self.env_runner_group.sync_weights(from_worker_or_learner_group=self.learner_group, policies=modules,
                                           inference_only=True)
        t3 = time.perf_counter()
        perf = {"sample_s": t_sample, "learn_s": t2 - t1, "sync_s": t3 - t2,
                "env_steps_per_s": stats["env_steps"] / max(t_sample, 1e-9)}
        self.metrics.log_dict({**{f"{ROLLOUT}/{k}": v for k, v in stats.items()}, **pref,
                               **{f"{PERF}/{k}": v for k, v in perf.items()}}, key="vla", window=1)

    def _relabel(self, episodes, frames, model) -> dict[str, float]:
        """Score the batch's frames once: the scores become the actions' rewards (on the episodes, before the learner)
        and, with the preference loop, its audit against privileged progress."""
        from reward_models.scoring import score_frames, spearman_vs_progress

        t0 = time.perf_counter()
        scores = score_frames(model, frames)
        metrics = write_model_rewards(episodes, scores, self.reward_settings)
        if self.preference is not None:
            metrics["reward_model/spearman_vs_progress"] = spearman_vs_progress(scores, frames)
        metrics[f"{PERF}/time_reward_score"] = time.perf_counter() - t0
        return metrics

    # --- exact resume: RNG states of the driver and every runner ------------------------------------
    def rng_state(self) -> dict[str, Any]:
        """RNG states of the driver and of every runner by index (None for a runner that is down right now: it
        restarts with a fresh stream after a resume too)."""
        self.restore_env_runners(self.env_runner_group)
        got = dict(self.env_runner_group.foreach_env_runner(lambda r: (int(r.worker_index), _runner_rng_state(r)),
                                                            local_env_runner=self._sample_locally))
        indices = [0] if self._sample_locally else list(range(1, int(self.config.num_env_runners) + 1))
        return {"runners": [got.get(i) for i in indices], "driver_torch": torch.get_rng_state().tolist(),
                "driver_numpy": [int(x) for x in np.random.get_state()[1]], "driver_numpy_pos": int(np.random.get_state()[2])}

    def set_rng_state(self, state: dict[str, Any]) -> None:
        runners = state["runners"]
        count = 1 if self._sample_locally else int(self.config.num_env_runners)
        if count != len(runners):
            raise ValueError(f"the checkpoint holds RNG states of {len(runners)} env runners, this run has {count}")
        for i, s in enumerate(runners):
            if s is None:
                continue
            index = i + (0 if self._sample_locally else 1)
            self.env_runner_group.foreach_env_runner(
                lambda r, s=s: _set_runner_rng_state(r, s), local_env_runner=self._sample_locally,
                remote_worker_ids=None if self._sample_locally else [index])
        torch.set_rng_state(torch.tensor(state["driver_torch"], dtype=torch.uint8))
        np.random.set_state(("MT19937", np.array(state["driver_numpy"], dtype=np.uint32), state["driver_numpy_pos"]))

    _driver_module = None  # with remote learners: a copy of the learner's module in the driver (eval, checkpoints)

    def policy_module(self):
        """The learner's RLModule with its current weights: the learner's own when it runs in the driver
        (num_learners=0), else a driver-side copy refreshed from learner 0 (LoRA + value head only)."""
        from ray.rllib.core import DEFAULT_MODULE_ID

        learner = rllib_internals.driver_learner(self.learner_group)
        if learner is not None:
            return learner.module[DEFAULT_MODULE_ID]
        if self._driver_module is None:
            self._driver_module = VLARLModule(model_config=dict(self.config.rl_module_spec.model_config))
        self._driver_module.set_state(self._learner_module_state())
        return self._driver_module

    def _learner_module_state(self) -> dict:
        """Learner 0's trainable tensors (LoRA + value head)."""
        from ray.rllib.core import DEFAULT_MODULE_ID

        return self.learner_group.get_state(components="learner/rl_module")["learner"]["rl_module"][DEFAULT_MODULE_ID]

    def push_weights(self) -> None:
        """Force the learner's weights onto every runner (after a restore, the runners' seq-no would refuse them)."""
        state = self._learner_module_state()
        self.env_runner_group.foreach_env_runner(lambda r: r.module.set_state(state),
                                                 local_env_runner=self._sample_locally)


def build_config(cfg, env_config: dict[str, Any], policy_dir: str) -> PPOConfig:
    """The PPOConfig of a TrainConfig (`cfg`) for the policy in `policy_dir`: env runners, the VLA module, the VLA
    learner."""
    model_config = ModuleSettings.from_train_config(policy_dir, cfg).as_dict()
    runners = int(cfg.env_runners)
    batch = max(1, runners) * cfg.envs_per_runner * cfg.rollout_length
    batch_per_learner = max(1, batch // max(1, cfg.num_learners))
    from ray.tune import registry

    rllib_internals.forget_tune_job_prefix()
    registry.register_env(ENV_NAME, make_rl_env)
    config = (
        PPOConfig()
        .environment(env=ENV_NAME, env_config=env_config, disable_env_checking=True)
        # Several learners: DDP over the trainable tensors; find_unused_parameters because some steps leave LoRA
        # without a gradient (critic warm-up with a detached value head).
        .framework("torch", torch_ddp_kwargs={"find_unused_parameters": True})
        .env_runners(num_env_runners=runners, num_envs_per_env_runner=cfg.envs_per_runner,
                     num_cpus_per_env_runner=cfg.cpus_per_runner, num_gpus_per_env_runner=cfg.gpus_per_runner,
                     custom_resources_per_env_runner=dict(cfg.runner_resources),
                     rollout_fragment_length=cfg.rollout_length, create_local_env_runner=runners == 0,
                     sample_timeout_s=cfg.sample_timeout_s or None, gym_env_vectorize_mode="sync")
        .fault_tolerance(restart_failed_env_runners=True, max_num_env_runner_restarts=cfg.max_runner_restarts)
        .rl_module(rl_module_spec=RLModuleSpec(module_class=VLARLModule, model_config=model_config))
        .learners(num_learners=cfg.num_learners, num_cpus_per_learner=cfg.cpus_per_learner if cfg.num_learners else 1,
                  num_gpus_per_learner=cfg.gpus_per_learner)
        .training(lr=cfg.lr, gamma=cfg.gamma, lambda_=cfg.gae_lambda, clip_param=cfg.clip, use_kl_loss=False,
                  vf_loss_coeff=cfg.vf_coef, entropy_coeff=cfg.entropy_coef, vf_clip_param=float("inf"),
                  train_batch_size_per_learner=batch_per_learner, minibatch_size=cfg.minibatch_size, num_epochs=cfg.epochs,
                  grad_clip=cfg.grad_clip or None, grad_clip_by="global_norm",
                  learner_class=VLAPPOLearner,
                  learner_config_dict=LearnerSettings.from_train_config(cfg).as_dict())
        .debugging(seed=cfg.seed, log_level="ERROR")
        .reporting(metrics_num_episodes_for_smoothing=1)
    )
    config.algo_class = VLAPPO
    return config
