"""The only module that touches RLlib's (and Tune's) private attributes, for the installed ray 2.60.

Each function uses the public API where one exists and otherwise names the one private attribute it reads, so an
upgrade that changes one fails here with a message saying what moved — tests/rl/test_rllib_internals.py checks every
one against the installed ray without starting a cluster.
"""

from __future__ import annotations

from typing import Any


class RLlibInternalsChanged(RuntimeError):
    """The installed ray no longer has an attribute this adapter relies on."""


def _private(obj: Any, name: str) -> Any:
    try:
        return getattr(obj, name)
    except AttributeError:
        import ray

        raise RLlibInternalsChanged(
            f"{type(obj).__name__}.{name} is gone in ray {ray.__version__} (written for 2.60): update "
            f"vla_rl/rl/rllib_internals.py") from None


def runner_manager(env_runner_group):
    """The group's `FaultTolerantActorManager` (no public accessor): health flags and actor handles of the runners."""
    return _private(env_runner_group, "_worker_manager")


def kill_hung_runner(env_runner_group, runner_id: int) -> None:
    """Kill a runner that is still healthy but late (a hung env step) and mark it unhealthy; Ray restarts the actor
    (max_restarts) and RLlib restores it before a later sample."""
    import ray

    manager = runner_manager(env_runner_group)
    ray.kill(manager.actors()[runner_id], no_restart=False)
    manager.set_actor_state(runner_id, healthy=False)


def is_runner_healthy(env_runner_group, runner_id: int) -> bool:
    return bool(runner_manager(env_runner_group).is_actor_healthy(runner_id))


def driver_learner(learner_group):
    """The learner living in the driver (num_learners=0), or None when the learners are remote actors."""
    return _private(learner_group, "_learner")


def forget_tune_job_prefix() -> None:
    """Tune's registry keys entries by the job id it saw first: a second connection from this process (another run
    against the same cluster) would register under the old job and runners would not find the env."""
    from ray.tune import registry

    _private(registry._global_registry, "_prefix")
    registry._global_registry._prefix = None
