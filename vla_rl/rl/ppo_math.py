"""PPO math as pure functions (CleanRL's names and order), shared by the RLlib learner and tests.

The PPO "action" is one policy decision: the K×D action tokens that decode to one chunk of K env
steps. Its log-probability is the **sum of its token log-probs** (`decision_logp`): the chunk is
executed as one unit and rewarded as one, so the importance ratio is π_new(chunk)/π_old(chunk)
and one advantage multiplies it. Per-token ratios would instead clip each token on its own and
give every token the whole decision's advantage — K·D times the credit of one action, unless the
per-token terms are averaged over the decision (`token_clipped_surrogate`, `--ratio token`): with many
tokens per decision (K·D = 20 at K = 5 on Meta-World) the summed log-ratio compounds small per-token
changes, and after the first minibatch most decisions clip (measured: clipfrac 0.7-0.8, approx_kl
15-72 per decision) — or normalised by length (`sequence_clipped_surrogate`, `--ratio sequence`, GSPO). The KL
penalty to the reference is different: it is a property of each token's 256-way distribution,
computed exactly per token and summed over the decision (`exact_kl`).

Two different KLs, not to be confused in logs:
- `exact_kl` / `kl_k1` / `kl_k3`: KL(π‖π_ref), current policy vs the frozen reference (adapters
  off) — what the β penalty controls (`kl/` metrics);
- `approx_kl`: old (sampling) vs new policy within one update — how far an update moved
  (`policy/approx_kl`; Schulman's k3 estimator, as CleanRL logs it).

Every mean takes an optional boolean `mask` (RLlib marks the bootstrap row of each episode chunk
as not-a-loss-row).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    if mask is None:
        return x.mean()
    mask = mask.to(x.dtype)
    return (x * mask).sum() / mask.sum().clamp(min=1.0)


def gae(rewards: torch.Tensor, values: torch.Tensor, next_values: torch.Tensor, terminated: torch.Tensor,
        episode_end: torch.Tensor, gamma: float, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over time-major arrays `(T, ...)`; returns (advantages, returns).

    `next_values[t]` is V(s_{t+1}) — at a time-limit truncation, the value of the final observation
    (bootstrap), at a termination ignored. `terminated[t]` stops bootstrapping; `episode_end[t]`
    (terminated or truncated) cuts the λ-trace so advantages never leak across episodes.
        δ_t = r_t + γ (1 − term_t) V(s_{t+1}) − V(s_t),   A_t = δ_t + γ λ (1 − end_t) A_{t+1}
    """
    not_term, not_end = 1.0 - terminated.to(values.dtype), 1.0 - episode_end.to(values.dtype)
    deltas = rewards + gamma * not_term * next_values - values
    advantages = torch.zeros_like(values)
    running = torch.zeros_like(values[0])
    for t in reversed(range(values.shape[0])):
        running = deltas[t] + gamma * lam * not_end[t] * running
        advantages[t] = running
    return advantages, advantages + values


def group_advantages(returns: torch.Tensor, groups: torch.Tensor, valid: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Group-relative advantages of whole episodes (GRPO; SimpleVLA-RL for VLAs): one value per episode.

    Episodes with the same `groups` id started from the same initial state. An episode's advantage is its
    return minus the mean return of the valid episodes of its group, then divided by the standard deviation
    of those centred values over every counted episode of the batch (one scale for the batch, as Dr. GRPO
    recommends over GRPO's per-group std, which blows up groups whose returns barely differ).
    0 for an episode that is not `valid` (cut at the rollout boundary: its outcome is unknown) or whose
    group has fewer than two valid episodes (no baseline from the same start).
    """
    returns = returns.to(torch.float64)
    out = torch.zeros_like(returns)
    counted = torch.zeros_like(valid, dtype=torch.bool)
    for g in torch.unique(groups[valid]):
        members = valid & (groups == g)
        if int(members.sum()) < 2:
            continue
        out[members] = returns[members] - returns[members].mean()
        counted |= members
    if int(counted.sum()) > 1:
        scale = out[counted].pow(2).mean().sqrt()  # the centred values have mean 0 over the counted episodes
        out = out / scale if float(scale) > eps else torch.zeros_like(out)
    return out.to(torch.float32)


def decision_logp(token_logp: torch.Tensor) -> torch.Tensor:
    """(B, K·D) per-token log-probs -> (B,) log-prob of the whole decision (see the module docstring)."""
    return token_logp.sum(-1)


def whiten(x: torch.Tensor, mask: torch.Tensor | None = None, eps: float = 1e-8) -> torch.Tensor:
    """Zero-mean, unit-std advantages (over the masked rows), as every PPO implementation does per minibatch."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    return (x - mean) / torch.sqrt(var + eps)


def clipped_surrogate(logp_new: torch.Tensor, logp_old: torch.Tensor, advantages: torch.Tensor, clip: float,
                      mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """PPO's policy loss −E[min(r·A, clip(r, 1−ε, 1+ε)·A)] with r = exp(logp_new − logp_old).

    Returns (loss, ratio, clipfrac): clipfrac is the fraction of rows where |r − 1| > ε.
    """
    ratio = torch.exp(logp_new - logp_old)
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1.0 - clip, 1.0 + clip) * advantages
    loss = -masked_mean(torch.minimum(unclipped, clipped), mask)
    clipfrac = masked_mean(((ratio - 1.0).abs() > clip).to(ratio.dtype), mask)
    return loss, ratio, clipfrac


def token_clipped_surrogate(token_logp_new: torch.Tensor, token_logp_old: torch.Tensor, advantages: torch.Tensor,
                            clip: float, mask: torch.Tensor | None = None
                            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """PPO's policy loss with one ratio per action token (B, K·D): each token's clipped term takes its decision's
    advantage, and the loss is the mean over the decision's tokens, then over the (masked) decisions — so a decision
    weighs as much as with one ratio, but a change of many tokens is not compounded into one ratio that clips the
    whole decision (SimpleVLA-RL / torchrl vla_grpo use per-token ratios over OpenVLA-OFT's 56-token chunks).
    Returns (loss, per-token ratio, clipfrac over tokens)."""
    ratio = torch.exp(token_logp_new - token_logp_old)
    adv = advantages[:, None]
    per_token = torch.minimum(ratio * adv, torch.clamp(ratio, 1.0 - clip, 1.0 + clip) * adv).mean(-1)
    loss = -masked_mean(per_token, mask)
    clipfrac = masked_mean(((ratio - 1.0).abs() > clip).to(ratio.dtype).mean(-1), mask)
    return loss, ratio, clipfrac


def sequence_clipped_surrogate(token_logp_new: torch.Tensor, token_logp_old: torch.Tensor, advantages: torch.Tensor,
                               clip: float, mask: torch.Tensor | None = None):
    """PPO's policy loss with one length-normalised ratio per decision (GSPO, Zheng et al. 2025): r = exp(mean over
    the K·D tokens of log π_new − log π_old), the geometric mean of the per-token ratios. One ratio, as with
    "decision", but its size does not grow with the number of tokens, so ε means the same at K·D = 7 or 56 (GSPO
    clips at ε ≈ 3e-4 to 4e-4, far tighter than token PPO's 0.2). Returns (loss, ratio (B,), clipfrac)."""
    return clipped_surrogate(token_logp_new.mean(-1), token_logp_old.mean(-1), advantages, clip, mask)


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, clip: float | None,
               mask: torch.Tensor | None = None) -> torch.Tensor:
    """½·E[(V − R)²]; with `clip`, ½·E[max((V − R)², (V_old + clip(V − V_old, ±clip) − R)²)] (PPO2's)."""
    err = (values - returns) ** 2
    if clip is not None:
        v_clipped = old_values + torch.clamp(values - old_values, -clip, clip)
        err = torch.maximum(err, (v_clipped - returns) ** 2)
    return 0.5 * masked_mean(err, mask)


def exact_kl(logp_p: torch.Tensor, logp_q: torch.Tensor) -> torch.Tensor:
    """KL(p‖q) = Σ_b p_b (log p_b − log q_b) over the last axis (the 256 bins): one value per token."""
    return (logp_p.exp() * (logp_p - logp_q)).sum(-1)


def kl_k1(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """k1 = log π − log π_ref of the sampled tokens: unbiased for KL(π‖π_ref), high variance, can be < 0."""
    return logp - ref_logp


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """k3 = e^(−r) − 1 + r with r = log π − log π_ref: unbiased, ≥ 0, low variance (Schulman)."""
    r = logp - ref_logp
    return torch.exp(-r) - 1.0 + r


def approx_kl(logp_new: torch.Tensor, logp_old: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """E[(r − 1) − log r] with r = π_new/π_old on samples from π_old: how far an update moved the policy."""
    log_ratio = logp_new - logp_old
    return masked_mean(torch.exp(log_ratio) - 1.0 - log_ratio, mask)


def explained_variance(predicted: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """1 − Var[target − predicted] / Var[target]: 1 is perfect, 0 no better than the mean, < 0 worse; nan if Var = 0."""
    mean_t = masked_mean(target, mask)
    var_t = masked_mean((target - mean_t) ** 2, mask)
    resid = target - predicted
    var_r = masked_mean((resid - masked_mean(resid, mask)) ** 2, mask)
    return float("nan") if float(var_t) == 0.0 else float(1.0 - var_r / var_t)


@dataclass
class KLController:
    """β of the KL-to-reference penalty: fixed (default) or adaptive toward `target` nats per token.

    Adaptive (Ziegler et al. 2019, as TRL / OpenRLHF): error = clip(KL/target − 1, −0.2, 0.2),
    β ← β·(1 + error·n_steps/horizon) after each update on `n_steps` samples.
    """

    beta: float
    target: float | None = None
    horizon: int = 10_000

    def __post_init__(self):
        if self.beta < 0 or not math.isfinite(self.beta):
            raise ValueError(f"beta={self.beta} must be a finite number >= 0")
        if self.target is not None and self.target <= 0:
            raise ValueError(f"target={self.target} must be > 0 (or None for a fixed beta)")
        if self.horizon < 1:
            raise ValueError(f"horizon={self.horizon} must be >= 1")

    def update(self, kl: float, n_steps: int) -> float:
        if self.target is not None and math.isfinite(kl):
            error = min(max(kl / self.target - 1.0, -0.2), 0.2)
            self.beta *= 1.0 + error * n_steps / self.horizon
        return self.beta

    def state_dict(self) -> dict:
        return {"beta": self.beta, "target": self.target, "horizon": self.horizon}

    def load_state_dict(self, state: dict) -> None:
        self.beta, self.target, self.horizon = float(state["beta"]), state["target"], int(state["horizon"])
