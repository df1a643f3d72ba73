"""Checks every VLA family passes: a reference decoder for the KV-cache tests (every action token re-scored by a full
forward over the prompt and the tokens so far, no cache, greedily; positions continue along their last axis, so 1-D
and M-RoPE (3-D) positions both work), LoRA on the LM projections with an adapter-free reference, and scores that do
not depend on which minibatch a sample lands in."""

from __future__ import annotations

import torch


def naive_greedy(policy, obs) -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens, log-probs), each (B, K·D), of greedy decoding without a KV cache."""
    x = policy.prepare(obs)
    embeds, mask, pos = x["embeds"], x["mask"], x["positions"]
    tokens, logps = [], []
    with torch.no_grad():
        for _ in range(policy.spec.n_action_tokens):
            o = policy._forward(embeds, mask, pos, x["pixels"], n_action=len(tokens))
            logp_all = policy._bin_logp(o.last_hidden_state[:, -1], 1.0)
            b = logp_all.argmax(-1)
            tokens.append(b + policy.action_tokenizer.token_offset)
            logps.append(logp_all.gather(-1, b[:, None]).squeeze(-1))
            embeds = torch.cat([embeds, policy.model.get_input_embeddings()(tokens[-1][:, None])], 1)
            mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], 1)
            pos = torch.cat([pos, pos[..., -1:] + 1], -1)
    return torch.stack(tokens, 1), torch.stack(logps, 1)


def check_scores_do_not_depend_on_batch_composition(policy, obs) -> None:
    """Fixed-length prompts + positions from the mask: samples 4 and 1 of a 6-sample `act` batch score the same when
    the learner evaluates them as a minibatch of their own."""
    out = policy.act(obs, generator=torch.Generator().manual_seed(3))
    sub = {k: v[[4, 1]] for k, v in obs.items()}
    torch.testing.assert_close(policy.evaluate(sub, out.tokens[[4, 1]]).logp, out.logp[[4, 1]], atol=1e-5, rtol=0)


LM_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def check_lora_on_lm_projections(policy, obs) -> None:
    """LoRA (r 4) wraps every LM projection of every layer and nothing else; once its B matrices move, the log-probs
    move, and `reference()` gives back the adapter-free ones exactly."""
    tokens = policy.act(obs, generator=torch.Generator().manual_seed(0)).tokens
    base_logp = policy.evaluate(obs, tokens).logp.detach()
    policy.add_lora(r=4, alpha=8)
    wrapped = {n.split(".base_layer")[0] for n, _ in policy.model.named_modules() if n.endswith(".lora_A")}
    layers = policy.base_model.config.text_config.num_hidden_layers
    assert len(wrapped) == layers * len(LM_PROJECTIONS)
    assert all(".language_model.layers." in n and n.rsplit(".", 2)[-2] in LM_PROJECTIONS for n in wrapped)
    with torch.no_grad():
        for n, p in policy.model.named_parameters():
            if "lora_B" in n:
                p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)) * 0.3)
    assert (policy.evaluate(obs, tokens).logp.detach() - base_logp).abs().max() > 1e-3
    with policy.reference():
        torch.testing.assert_close(policy.evaluate(obs, tokens).logp.detach(), base_logp, atol=1e-6, rtol=0)


def check_unpadded_batch_scores_like_act(family: str, obs_batch) -> None:
    """A batch whose prompts need no padding (one instruction, `max_prompt_tokens` = its text length) scores its own
    samples exactly as sampled — the case where transformers may drop the attention mask altogether."""
    from vla_rl.policy import ActionTokenizer, build_policy

    at = ActionTokenizer((-1.0, -0.5), (1.0, 0.5))
    probe = build_policy(at, state_dim=2, image_size=(64, 64), family=family, preset="tiny")
    obs = {k: v[[2, 2, 2]] for k, v in obs_batch(3).items()}  # one instruction: every prompt the same length
    ids = probe._prompt_ids(probe._instruction_text(obs["instruction"][0]))
    n_text = sum(i != probe.base_model.config.image_token_id for i in ids)
    policy = build_policy(at, state_dim=2, image_size=(64, 64), family=family, preset="tiny", chunk_size=2,
                          max_prompt_tokens=n_text)
    assert bool(policy.prepare(obs)["mask"].all())
    out = policy.act(obs, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(policy.evaluate(obs, out.tokens).logp, out.logp, atol=1e-5, rtol=0)
