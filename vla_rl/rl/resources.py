"""What a train run asks of a Ray cluster, and a one-line error when the cluster cannot give it."""

from __future__ import annotations

from vla_rl.base.errors import ConfigError
from vla_rl.train_config import TrainConfig


def resource_demand(cfg: TrainConfig) -> dict[str, float]:
    """Ray resources the run's actors ask for: runners (CPU, GPU, custom) and remote learners (CPU, GPU)."""
    runners, learners = cfg.env_runners, cfg.num_learners
    need: dict[str, float] = {"CPU": runners * cfg.cpus_per_runner + learners * cfg.cpus_per_learner,
                              "GPU": runners * cfg.gpus_per_runner + learners * cfg.gpus_per_learner}
    for name, amount in cfg.runner_resources.items():
        need[name] = need.get(name, 0.0) + runners * float(amount)
    return {k: v for k, v in need.items() if v > 0}


def check_cluster_fits(cfg: TrainConfig, available: dict[str, float]) -> None:
    """A one-line error (instead of actors pending forever) when the cluster lacks what the run asks for."""
    for name, amount in resource_demand(cfg).items():
        have = float(available.get(name, 0.0))
        if have + 1e-9 < amount:
            what = {"CPU": "cpus_per_runner / cpus_per_learner", "GPU": "gpus_per_runner / gpus_per_learner"}.get(
                name, f"runner_resources.{name}")
            raise ConfigError(f"the Ray cluster has {have:g} {name} in all, the run asks for {amount:g} "
                              f"(env_runners={cfg.env_runners}, num_learners={cfg.num_learners}, {what}) — "
                              "lower them or add nodes that offer it")
