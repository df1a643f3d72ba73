"""PPO math against hand-computed numbers."""

import math

import pytest
import torch

from vla_rl.rl.ppo_math import (
    KLController,
    approx_kl,
    clipped_surrogate,
    decision_logp,
    exact_kl,
    explained_variance,
    gae,
    group_advantages,
    kl_k1,
    kl_k3,
    masked_mean,
    value_loss,
    whiten,
)

T = torch.tensor


def test_gae_on_a_hand_built_truncated_episode():
    # gamma 0.9, lambda 0.8; truncated at t=2, bootstrapped from V(s_3) = 3.0
    rewards, values, next_values = T([1.0, 0.0, 2.0]), T([0.5, 1.0, 1.5]), T([1.0, 1.5, 3.0])
    adv, ret = gae(rewards, values, next_values, terminated=T([0, 0, 0]), episode_end=T([0, 0, 1]), gamma=0.9, lam=0.8)
    # deltas: 1.4, 0.35, 3.2 ; A2 = 3.2, A1 = 0.35 + 0.72 * 3.2, A0 = 1.4 + 0.72 * A1
    torch.testing.assert_close(adv, T([1.4 + 0.72 * 2.654, 2.654, 3.2]))
    torch.testing.assert_close(ret, adv + values)


def test_gae_does_not_bootstrap_a_termination_nor_cross_episodes():
    rewards, values, next_values = T([1.0, 0.0, 2.0]), T([0.5, 1.0, 1.5]), T([1.0, 1.5, 3.0])
    adv, _ = gae(rewards, values, next_values, terminated=T([0, 0, 1]), episode_end=T([0, 0, 1]), gamma=0.9, lam=0.8)
    torch.testing.assert_close(adv, T([1.4 + 0.72 * 0.71, 0.71, 0.5]))  # delta_2 = 2 - 1.5
    # an episode that terminates at t=0 and a new one from t=1: A_0 = r_0 - V_0 only
    adv, _ = gae(rewards, values, next_values, terminated=T([1, 0, 1]), episode_end=T([1, 0, 1]), gamma=0.9, lam=0.8)
    assert adv[0].item() == pytest.approx(0.5)


def test_gae_with_lambda_and_gamma_one_gives_rewards_to_go():
    rewards = T([[1.0, 0.0], [0.0, 5.0], [2.0, 1.0]])  # two envs, time-major
    values = torch.randn(3, 2, generator=torch.Generator().manual_seed(0))
    next_values = torch.cat([values[1:], torch.zeros(1, 2)])  # V(s_{t+1}); the last is terminal
    _, ret = gae(rewards, values, next_values, terminated=T([[0, 0], [0, 0], [1, 1]]),
                 episode_end=T([[0, 0], [0, 0], [1, 1]]), gamma=1.0, lam=1.0)
    torch.testing.assert_close(ret, T([[3.0, 6.0], [2.0, 6.0], [2.0, 1.0]]))


def test_decision_logp_sums_the_tokens():
    torch.testing.assert_close(decision_logp(T([[-1.0, -2.0, -0.5], [0.0, -1.0, 0.0]])), T([-3.5, -1.0]))


def test_clipped_surrogate_inside_and_outside_the_clip():
    logp_old = torch.zeros(4)
    ratios = T([1.5, 0.5, 1.1, 0.5])
    adv = T([1.0, 1.0, -2.0, -1.0])
    loss, ratio, clipfrac = clipped_surrogate(ratios.log(), logp_old, adv, clip=0.2)
    # min(r A, clip(r) A): 1.2 (clipped), 0.5 (unclipped is smaller), -2.2 (inside), -0.8 (clipped)
    assert loss.item() == pytest.approx(-(1.2 + 0.5 - 2.2 - 0.8) / 4)
    torch.testing.assert_close(ratio, ratios)
    assert clipfrac.item() == pytest.approx(0.75)
    # the first ratio of an update is exactly 1: the loss is -mean(A), nothing clipped
    loss, ratio, clipfrac = clipped_surrogate(logp_old, logp_old, adv, clip=0.2)
    assert torch.equal(ratio, torch.ones(4)) and clipfrac.item() == 0.0 and loss.item() == pytest.approx(0.25)


def test_masked_rows_do_not_count():
    mask = T([True, True, False, False])
    loss, _, clipfrac = clipped_surrogate(T([1.5, 0.5, 9.0, 9.0]).log(), torch.zeros(4), T([1.0, 1.0, 1.0, 1.0]),
                                          0.2, mask)
    assert loss.item() == pytest.approx(-(1.2 + 0.5) / 2) and clipfrac.item() == 1.0
    assert masked_mean(T([1.0, 3.0, 100.0]), T([1, 1, 0])).item() == 2.0


def test_value_loss_clipped_and_unclipped():
    values, old, returns = T([1.0, 3.0]), T([0.0, 2.5]), T([2.0, 2.0])
    assert value_loss(values, old, returns, clip=0.5).item() == pytest.approx(0.5 * (2.25 + 1.0) / 2)
    assert value_loss(values, old, returns, clip=None).item() == pytest.approx(1.0 * 0.5)


def test_exact_kl_over_bins():
    p = torch.log_softmax(torch.randn(5, 256, generator=torch.Generator().manual_seed(0)), -1)
    q = torch.log_softmax(torch.randn(5, 256, generator=torch.Generator().manual_seed(1)), -1)
    expected = torch.distributions.kl_divergence(torch.distributions.Categorical(logits=p),
                                                 torch.distributions.Categorical(logits=q))
    torch.testing.assert_close(exact_kl(p, q), expected)
    assert torch.all(exact_kl(p, q) > 0) and torch.allclose(exact_kl(p, p), torch.zeros(5))


def test_k1_and_k3_are_unbiased_estimates_of_the_exact_kl():
    g = torch.Generator().manual_seed(0)
    p = torch.log_softmax(torch.randn(16, generator=g), -1)
    q = torch.log_softmax(p + 0.5 * torch.randn(16, generator=g), -1)
    samples = torch.multinomial(p.exp(), 400_000, replacement=True, generator=g)
    kl = exact_kl(p, q).item()
    assert kl_k1(p[samples], q[samples]).mean().item() == pytest.approx(kl, abs=0.01)
    k3 = kl_k3(p[samples], q[samples])
    assert k3.mean().item() == pytest.approx(kl, abs=0.01) and bool((k3 >= 0).all())


def test_approx_kl_between_old_and_new():
    assert approx_kl(torch.zeros(3), torch.zeros(3)).item() == 0.0
    assert approx_kl(torch.full((2,), math.log(2.0)), torch.zeros(2)).item() == pytest.approx(1.0 - math.log(2.0))


def test_explained_variance():
    y = T([1.0, 2.0, 4.0, 7.0])
    assert explained_variance(y, y) == pytest.approx(1.0)
    assert explained_variance(torch.full((4,), y.mean().item()), y) == pytest.approx(0.0)
    assert math.isnan(explained_variance(y, torch.ones(4)))


def test_whiten():
    x = whiten(T([1.0, 2.0, 3.0, 10.0]))
    assert x.mean().item() == pytest.approx(0.0, abs=1e-6) and x.std(unbiased=False).item() == pytest.approx(1.0, abs=1e-4)


def test_token_clipped_surrogate_averages_per_token_clipped_terms_over_the_decision():
    from vla_rl.rl.ppo_math import token_clipped_surrogate

    old = torch.zeros(2, 2)
    new = torch.log(T([[1.5, 1.0], [0.5, 1.1]]))  # decision 0: token ratios 1.5 (clipped at 1.2), 1.0
    adv = T([1.0, -2.0])
    loss, ratio, clipfrac = token_clipped_surrogate(new, old, adv, clip=0.2)
    # decision 0 (A = 1): min(1.5, 1.2) = 1.2 and 1.0 -> mean 1.1; decision 1 (A = -2): min(-1.0, -1.6) = -1.6 and
    # min(-2.2, -2.2) = -2.2 -> mean -1.9. Loss = -(1.1 - 1.9) / 2 = 0.4; tokens outside [0.8, 1.2]: 1.5 and 0.5.
    assert loss.item() == pytest.approx(0.4)
    assert clipfrac.item() == pytest.approx(0.5) and torch.allclose(ratio, new.exp())
    # the decision-level ratio of the same tokens: 1.5 x 1.0 and 0.5 x 1.1 (both clipped as a whole)
    d_loss, _, d_clip = clipped_surrogate(new.sum(-1), old.sum(-1), adv, clip=0.2)
    assert d_clip.item() == 1.0 and d_loss.item() == pytest.approx(-(1.2 - 2 * 0.8) / 2)
    masked, _, _ = token_clipped_surrogate(new, old, adv, clip=0.2, mask=T([True, False]))
    assert masked.item() == pytest.approx(-1.1)


def test_sequence_ratio_is_the_geometric_mean_of_token_ratios_and_does_not_grow_with_length():
    from vla_rl.rl.ppo_math import sequence_clipped_surrogate

    old = torch.zeros(2, 2)
    new = torch.log(T([[1.5, 1.0], [0.5, 1.1]]))
    adv = T([1.0, -2.0])
    loss, ratio, clipfrac = sequence_clipped_surrogate(new, old, adv, clip=0.2)
    # ratios sqrt(1.5) = 1.2247 (A = 1: clipped to 1.2) and sqrt(0.55) = 0.7416 (A = -2: min(-1.483, -1.6) = -1.6)
    assert torch.allclose(ratio, T([1.5 ** 0.5, 0.55 ** 0.5]))
    assert loss.item() == pytest.approx(-(1.2 - 1.6) / 2) and clipfrac.item() == 1.0
    # the same per-token change over 4x the tokens: the same ratio (the decision ratio would be its 4th power)
    _, long_ratio, _ = sequence_clipped_surrogate(new.repeat(1, 4), old.repeat(1, 4), adv, clip=0.2)
    assert torch.allclose(long_ratio, ratio)


def test_whiten_with_a_mask_uses_only_the_loss_rows():
    x, mask = T([1.0, 3.0, 100.0, 5.0, -50.0]), T([True, True, False, True, False])
    # loss rows 1, 3, 5: mean 3, population variance 8/3 -> (x - 3) / sqrt(8/3) there; the masked rows do not count
    w = whiten(x, mask)
    s = math.sqrt(8.0 / 3.0)
    assert torch.allclose(w[mask], T([-2 / s, 0.0, 2 / s]), atol=1e-6)
    assert not torch.allclose(whiten(x)[mask], w[mask])  # unmasked, the two outliers move every row


def test_kl_controller_fixed_and_adaptive():
    fixed = KLController(beta=0.05)
    assert fixed.update(kl=10.0, n_steps=1000) == 0.05
    adaptive = KLController(beta=0.1, target=0.01, horizon=10_000)
    assert adaptive.update(kl=0.05, n_steps=1000) == pytest.approx(0.1 * 1.02)  # error clipped to +0.2
    adaptive.load_state_dict({"beta": 0.1, "target": 0.01, "horizon": 10_000})
    assert adaptive.update(kl=0.009, n_steps=1000) == pytest.approx(0.1 * (1 - 0.1 * 0.1))  # error -0.1, unclipped
    adaptive.load_state_dict({"beta": 0.1, "target": 0.01, "horizon": 10_000})
    assert adaptive.update(kl=0.001, n_steps=1000) == pytest.approx(0.1 * (1 - 0.2 * 0.1))  # error -0.9 -> -0.2
    assert adaptive.state_dict() == {"beta": pytest.approx(0.098), "target": 0.01, "horizon": 10_000}
    with pytest.raises(ValueError, match="beta"):
        KLController(beta=-0.1)


def test_group_advantages_centre_on_the_group_and_scale_by_the_batch():
    returns = T([2.0, 0.0, 1.0, 1.0, 5.0, 3.0, 9.0])
    groups = T([7, 7, 8, 8, 9, 9, 7])
    valid = T([True, True, True, True, True, False, False])
    # group 7: 2, 0 (the invalid 9 does not count) -> +1, -1; group 8: equal returns -> 0, 0;
    # group 9: one valid episode, no baseline -> 0. Scale: sqrt(mean of 1, 1, 0, 0) = sqrt(0.5).
    s = math.sqrt(0.5)
    assert torch.allclose(group_advantages(returns, groups, valid), T([1 / s, -1 / s, 0.0, 0.0, 0.0, 0.0, 0.0]))
    # every group alike (all succeeded or all failed the same): nothing to learn, no division by zero
    assert torch.equal(group_advantages(T([1.0, 1.0]), T([3, 3]), T([True, True])), T([0.0, 0.0]))
