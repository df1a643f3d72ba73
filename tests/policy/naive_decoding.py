"""A reference decoder for the KV-cache tests: every action token re-scored by a full forward over the prompt and the
tokens so far (no cache), greedily. Positions continue along their last axis, so 1-D and M-RoPE (3-D) positions both
work."""

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
