"""Faults on one machine (tiny preset, tabletop/touch-color): an env runner killed with SIGKILL in the middle of
sampling is restarted and the iteration still trains on a batch; a runner whose env step hangs is killed after
sample_timeout_s and replaced; kill -9 of the `vla-rl train` driver process, then `--resume true`, continues from
the last checkpoint with its counters; a checkpoint interrupted mid-write never becomes `last`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from rl_setup import RUN, assert_runner_has_learner_weights, build_algo

from vla_rl.cli import main


@pytest.fixture(scope="module")
def algo(tiny_policy):
    import ray

    torch.set_num_threads(1)
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    algorithm = build_algo(tiny_policy, lr=1e-3, sample_timeout_s=20.0, runner_restore_timeout_s=120.0)
    yield algorithm
    algorithm.stop()
    ray.shutdown()


def _runner_pid(algo) -> int:
    return algo.env_runner_group.foreach_env_runner(lambda r: os.getpid(), local_env_runner=False)[0]


def test_a_runner_killed_mid_sampling_is_restarted_and_the_iteration_still_trains(algo):
    def slow(runner):  # 30 steps of >= 0.1 s: the sampling lasts > 3 s, so the kill lands in it
        step = runner.env.step
        runner.env.step = lambda *args, **kwargs: (time.sleep(0.1), step(*args, **kwargs))[1]

    algo.env_runner_group.foreach_env_runner(slow, local_env_runner=False)
    pid = _runner_pid(algo)
    module = algo.policy_module()
    before = {k: v.clone() for k, v in module.get_state().items()}
    killer = threading.Timer(1.0, os.kill, (pid, signal.SIGKILL))  # during this iteration's sampling
    killer.start()
    result = algo.train()
    killer.join()
    row = result["vla"]
    assert row["faults/runner_restarts"] >= 1 and row["faults/healthy_runners"] == 1
    assert row["rollout/env_steps"] == 4 * 30  # the batch came from the restarted runner
    assert any(not torch.equal(v, before[k]) for k, v in module.get_state().items())  # and was trained on
    assert _runner_pid(algo) != pid
    assert_runner_has_learner_weights(algo)  # the restored runner samples with the learner's adapters


def test_a_hung_env_step_is_bounded_by_the_timeout_and_its_runner_replaced(algo):
    def hang(runner):
        runner.env.step = lambda *args, **kwargs: time.sleep(3600)

    algo.env_runner_group.foreach_env_runner(hang, local_env_runner=False)
    pid, timeouts, restarts = _runner_pid(algo), algo.runner_timeouts, algo.runner_restarts
    t0 = time.monotonic()
    result = algo.train()
    assert time.monotonic() - t0 < 20 + 120  # timeout + restart, not an hour
    row = result["vla"]
    assert row["faults/runner_timeouts"] == timeouts + 1 and row["faults/runner_restarts"] >= restarts + 1
    assert row["rollout/env_steps"] == 4 * 30
    assert _runner_pid(algo) != pid
    assert_runner_has_learner_weights(algo)


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_kill_9_of_the_driver_then_resume_continues_with_counters_intact(tiny_policy, tmp_path):
    out = tmp_path / "run"
    args = ["train", "--policy", str(tiny_policy), *RUN, "--iterations", "6", "--save_every", "1", "--out", str(out)]
    code = "import sys; from vla_rl.cli import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.Popen([sys.executable, "-c", code, *args], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while not (out / "checkpoints" / "000002").is_dir():
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "no second checkpoint within 4 minutes"
            time.sleep(0.2)
        os.kill(proc.pid, signal.SIGKILL)  # the driver, mid-training
        proc.wait(timeout=30)
    finally:  # then what it left behind (its local Ray's processes)
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert proc.returncode == -signal.SIGKILL
    done = json.loads((out / "checkpoints/last/train_state.json").read_text())["iteration"]
    assert 2 <= done < 6
    assert main([*args, "--resume", "true"]) == 0
    rows = _rows(out / "metrics.jsonl")
    assert [r["iteration"] for r in rows] == [1, 2, 3, 4, 5, 6]  # rows after the checkpoint were redone, once
    steps = [r["env_steps"] for r in rows]
    assert steps == [sum(r["rollout/env_steps"] for r in rows[:i + 1]) for i in range(6)]
    state = json.loads((out / "checkpoints/last/train_state.json").read_text())
    assert state["iteration"] == 6 and state["env_steps"] == steps[-1]


class _FailingAlgo:
    """An algorithm whose RLlib save dies half-way (a crash during a checkpoint write)."""

    preference = None

    def __init__(self, policy):
        self.policy = policy

    def policy_module(self):
        return self

    def save_to_path(self, path):
        Path(path).mkdir(parents=True)
        (Path(path) / "half_written").write_text("x")
        raise KeyboardInterrupt


def test_a_checkpoint_interrupted_mid_write_never_becomes_last(tiny_policy, tmp_path):
    from vla_rl.checkpoints import latest, point_last, save_rl_checkpoint, step_dir
    from vla_rl.policy import VLAPolicy

    root = tmp_path / "checkpoints"
    good = step_dir(root, 1)
    good.mkdir(parents=True)
    point_last(root, good)
    with pytest.raises(KeyboardInterrupt):
        save_rl_checkpoint(root, 2, _FailingAlgo(VLAPolicy.from_pretrained(tiny_policy)), {"env_steps": 0})
    assert latest(root) == good.resolve()
    assert not step_dir(root, 2).exists()
