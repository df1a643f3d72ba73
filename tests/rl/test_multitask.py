"""Multi-task RL (`vla-rl train --envs` / `--suite`): the deterministic task assignment over runners' envs (groups kept
within one task), per-task rollout statistics by the first-episode rule, and a 2-task run of the tiny policy whose
runner holds both tasks in the documented proportion and whose metrics are per task."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
import torch
from rl_setup import SMALL

from vla_rl.base.errors import ConfigError
from vla_rl.rl.env import RLEnvSettings, env_seed, make_rl_env, seed_states
from vla_rl.rl.multitask import (
    TASK,
    check_runs_every_task,
    check_tasks_batch_together,
    per_task_stats,
    runner_tasks,
    task_assignment,
)

A, B, C = "tabletop/touch-color", "tabletop/reach-corner", "tabletop/off-center"


def test_tasks_go_round_robin_over_env_slots_and_groups_stay_in_one_task():
    assert task_assignment([A, B], 1, 4) == [[A, B, A, B]]
    assert task_assignment([A, B], 0, 4) == [[A, B, A, B]]  # the driver's runner counts as runner 1
    assert task_assignment([A, B], 1, 4, group_size=2) == [[A, A, B, B]]
    # runner 2 continues where runner 1 stopped: 3 tasks over 2 runners x 4 envs
    assert task_assignment([A, B, C], 2, 4) == [[A, B, C, A], [B, C, A, B]]
    check_runs_every_task([A, B, C], 1, 4, 1)
    with pytest.raises(ConfigError, match="3 tasks but only 2 env groups per iteration"):
        check_runs_every_task([A, B, C], 1, 4, 2)


def test_tasks_whose_families_default_to_different_instruction_lengths_are_refused_unless_one_is_set(monkeypatch):
    import dataclasses

    import envs
    from envs import EnvOptions

    real = envs.resolve_options

    def family_lengths(env_id, options=None):  # as if B's family defaulted to 96 bytes (LIBERO's), A's to 64
        options = options or EnvOptions()
        if env_id == B and not options.instruction_length:
            return dataclasses.replace(options, instruction_length=96)
        return real(env_id, options)

    monkeypatch.setattr(envs, "resolve_options", family_lengths)
    check_tasks_batch_together([A, C], EnvOptions(), privileged=False)
    with pytest.raises(ConfigError, match=f"env {B} gets 96-byte instructions, env {A} 64-byte ones.*"
                                          "instruction_length 96"):
        check_tasks_batch_together([A, B], EnvOptions(), privileged=False)
    check_tasks_batch_together([A, B], EnvOptions(instruction_length=96), privileged=False)  # one length: batches


def test_per_task_stats_count_each_tasks_first_episodes_and_skip_cut_ones():
    stats = per_task_stats([(A, True), (A, False), (B, True), (B, None), ("metaworld/reach", True),
                            ("metaworld/push", False)])
    assert stats[f"success_rate/{A}"] == 0.5 and stats[f"episodes/{A}"] == 2.0
    assert stats[f"success_rate/{B}"] == 1.0 and stats[f"episodes/{B}"] == 1.0  # the cut episode is not counted
    assert "group_success_rate/easy" not in stats  # groups only when every task has one
    only_cut = per_task_stats([(C, None)])
    assert only_cut == {f"episodes/{C}": 0.0}
    mw = per_task_stats([("metaworld/reach", True), ("metaworld/push", False), ("metaworld/pick-place", True)])
    assert mw["group_success_rate/easy"] == 1.0 and mw["group_success_rate/hard"] == 0.5
    # a group is logged only when every one of its tasks has a rate: the value always averages the same tasks
    cut = per_task_stats([("metaworld/reach", True), ("metaworld/push", None), ("metaworld/pick-place", True)])
    assert cut["group_success_rate/easy"] == 1.0 and "group_success_rate/hard" not in cut
    assert cut["success_rate/metaworld/pick-place"] == 1.0


def test_a_runners_vector_env_holds_the_tasks_in_slot_order_seeded_as_one_task(tiny_policy):
    """RLlib builds a runner's vector env by calling the creator once per env: the creator numbers them 0, 1, ... and
    gives each its slot's task; episode seeds are the single-task run's (env_seed of seed, runner, creation order)."""
    from vla_rl.policy import VLAPolicy
    from vla_rl.rl import env as rl_env

    tok = VLAPolicy.from_pretrained(tiny_policy).action_tokenizer.to_dict()
    settings = RLEnvSettings(env_id=A, env_options={"image_size": 32}, action_tokenizer=tok, chunk_size=1,
                             reward="shaped", seed=5, bootstrap_time_limit=False, privileged_obs=False, tasks=(A, B),
                             envs_per_runner=4, group_size=1).as_dict()

    class Ctx(dict):
        worker_index = 2

    first = next(rl_env._created)
    vec = gym.vector.SyncVectorEnv([lambda: make_rl_env(Ctx(settings))] * 4)
    try:
        assert runner_tasks(vec) == [A, B, A, B]  # runner 2 starts at slot 4: 4 mod 2 = task A
        expected = [np.random.default_rng(env_seed(5, 2, first + 1 + i)).bit_generator.state for i in range(4)]
        assert seed_states(vec) == expected
        _, infos = vec.reset()
        assert list(infos[TASK]) == [A, B, A, B]
    finally:
        vec.close()


def test_train_on_two_tasks_holds_both_on_a_runner_logs_them_per_task_and_resumes_exactly(tiny_policy, tmp_path):
    """2 iterations of `vla-rl train --envs [A,B]` on one Ray runner with 4 envs: 2 + 2 envs, per-task rollout metrics
    beside the pooled ones, the final evaluation on every task; 1 + 1 iterations with a resume give the same run."""
    import dataclasses

    from safetensors.torch import load_file

    from vla_rl.rl.run import TrainRun
    from vla_rl.train_config import TrainConfig, WandbOptions

    cfg = TrainConfig(policy=str(tiny_policy), **SMALL, envs=[A, B], iterations=2, eval_every=0, eval_episodes=1,
                      lr=1e-3, wandb=WandbOptions(mode="disabled"), out=str(tmp_path / "two"))
    run = TrainRun(cfg)
    run.check()
    run.start()
    try:
        run.build()
        held = run.algo.env_runner_group.foreach_env_runner(lambda r: runner_tasks(r.env), local_env_runner=False)
        assert held == [[A, B, A, B]]
        while not run.done():
            run.iterate()
    finally:
        run.close()
    summary = run.summary()
    rows = [json.loads(line) for line in (tmp_path / "two/metrics.jsonl").read_text().splitlines()]
    for row in rows:
        # each env's first episode counts for its task (2 envs per task); the pooled rate is over all of them
        episodes = {t: row[f"rollout/episodes/{t}"] for t in (A, B)}
        assert episodes[B] == 2.0 and sum(episodes.values()) + row["rollout/first_episodes_cut"] == 4.0
        successes = sum(row[f"rollout/success_rate/{t}"] * n for t, n in episodes.items() if n)
        assert row["rollout/success_rate"] * row["rollout/episodes"] == pytest.approx(successes, abs=1e-5)
    last = rows[-1]
    for task in (A, B):
        assert f"eval/success_rate/{task}" in last and 0 <= last[f"eval/sampled_success_rate/{task}"] <= 1
    assert last["eval/success_rate"] == pytest.approx((last[f"eval/success_rate/{A}"] + last[f"eval/success_rate/{B}"]) / 2)
    assert set(summary["success_rate_per_task"]) == {A, B}

    split = dataclasses.replace(cfg, out=str(tmp_path / "one_plus_one"), stop_after=1)
    TrainRun(split).run()
    TrainRun(dataclasses.replace(split, stop_after=0, resume=True)).run()
    again = [json.loads(line) for line in (tmp_path / "one_plus_one/metrics.jsonl").read_text().splitlines()]
    keys = sorted(k for k in set().union(*rows) if k.startswith(("rollout/", "losses/policy")))
    assert f"rollout/success_rate/{A}" in keys
    assert [{k: r.get(k) for k in keys} for r in rows] == [{k: r.get(k) for k in keys} for r in again]
    # (the first invocation also evaluates at its last iteration, 1); the final evaluations agree
    evals = sorted(k for k in last if k.startswith("eval/success_rate"))
    assert {k: last[k] for k in evals} == {k: again[-1][k] for k in evals}
    adapter = "checkpoints/last/pretrained_model/adapter/adapter_model.safetensors"
    wa, wb = load_file(str(tmp_path / "two" / adapter)), load_file(str(tmp_path / "one_plus_one" / adapter))
    assert set(wa) == set(wb) and all(torch.equal(wa[k], wb[k]) for k in wa)
