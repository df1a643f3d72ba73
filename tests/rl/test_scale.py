"""Scale on one machine: 2 DDP learners end an update with identical adapters; a two-node Ray cluster (head +
worker, `ray.cluster_utils.Cluster`) runs `vla-rl train --ray_address` with the runner placed on the worker node by
a custom resource; a cluster that lacks a resource is a one-line error with nothing written; the frozen base in
bfloat16 with LoRA and the value head in float32 samples and trains with a first PPO ratio of 1."""

from __future__ import annotations

import pytest
import torch
from obs_samples import make_obs
from rl_setup import RUN, build_algo

from vla_rl.cli import main


def test_two_learners_end_an_update_with_identical_adapters(tiny_policy):
    import ray
    from ray.rllib.core import DEFAULT_MODULE_ID

    ray.init(num_cpus=3, include_dashboard=False, logging_level="ERROR")
    try:
        algo = build_algo(tiny_policy, minibatch_size=30, lr=1e-3, num_learners=2, cpus_per_learner=1)
        try:
            def state(learner):
                return {k: v.clone() for k, v in learner.module[DEFAULT_MODULE_ID].unwrapped().get_state().items()}

            before = algo.learner_group.foreach_learner(state)
            algo.train()
            after = [r.get() for r in algo.learner_group.foreach_learner(state)]
            before = [r.get() for r in before]
            assert len(after) == 2 and set(after[0]) == set(after[1])
            for k in after[0]:
                assert torch.equal(after[0][k], after[1][k]), k  # DDP: both learners applied the same gradients
            assert any(not torch.equal(after[0][k], before[0][k]) for k in after[0])  # and they did train
            driver = algo.policy_module().get_state()  # the driver's copy (eval, checkpoints) follows learner 0
            assert all(torch.equal(driver[k], after[0][k]) for k in after[0])
        finally:
            algo.stop()
    finally:
        ray.shutdown()


def test_two_node_cluster_through_ray_address_with_runners_on_the_sim_node(tiny_policy, tmp_path, capsys):
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    worker = cluster.add_node(num_cpus=1, resources={"sim": 2})
    try:
        out = tmp_path / "run"
        args = ["train", "--policy", str(tiny_policy), *RUN, "--iterations", "2", "--ray_address", cluster.address,
                "--out", str(out)]
        assert main([*args, "--runner_resources", "{sim: 1}"]) == 0
        assert (out / "checkpoints/last/train_state.json").is_file()
        # Where the runner ran: the same config built in-process against the cluster.
        ray.init(address=cluster.address, logging_level="ERROR")
        try:
            algo = build_algo(tiny_policy, envs_per_runner=2, rollout_length=4, minibatch_size=8,
                              runner_resources={"sim": 1})
            nodes = algo.env_runner_group.foreach_env_runner(lambda r: ray.get_runtime_context().get_node_id(),
                                                             local_env_runner=False)
            algo.stop()
            assert nodes == [worker.node_id]
        finally:
            ray.shutdown()
        # A resource no node offers: one line, exit 2, nothing written (instead of an actor pending forever).
        capsys.readouterr()
        assert main([*args[:-1], str(tmp_path / "never"), "--runner_resources", "{gpu_sim: 1}"]) == 2
        err = capsys.readouterr().err
        assert "gpu_sim" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
        assert not (tmp_path / "never").exists()
    finally:
        cluster.shutdown()


def test_cluster_fits_names_the_missing_resource():
    from vla_rl.base.errors import ConfigError
    from vla_rl.rl.resources import check_cluster_fits, resource_demand
    from vla_rl.train_config import TrainConfig

    cfg = TrainConfig(policy="p", env_runners=4, cpus_per_runner=2, gpus_per_runner=0.25, num_learners=2,
                      cpus_per_learner=3, gpus_per_learner=1, runner_resources={"sim": 1})
    assert resource_demand(cfg) == {"CPU": 14, "GPU": 3, "sim": 4}
    check_cluster_fits(cfg, {"CPU": 16, "GPU": 4, "sim": 8})
    with pytest.raises(ConfigError, match="has 2 GPU in all, the run asks for 3"):
        check_cluster_fits(cfg, {"CPU": 16, "GPU": 2, "sim": 8})


def _settings(policy_dir, **changes):
    """The module settings `vla-rl train` would build for `policy_dir` (TrainConfig's defaults, LoRA r 4)."""
    from vla_rl.rl.module_settings import ModuleSettings
    from vla_rl.train_config import TrainConfig

    cfg = TrainConfig(policy=str(policy_dir), lora_r=4, lora_alpha=8)
    return ModuleSettings.from_train_config(str(policy_dir), cfg).replace(**changes)


def test_bf16_base_with_fp32_lora_samples_and_trains_with_first_ratio_1(tiny_policy):
    from vla_rl.rl.module import build_policy_from_config

    policy = build_policy_from_config(_settings(tiny_policy, base_dtype="bfloat16"))
    dtypes = {n: p.dtype for n, p in policy.named_parameters()}
    assert all(d == torch.float32 for n, d in dtypes.items() if "lora_" in n or "value_head" in n)
    assert all(d == torch.bfloat16 for n, d in dtypes.items() if not ("lora_" in n or "value_head" in n))
    obs = {k: torch.as_tensor(v) for k, v in make_obs(4, seed=3, state_dim=2).items()}
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        out = policy.act(obs, temperature=1.0, generator=gen)
    assert out.logp_sum.dtype == torch.float32
    ev = policy.evaluate(obs, out.tokens, 1.0)
    torch.testing.assert_close(ev.logp.sum(-1), out.logp_sum, atol=1e-5, rtol=0)
    (ev.logp.sum() + ev.value.sum()).backward()
    lora = [p for n, p in policy.named_parameters() if "lora_B" in n]
    assert lora and all(p.grad is not None and p.grad.dtype == torch.float32 for p in lora)
    assert all(p.grad is None for n, p in policy.named_parameters() if not p.requires_grad)


@pytest.mark.parametrize(("options", "dtype"), [
    ({}, "float32"),                                                                   # all on CPU
    ({"env_runners": 1, "gpus_per_runner": 0.5}, "float32"),                           # GPU runners, driver learner
    ({"num_learners": 1, "gpus_per_learner": 1}, "float32"),                           # GPU learner, CPU runners
    ({"env_runners": 2, "gpus_per_runner": 0.5, "num_learners": 1, "gpus_per_learner": 1}, "bfloat16"),
    ({"env_runners": 2, "gpus_per_runner": 0.5, "base_dtype": "float32"}, "float32"),
    ({"base_dtype": "bfloat16"}, "bfloat16"),
])
def test_auto_base_dtype_is_one_dtype_for_every_copy_of_the_policy(options, dtype):
    from vla_rl.rl.module_settings import ModuleSettings
    from vla_rl.train_config import TrainConfig

    cfg = TrainConfig(policy="p", **options)
    assert cfg.run_base_dtype() == dtype and ModuleSettings.from_train_config("p", cfg).base_dtype == dtype


def test_an_unresolved_auto_dtype_is_refused_by_the_module(tiny_policy):
    from vla_rl.policy.vla_policy import PolicyError
    from vla_rl.rl.module import build_policy_from_config

    with pytest.raises(PolicyError, match="base_dtype='auto'"):
        build_policy_from_config({**_settings(tiny_policy).as_dict(), "base_dtype": "auto"})


def test_activation_checkpointing_reaches_the_learners_policy(tiny_policy):
    from vla_rl.rl.module import build_policy_from_config

    on = _settings(tiny_policy, activation_checkpointing=True)
    assert build_policy_from_config(on).activation_checkpointing
    assert not build_policy_from_config(on.replace(activation_checkpointing=False)).activation_checkpointing
