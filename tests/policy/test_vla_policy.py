"""VLAPolicy: act/evaluate consistency, LoRA + reference, trainable set, batching invariance."""

import numpy as np
import pytest
import torch
from family_checks import check_scores_do_not_depend_on_batch_composition

from vla_rl.policy import PolicyError
from vla_rl.policy.images import normalize_images


def _perturb(module, seed=1, scale=0.5):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)


@pytest.mark.parametrize("family", ["llava", "idefics3", "paligemma", "qwen2_5_vl"])
@pytest.mark.parametrize("chunk_size", [1, 3])
def test_evaluate_logp_equals_act_logp(tiny_policy, obs_batch, family, chunk_size):
    policy = tiny_policy(family=family, chunk_size=chunk_size)
    _perturb(policy.value_head)  # zero-initialised last layer would make the value check vacuous
    obs = obs_batch(6)
    out = policy.act(obs, temperature=1.3, generator=torch.Generator().manual_seed(0))
    assert out.tokens.shape == (6, chunk_size * 2)
    assert out.actions.shape == (6, chunk_size, 2)
    ev = policy.evaluate(obs, out.tokens, temperature=1.3)
    torch.testing.assert_close(ev.logp, out.logp, atol=1e-5, rtol=0)
    torch.testing.assert_close(ev.value, out.value, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.logp.sum(-1), out.logp_sum)
    assert torch.all(ev.entropy > 0) and torch.all(ev.entropy <= np.log(256) + 1e-4)


def test_scores_do_not_depend_on_batch_composition(tiny_policy, obs_batch):
    """Fixed-length prompts + positions from the mask: a sample scores the same in any minibatch."""
    check_scores_do_not_depend_on_batch_composition(tiny_policy(), obs_batch(6))


def test_greedy_is_deterministic_and_sampling_follows_the_generator(tiny_policy, obs_batch):
    policy = tiny_policy()
    obs = obs_batch(5)
    assert torch.equal(policy.act(obs, greedy=True).tokens, policy.act(obs, greedy=True).tokens)
    a = policy.act(obs, generator=torch.Generator().manual_seed(7)).tokens
    b = policy.act(obs, generator=torch.Generator().manual_seed(7)).tokens
    assert torch.equal(a, b)
    off = policy.action_tokenizer.token_offset
    assert off == policy.model.get_output_embeddings().weight.shape[0] - 256  # the last 256 ids
    assert int(a.min()) >= off


def test_actions_are_the_bin_centres_of_the_tokens(tiny_policy, obs_batch):
    policy = tiny_policy(chunk_size=2)
    out = policy.act(obs_batch(3), greedy=True)
    expected = policy.action_tokenizer.decode(out.tokens.numpy().reshape(3, 2, 2))
    np.testing.assert_array_equal(out.actions, expected)
    assert torch.equal(policy.tokens_for(out.actions), out.tokens)


def test_lora_reference_equals_base_and_only_lora_and_value_head_train(tiny_policy, obs_batch):
    policy = tiny_policy()
    obs = obs_batch(4)
    tokens = policy.act(obs, generator=torch.Generator().manual_seed(0)).tokens
    base_logp = policy.evaluate(obs, tokens).logp.detach()
    policy.add_lora(r=4, alpha=8)
    trainable = {n for n, p in policy.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or n.startswith("value_head.") for n in trainable)
    assert any(n.startswith("value_head.") for n in trainable)
    # A LoRA update moves the policy away from the base; the reference stays the base exactly.
    _perturb(torch.nn.ModuleList([m for n, m in policy.named_modules() if n.endswith("lora_B.default")]), scale=0.3)
    moved = policy.evaluate(obs, tokens).logp.detach()
    assert (moved - base_logp).abs().max() > 1e-3
    with policy.reference():
        ref = policy.evaluate(obs, tokens).logp.detach()
    torch.testing.assert_close(ref, base_logp, atol=1e-6, rtol=0)
    torch.testing.assert_close(policy.evaluate(obs, tokens).logp.detach(), moved)  # adapters back on


def test_every_trainable_parameter_changes_after_one_step(tiny_policy, obs_batch):
    policy = tiny_policy(chunk_size=2)
    policy.add_lora(r=4, alpha=8)
    obs = obs_batch(4)
    tokens = policy.act(obs, generator=torch.Generator().manual_seed(0)).tokens
    params = {n: p for n, p in policy.named_parameters() if p.requires_grad}
    before = {n: p.detach().clone() for n, p in params.items()}
    opt = torch.optim.AdamW(params.values(), lr=1e-3)
    ev = policy.evaluate(obs, tokens)
    loss = -(ev.logp.sum(-1) * torch.tensor([1.0, -1.0, 0.5, 2.0])).mean() + (ev.value - 1.0).pow(2).mean()
    loss.backward()
    opt.step()
    unchanged = [n for n, p in params.items() if torch.equal(p, before[n])]
    assert not unchanged, f"parameters that did not change: {unchanged}"


def test_full_finetuning_trains_the_state_projection(tiny_policy, obs_batch):
    policy = tiny_policy()
    obs = obs_batch(3)
    tokens = policy.act(obs, greedy=True).tokens
    policy.evaluate(obs, tokens).logp.sum().backward()
    assert policy.state_proj.weight.grad is not None and policy.state_proj.weight.grad.abs().sum() > 0


def test_state_changes_the_action_distribution(tiny_policy, obs_batch):
    policy = tiny_policy()
    obs = obs_batch(2)
    tokens = policy.act(obs, greedy=True).tokens
    other = dict(obs, state=obs["state"] + 1.0)
    assert (policy.evaluate(obs, tokens).logp - policy.evaluate(other, tokens).logp).abs().max() > 1e-4


def test_fast_image_path_matches_the_processor(tiny_policy, obs_batch):
    for family in ("llava", "idefics3", "paligemma"):
        policy = tiny_policy(family=family)
        image = obs_batch(1)["image"]
        ip = policy.processor.image_processor
        ours = normalize_images(torch.as_tensor(image), 64, ip.image_mean, ip.image_std, torch.float32)
        theirs = policy.processor(text=["<image>x"], images=policy.family.processor_images(image[0]),
                                  return_tensors="pt")["pixel_values"].reshape(1, 3, 64, 64)
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


def test_bad_inputs_are_named(tiny_policy, obs_batch):
    policy = tiny_policy()
    obs = obs_batch(2)
    with pytest.raises(PolicyError, match=r"obs\['image'\] has shape \(2, 32, 32, 3\).*64x64"):
        policy.act(dict(obs, image=obs["image"][:, :32, :32]))
    with pytest.raises(PolicyError, match=r"obs\['state'\]"):
        policy.act(dict(obs, state=np.zeros((2, 5), np.float32)))
    with pytest.raises(PolicyError, match="NaN"):
        policy.act(dict(obs, state=np.full((2, 2), np.nan, np.float32)))
    with pytest.raises(PolicyError, match="lacks 'instruction'"):
        policy.act({k: v for k, v in obs.items() if k != "instruction"})
    with pytest.raises(PolicyError, match="K\\*D"):
        policy.evaluate(obs, torch.zeros((2, 5), dtype=torch.long))
    with pytest.raises(PolicyError, match="action-bin ids"):
        policy.evaluate(obs, torch.zeros((2, 2), dtype=torch.long))
    with pytest.raises(PolicyError, match="temperature"):
        policy.act(obs, temperature=0.0)
    with pytest.raises(PolicyError, match=r"expected \(B, 1, 2\)"):
        policy.tokens_for(np.zeros((2, 3)))


def test_lora_on_the_vision_tower_is_optional(tiny_policy):
    lm_only, with_vision = tiny_policy(), tiny_policy()
    lm_only.add_lora(r=2, alpha=4)
    with_vision.add_lora(r=2, alpha=4, include_vision=True)
    vision = lambda p: {n for n, q in p.named_parameters() if q.requires_grad and "lora_" in n and "vision" in n}  # noqa: E731
    assert not vision(lm_only) and vision(with_vision)


def test_bfloat16_policy_acts_and_scores_consistently(tiny_policy, obs_batch):
    from vla_rl.policy import ActionTokenizer, build_policy

    at = ActionTokenizer((-1.0, -0.5), (1.0, 0.5))
    policy = build_policy(at, state_dim=2, image_size=(64, 64), preset="tiny", dtype="bfloat16")
    assert policy.base_model.dtype == torch.bfloat16
    obs = obs_batch(4)
    out = policy.act(obs, generator=torch.Generator().manual_seed(0))
    ev = policy.evaluate(obs, out.tokens)
    assert ev.logp.dtype == torch.float32  # log-softmax in fp32 whatever the weights
    # bf16 cached vs uncached attention round differently; the gap stays far below a token's log-prob.
    torch.testing.assert_close(ev.logp, out.logp, atol=0.05, rtol=0)
