"""The learner connector pieces on hand-built batches (no Ray, no env)."""

import numpy as np
import torch
from ray.rllib.core.columns import Columns

from vla_rl.rl.connectors import (
    VF_PREDS,
    Advantages,
    DropBootstrapRows,
    EpisodeOutcomes,
    ShuffledAdvantages,
    ShuffleRows,
)


def _episode(rewards, group_seed, done):
    from ray.rllib.env.single_agent_episode import SingleAgentEpisode

    n = len(rewards)
    return SingleAgentEpisode(observations=[np.zeros(1, np.float32)] * (n + 1), actions=[0] * n, rewards=list(rewards),
                              infos=[{"group_seed": group_seed}] + [{}] * n, terminated=done, len_lookback_buffer=0)


class _ConstantCritic:
    def __init__(self, value):
        self.value = value

    def compute_values(self, batch):
        return torch.full((len(batch[Columns.REWARDS]),), self.value)


def _flags(rows, terminated, truncated):
    """RLlib's layout after AddOneTsToEpisodesAndTruncate: per chunk its real rows, then one masked bootstrap row."""
    mask, term, trunc = [], [], []
    for n, te, tr in zip(rows, terminated, truncated, strict=True):
        mask += [True] * n + [False]
        term += [False] * (n - 1) + [te, False]
        trunc += [False] * (n - 1) + [tr, False]
    return {Columns.LOSS_MASK: torch.tensor(mask), Columns.TERMINATEDS: torch.tensor(term),
            Columns.TRUNCATEDS: torch.tensor(trunc)}


def test_group_estimator_gives_each_episode_its_return_minus_its_groups_mean():
    from ray.rllib.evaluation.postprocessing import Postprocessing
    from ray.rllib.utils.postprocessing.episodes import (
        add_one_ts_to_episodes_and_truncate,
    )

    # Two episodes of group 7 (returns 2 and 0), one alone in group 9, one cut at the rollout boundary.
    episodes = [_episode([1.0, 1.0], 7, True), _episode([0.0, 0.0, 0.0], 7, True), _episode([5.0], 9, True),
                _episode([4.0, 4.0], -1, False)]
    shared = {}
    EpisodeOutcomes()(rl_module=None, batch={}, episodes=episodes, shared_data=shared)
    add_one_ts_to_episodes_and_truncate(episodes)  # what the PPO pipeline does next: one bootstrap row per chunk
    rewards = torch.tensor([1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 5.0, 0.0, 4.0, 4.0, 0.0])
    batch = {"default_policy": {Columns.REWARDS: rewards, **_flags([2, 3, 1, 2], [True] * 3 + [False], [False] * 3 + [True])}}
    out = Advantages(estimator="group")(rl_module={"default_policy": _ConstantCritic(0.5)}, batch=batch,
                                                       episodes=episodes, shared_data=shared)["default_policy"]
    # +1 / -1 on the real rows of group 7 (scale sqrt(mean(1, 1)) = 1), 0 for the lone and the cut episode, and
    # 0 on every bootstrap row — with the production setting (whiten on: it must not re-centre group advantages)
    expected = torch.tensor([1.0, 1.0, 0.0, -1.0, -1.0, -1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    assert torch.equal(out[Postprocessing.ADVANTAGES], expected)
    # the value targets stay GAE's (gamma 0.99, lambda 0.95 by default) so the critic still trains: a terminated
    # one-step episode's target is its reward
    assert out[Postprocessing.VALUE_TARGETS][7].item() == 5.0


def test_gae_estimator_targets_whitening_over_loss_rows_and_zero_bootstrap_rows():
    from ray.rllib.evaluation.postprocessing import Postprocessing

    # Chunk A: 3 steps, terminated (rewards 0, 0, 1). Chunk B: 2 steps cut by the rollout (truncated): V(s_2) = the
    # bootstrap row's value. gamma = lambda = 1 and a constant critic of 0.5: Monte-Carlo targets by hand.
    rewards = torch.tensor([0.0, 0.0, 1.0, 0.0, 0.25, 0.25, 0.0])
    batch = {"default_policy": {Columns.REWARDS: rewards, **_flags([3, 2], [True, False], [False, True])}}
    out = Advantages(gamma=1.0, lam=1.0)(rl_module={"default_policy": _ConstantCritic(0.5)}, batch=batch,
                                         episodes=[], metrics=None)["default_policy"]
    targets = out[Postprocessing.VALUE_TARGETS]
    mask = batch["default_policy"][Columns.LOSS_MASK]
    assert torch.allclose(targets[mask], torch.tensor([1.0, 1.0, 1.0, 0.5 + 0.5, 0.25 + 0.5]))
    raw = targets[mask] - 0.5
    expected = (raw - raw.mean()) / raw.std(unbiased=False)
    assert torch.allclose(out[Postprocessing.ADVANTAGES][mask], expected, atol=1e-5)
    assert torch.equal(out[Postprocessing.ADVANTAGES][~mask], torch.zeros(2))
    assert torch.equal(out[VF_PREDS], torch.full((7,), 0.5))


class _TableCritic:
    def __init__(self, values):
        self.values = torch.tensor(values)

    def compute_values(self, batch):
        return self.values


def test_the_critic_gate_replaces_a_critic_worse_than_the_mean_by_monte_carlo_returns():
    from ray.rllib.evaluation.postprocessing import Postprocessing

    from vla_rl.rl import ppo_math

    # Two terminated chunks: rewards (0, 1) and (0, 0) + one bootstrap row each; gamma 0.5, lambda 0.8.
    rewards = torch.tensor([0.0, 1.0, 0.0, 0.0, 0.0, 0.0])
    flags = _flags([2, 2], [True, True], [False, False])
    mask = flags[Columns.LOSS_MASK]

    def run(values, gate):
        batch = {"default_policy": {Columns.REWARDS: rewards, **flags}}
        return Advantages(gamma=0.5, lam=0.8, critic_gate=gate)(rl_module={"default_policy": _TableCritic(values)},
                                                                batch=batch, episodes=[])["default_policy"]

    bad = [3.0, -2.0, 0.0, 4.0, 9.0, 9.0]  # anti-correlated with the returns: explained variance < 0
    gated, plain = run(bad, True), run(bad, False)
    returns = torch.tensor([0.5, 1.0, 0.0, 0.0])  # returns-to-go by hand: 0 + 0.5 * 1, 1, 0, 0
    expected = (returns - returns.mean()) / returns.std(unbiased=False)
    assert torch.allclose(gated[Postprocessing.ADVANTAGES][mask], expected, atol=1e-6)
    assert torch.equal(gated[Postprocessing.ADVANTAGES][~mask], torch.zeros(2))
    assert not torch.allclose(plain[Postprocessing.ADVANTAGES][mask], expected, atol=1e-3)
    assert torch.equal(gated[Postprocessing.VALUE_TARGETS], plain[Postprocessing.VALUE_TARGETS])  # the critic trains on
    good = [0.5, 1.0, 0.0, 0.0, 0.0, 0.0]  # the true values: the gate lets it through
    assert ppo_math.explained_variance(torch.tensor(good), run(good, True)[Postprocessing.VALUE_TARGETS], mask) > 0
    assert torch.equal(run(good, True)[Postprocessing.ADVANTAGES], run(good, False)[Postprocessing.ADVANTAGES])


def test_the_shuffle_control_permutes_loss_rows_only():
    from ray.rllib.evaluation.postprocessing import Postprocessing

    adv = torch.arange(8, dtype=torch.float32)
    mask = torch.tensor([1, 1, 1, 0, 1, 1, 1, 0], dtype=torch.bool)
    batch = {"default_policy": {Postprocessing.ADVANTAGES: adv.clone(), Columns.LOSS_MASK: mask}}
    out = ShuffledAdvantages(seed=0)(rl_module=None, batch=batch, episodes=[])["default_policy"][Postprocessing.ADVANTAGES]
    assert out[3] == 3 and out[7] == 7  # bootstrap rows untouched
    assert sorted(out[mask].tolist()) == sorted(adv[mask].tolist()) and not torch.equal(out, adv)

    def control(index):
        piece = ShuffledAdvantages(seed=0)
        piece.update_index = index
        batch = {"default_policy": {Postprocessing.ADVANTAGES: adv.clone(), Columns.LOSS_MASK: mask}}
        return piece(rl_module=None, batch=batch, episodes=[])["default_policy"][Postprocessing.ADVANTAGES]

    assert torch.equal(control(0), out)  # a fresh piece (a resumed run) draws the same permutation for that update
    assert not torch.equal(control(1), out)


def _rows_batch():
    n = 7
    return {"default_policy": {Columns.OBS: {"image": torch.arange(n * 4).reshape(n, 2, 2), "state": torch.arange(n) * 10.0},
                               Columns.ACTIONS: torch.arange(n)[:, None].repeat(1, 3) + 100,
                               Columns.LOSS_MASK: torch.tensor([1, 1, 0, 1, 1, 1, 0], dtype=torch.bool)}}


def test_shuffle_rows_reorders_every_column_alike_and_depends_only_on_seed_and_update():
    """The last piece: RLlib's iterator walks the first epoch in episode order, so the rows arrive permuted — every
    column (nested observations too) by the same permutation, one permutation per (seed, update index)."""
    def shuffled(seed, index):
        piece = ShuffleRows(seed=seed)
        piece.update_index = index
        return piece(rl_module=None, batch=_rows_batch(), episodes=[])["default_policy"]

    out = shuffled(0, 0)
    order = out[Columns.ACTIONS][:, 0] - 100  # each row's original position
    assert sorted(order.tolist()) == list(range(7)) and order.tolist() != list(range(7))
    original = _rows_batch()["default_policy"]
    assert torch.equal(out[Columns.OBS]["image"], original[Columns.OBS]["image"][order])
    assert torch.equal(out[Columns.OBS]["state"], original[Columns.OBS]["state"][order])
    assert torch.equal(out[Columns.LOSS_MASK], original[Columns.LOSS_MASK][order])
    assert torch.equal(shuffled(0, 0)[Columns.ACTIONS], out[Columns.ACTIONS])  # a resumed run draws the same one
    assert not torch.equal(shuffled(0, 1)[Columns.ACTIONS], out[Columns.ACTIONS])  # a new one per update
    assert not torch.equal(shuffled(1, 0)[Columns.ACTIONS], out[Columns.ACTIONS])


def test_drop_bootstrap_rows_keeps_the_loss_rows_of_every_column_in_order():
    out = DropBootstrapRows()(rl_module=None, batch=_rows_batch(), episodes=[])["default_policy"]
    assert (out[Columns.ACTIONS][:, 0] - 100).tolist() == [0, 1, 3, 4, 5]
    assert out[Columns.OBS]["state"].tolist() == [0.0, 10.0, 30.0, 40.0, 50.0] and bool(out[Columns.LOSS_MASK].all())
