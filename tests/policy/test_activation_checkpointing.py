"""Activation checkpointing of the learner's forward (`VLAPolicy.enable_activation_checkpointing`): the layers
really recompute in the backward, and log-probs, values and LoRA gradients stay the same."""

from __future__ import annotations

import pytest
import torch


@pytest.mark.parametrize("family", ["llava", "idefics3", "qwen2_5_vl"])
def test_checkpointed_evaluate_recomputes_layers_with_the_same_gradients(tiny_policy, obs_batch, family):
    from transformers.modeling_layers import GradientCheckpointingLayer

    policy = tiny_policy(family=family, chunk_size=2)
    policy.add_lora(r=4, alpha=8)
    for n, p in policy.named_parameters():
        p.requires_grad_("lora_" in n or n.startswith("value_head."))
    policy.eval()
    obs = obs_batch(3)
    tokens = policy.act(obs, generator=torch.Generator().manual_seed(0)).tokens
    layer = next(m for n, m in policy.model.named_modules() if isinstance(m, GradientCheckpointingLayer)
                 and ("language_model" in n or "text_model" in n))
    calls = []
    for sub in (layer.self_attn, layer.mlp):  # inside the layer's forward: seen again when the backward recomputes
        sub.register_forward_hook(lambda *a: calls.append(1))

    def forward_calls_in_backward(**_) -> tuple:
        calls.clear()
        out = policy.evaluate(obs, tokens)
        seen = len(calls)
        policy.zero_grad(set_to_none=True)
        (out.logp.sum() + out.value.sum()).backward()
        return out, len(calls) - seen, {n: p.grad.clone() for n, p in policy.named_parameters() if p.grad is not None}

    plain, plain_recomputed, plain_grads = forward_calls_in_backward()
    policy.enable_activation_checkpointing()
    ckpt, ckpt_recomputed, ckpt_grads = forward_calls_in_backward()
    assert plain_recomputed == 0 and ckpt_recomputed >= 1  # the layer ran again in the backward
    assert torch.equal(plain.logp, ckpt.logp) and torch.equal(plain.value, ckpt.value)
    assert plain_grads.keys() == ckpt_grads.keys() and any("lora_B" in k for k in plain_grads)
    for k in plain_grads:
        torch.testing.assert_close(ckpt_grads[k], plain_grads[k], rtol=1e-5, atol=1e-7)
    assert not any(m.training for m in policy.modules())  # eval mode everywhere afterwards
    with torch.no_grad():  # sampling and scoring without gradients never recompute
        calls.clear()
        policy.evaluate(obs, tokens)
    assert len(calls) == 2  # self_attn and mlp once each
