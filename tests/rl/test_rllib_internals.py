"""Every RLlib/Tune private attribute the adapter reads exists in the installed ray, and a missing one fails loudly."""

import inspect

import pytest

from vla_rl.rl import rllib_internals


def test_every_private_the_adapter_reads_is_set_by_the_installed_ray():
    from ray.rllib.core.learner.learner_group import LearnerGroup
    from ray.rllib.env.env_runner_group import EnvRunnerGroup
    from ray.rllib.utils.actor_manager import FaultTolerantActorManager
    from ray.tune import registry

    assert "self._worker_manager = FaultTolerantActorManager(" in inspect.getsource(EnvRunnerGroup.__init__)
    assert "self._learner = learner_class(" in inspect.getsource(LearnerGroup.__init__)
    assert hasattr(registry._global_registry, "_prefix")
    for method in ("actors", "set_actor_state", "is_actor_healthy"):  # public on the manager
        assert callable(getattr(FaultTolerantActorManager, method))
    assert callable(EnvRunnerGroup.healthy_env_runner_ids)


def test_the_manager_accessors_work_on_a_real_manager():
    from ray.rllib.utils.actor_manager import FaultTolerantActorManager

    class Group:
        _worker_manager = FaultTolerantActorManager(actors=[])

    assert rllib_internals.runner_manager(Group()) is Group._worker_manager
    assert Group._worker_manager.actors() == {}


def test_a_missing_private_names_the_attribute_and_the_file_to_update():
    with pytest.raises(rllib_internals.RLlibInternalsChanged,
                       match=r"object\._worker_manager is gone in ray .* update vla_rl/rl/rllib_internals.py"):
        rllib_internals.runner_manager(object())
    with pytest.raises(rllib_internals.RLlibInternalsChanged, match=r"_learner is gone"):
        rllib_internals.driver_learner(object())


def test_forgetting_the_tune_prefix_clears_it():
    from ray.tune import registry

    registry._global_registry._prefix = "job-from-an-earlier-connection"
    rllib_internals.forget_tune_job_prefix()
    assert registry._global_registry._prefix is None
