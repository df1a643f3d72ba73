"""Seeded categorical sampling (vla_rl/policy/sampling.py): the masked distribution, and a stream that only
the CPU generator decides (so a GPU runner draws what a CPU runner would)."""

from __future__ import annotations

import pytest
import torch
from scipy.stats import chisquare

from vla_rl.policy.sampling import sample_categorical


def test_draws_follow_the_distribution_and_never_a_masked_bin():
    probs = torch.tensor([0.0, 0.1, 0.0, 0.6, 0.3, 0.0])
    logp = probs.log().expand(100_000, -1)  # -inf on the masked bins, as the bin mask gives
    draws = sample_categorical(logp, torch.Generator().manual_seed(0))
    counts = torch.bincount(draws, minlength=6)
    assert counts[[0, 2, 5]].sum() == 0
    observed = counts[[1, 3, 4]].double().numpy()
    p = probs[[1, 3, 4]].double().numpy()
    expected = p / p.sum() * observed.sum()
    assert chisquare(observed, expected).pvalue > 1e-3


def test_the_stream_is_the_cpu_generators_uniforms_by_inverse_cdf():
    logp = torch.randn(8, 3, 256, generator=torch.Generator().manual_seed(1)).log_softmax(-1)
    g = torch.Generator().manual_seed(5)
    u = torch.rand(8, 3, generator=torch.Generator().manual_seed(5))
    expected = (logp.exp().cumsum(-1) <= u[..., None]).sum(-1)  # the first bin whose CDF passes u
    got = sample_categorical(logp, g)
    assert torch.equal(got, expected)
    assert torch.equal(sample_categorical(logp.double(), torch.Generator().manual_seed(5)), got)  # precision-free
    # a second call continues the stream (a saved generator state resumes it exactly)
    state = g.get_state()
    nxt = sample_categorical(logp, g)
    assert torch.equal(sample_categorical(logp, torch.Generator().set_state(state)), nxt)


def test_unnormalised_log_probs_sample_the_same_as_normalised():
    logp = torch.randn(64, 256, generator=torch.Generator().manual_seed(2))
    a = sample_categorical(logp, torch.Generator().manual_seed(9))
    b = sample_categorical(logp.log_softmax(-1), torch.Generator().manual_seed(9))
    assert (a != b).sum() <= 1  # equal up to a uniform landing on a rounding-moved bin boundary


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_cuda_sampler_draws_the_cpu_stream():
    logp = torch.randn(32, 35, 256, generator=torch.Generator().manual_seed(3)).log_softmax(-1)
    cpu = sample_categorical(logp, torch.Generator().manual_seed(4))
    gpu = sample_categorical(logp.cuda(), torch.Generator().manual_seed(4))
    assert gpu.device.type == "cuda" and (gpu.cpu() != cpu).sum() <= 2
