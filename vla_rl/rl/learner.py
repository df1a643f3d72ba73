"""The PPO learner: clipped surrogate + value loss + β·KL(π‖π_ref), on LoRA and the value head only.

Loss per decision (masked mean over the real rows of the batch; RLlib appends one bootstrap row
per episode chunk, masked out by LOSS_MASK):

    loss = clipped_surrogate(logp_new, logp_old, A)         decision log-prob = Σ over K·D tokens
         + vf_coef · ½(V − R)²                              R = GAE value targets (RLlib's GAE)
         + β · Σ_tokens KL(π(·|s, a<i) ‖ π_ref(·|s, a<i))    exact over the 256 bins
         − entropy_coef · mean token entropy

The reference is the same network with its adapters disabled (`VLAPolicy.reference()`, no second
copy); its bin distributions are computed once per training batch, without grad, by the
`ReferenceBinLogp` learner-connector piece, not once per minibatch and epoch — on every loss row when the KL can
enter the loss, on 256 evenly spaced rows when β is fixed at 0 and the KL is only logged. β comes from a
`KLController` (fixed by default, adaptive toward `kl_target` nats per token if set); its state is
part of the learner's checkpointed state.

Two AdamW optimizers: LoRA at `lr`, the critic (the value head, or the privileged critic) at `vf_lr` (RLlib writes one lr into all groups
of an optimizer, so a second lr needs a second optimizer). Global-norm gradient clipping is
RLlib's (`grad_clip`). A step whose loss or gradients hold NaN/inf is skipped — nothing applied,
the optimizers' moments untouched — and counted in `losses/skipped_steps`.

Settings: `LearnerSettings` (vla_rl/rl/learner_settings.py) in `learner_config_dict` — ratio ("decision": one PPO
ratio per decision, the sum of its K·D token log-ratios; "token": one per token, averaged over the decision —
`ppo_math.token_clipped_surrogate`; "sequence": one per decision, length-normalised, GSPO — `sequence_clipped_surrogate`), the two lrs, β and its controller, target_kl (early stop: once a minibatch's k3
KL per token to the sampler exceeds 1.5 x target_kl, the update's remaining steps leave LoRA alone; logged as
policy/kl_stopped_steps), critic_warmup (updates that train only the value loss, so a fresh value head does not feed
noise advantages to a good BC policy), ...; vf_coef and entropy_coef are RLlib's `vf_loss_coeff` / `entropy_coeff`.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from ray.rllib.algorithms.ppo.torch.ppo_torch_learner import PPOTorchLearner
from ray.rllib.connectors.learner import GeneralAdvantageEstimation
from ray.rllib.core.columns import Columns
from ray.rllib.evaluation.postprocessing import Postprocessing

from vla_rl.rl import ppo_math
from vla_rl.rl.connectors import (
    REF_BIN_LOGP,
    REF_ROWS,
    REF_TOKEN_LOGP,
    Advantages,
    DropBootstrapRows,
    EpisodeOutcomes,
    ReferenceBinLogp,
    ShuffledAdvantages,
    ShuffleRows,
    unwrap,
)
from vla_rl.rl.learner_settings import LearnerSettings
from vla_rl.rl.module import BIN_LOGP, ENTROPY, SAMPLED_TOKEN_LOGP, TOKEN_LOGP, is_value_param

KL_STATE = "vla_kl_controller"

class VLAPPOLearner(PPOTorchLearner):
    def build(self) -> None:
        self.settings = cfg = LearnerSettings.of(self.config)  # before super().build(): it configures the optimizers
        super().build()
        if math.isfinite(float(self.config.vf_clip_param)):
            raise ValueError(f"vf_clip_param={self.config.vf_clip_param}: the VLA learner does not clip the value loss "
                             "— leave it infinite (vla_rl.rl.algorithm.build_config does)")
        self.kl_controller = ppo_math.KLController(
            beta=cfg.beta, target=cfg.kl_target or None, horizon=cfg.kl_horizon)
        self._first_minibatch = True
        self._kl_stopped = False  # target_kl reached in this update: no more policy steps until the next one
        self.updates_done = 0  # learner updates (iterations) so far; checkpointed
        self._kl_sum, self._kl_rows, self._kl_samples, self._epochs = 0.0, 0, 0, 1
        # RLlib's GAE gives way to the project's (masked whitening, the group estimator); the reference distributions
        # are computed once per batch before it. Learned rewards arrive on the episodes (VLAPPO._relabel, driver).
        group = cfg.group_size > 1  # group-relative advantages replace GAE's (the value targets stay)
        if group:
            self._learner_connector.prepend(EpisodeOutcomes())
        self._learner_connector.insert_before(GeneralAdvantageEstimation, Advantages(
            gamma=self.config.gamma, lam=self.config.lambda_, estimator="group" if group else "gae",
            critic_gate=cfg.critic_gate))
        self._learner_connector.remove(GeneralAdvantageEstimation)
        if cfg.kl_reference:  # off only in the memory benchmark's "without reference" arm
            self._learner_connector.insert_before(Advantages, ReferenceBinLogp(
                chunk=cfg.ref_chunk, temperature=cfg.temperature, max_rows=0 if cfg.kl_in_loss else cfg.ref_log_rows))
        self._update_indexed = []  # pieces whose random draws depend on (seed, update index): exact resume
        if cfg.shuffle_advantages:
            self._update_indexed.append(ShuffledAdvantages(seed=cfg.seed))
            self._learner_connector.append(self._update_indexed[-1])
        self._learner_connector.append(DropBootstrapRows())
        self._row_shuffle = ShuffleRows(seed=cfg.seed)  # the first epoch's minibatches sample the batch too
        self._update_indexed.append(self._row_shuffle)
        self._learner_connector.append(self._row_shuffle)
        names = [type(p).__name__ for p in self._learner_connector.connectors]
        if names.index("Advantages") != len(names) - 3 - int(cfg.shuffle_advantages):
            raise RuntimeError(f"learner pipeline out of order: {names}")

    # --- optimizers: LoRA and the value head, each with its own lr ---------------------------------
    def configure_optimizers_for_module(self, module_id, config=None) -> None:
        module = unwrap(self._module[module_id])
        named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
        lora = [p for n, p in named if not is_value_param(n)]
        head = [p for n, p in named if is_value_param(n)]
        lr, vf_lr = self.settings.lr, self.settings.vf_lr
        self.register_optimizer(module_id=module_id, optimizer_name="lora",
                                optimizer=torch.optim.AdamW(lora, lr=lr, weight_decay=0.0), params=lora,
                                lr_or_lr_schedule=lr)
        self.register_optimizer(module_id=module_id, optimizer_name="value_head",
                                optimizer=torch.optim.AdamW(head, lr=vf_lr, weight_decay=0.0), params=head,
                                lr_or_lr_schedule=vf_lr)

    # --- the loss ----------------------------------------------------------------------------------
    def compute_loss_for_module(self, *, module_id, config, batch, fwd_out):
        """PPO's clipped surrogate (per decision, token or sequence ratio) + vf_coef x value loss + beta x the exact KL
        to the reference per decision - entropy_coef x entropy; the value loss alone during the critic warm-up."""
        cfg = self.settings
        mask = batch[Columns.LOSS_MASK].float() if Columns.LOSS_MASK in batch else None
        pg_loss, ratio, clipfrac = self._surrogate(batch, fwd_out, config.clip_param, mask)
        values = fwd_out[Columns.EMBEDDINGS]
        vf_loss = ppo_math.value_loss(values, values, batch[Postprocessing.VALUE_TARGETS], None, mask)
        if REF_BIN_LOGP in batch:
            kl_tokens = ppo_math.exact_kl(fwd_out[BIN_LOGP], batch[REF_BIN_LOGP])  # (B, K·D)
        else:
            kl_tokens = torch.zeros_like(fwd_out[TOKEN_LOGP])
        kl_mask = self._kl_rows_mask(batch, mask)
        kl_decision = ppo_math.masked_mean(kl_tokens.sum(-1), kl_mask)
        entropy = ppo_math.masked_mean(fwd_out[ENTROPY].mean(-1), mask)
        beta = self.kl_controller.beta
        vf_coef, entropy_coef = float(config.vf_loss_coeff), float(config.entropy_coeff)  # RLlib's own fields
        if self.updates_done < cfg.critic_warmup:  # fit the fresh value head before moving the policy
            total = vf_coef * vf_loss
        else:
            total = pg_loss + vf_coef * vf_loss + beta * kl_decision - entropy_coef * entropy
        with torch.no_grad():
            stats = {"losses/total": float(total), "losses/policy": float(pg_loss), "losses/value": float(vf_loss),
                     "policy/entropy": float(entropy), "policy/clipfrac": float(clipfrac), "kl/beta": beta,
                     **self._kl_stats(kl_decision, kl_tokens.shape[-1], len(kl_tokens), kl_mask),
                     **self._step_stats(batch, fwd_out, values, mask)}
            if self._first_minibatch:
                stats.update(self._first_minibatch_stats(batch, fwd_out, ratio, mask, kl_mask))
                self._first_minibatch = False
        for key, value in stats.items():
            self.metrics.log_value((module_id, key), value, reduce="mean", window=None if key != "kl/beta" else 1)
        return total

    def _surrogate(self, batch, fwd_out, clip: float, mask):
        """(loss, ratio, clipfrac) of the configured ratio: per decision (the sum of its token log-probs), per token, or
        per sequence (GSPO's length-normalised one)."""
        advantages = batch[Postprocessing.ADVANTAGES]
        if self.settings.ratio == "token":
            return ppo_math.token_clipped_surrogate(fwd_out[TOKEN_LOGP], batch[SAMPLED_TOKEN_LOGP], advantages, clip,
                                                    mask)
        if self.settings.ratio == "sequence":
            return ppo_math.sequence_clipped_surrogate(fwd_out[TOKEN_LOGP], batch[SAMPLED_TOKEN_LOGP], advantages,
                                                       clip, mask)
        return ppo_math.clipped_surrogate(fwd_out[Columns.ACTION_LOGP], batch[Columns.ACTION_LOGP], advantages, clip,
                                          mask)

    @staticmethod
    def _kl_rows_mask(batch, mask):
        """The loss rows the reference scored (all of them unless the KL is only logged: `ReferenceBinLogp.max_rows`)."""
        if REF_ROWS not in batch:
            return mask
        scored = batch[REF_ROWS].float()
        return scored if mask is None else mask * scored

    def _kl_stats(self, kl_decision, n_tok: int, rows: int, mask) -> dict[str, float]:
        """The KL to the reference per token; also counted for the adaptive controller (once per update's rows).
        A minibatch without a scored row (a log-only subsample) reports nothing."""
        if mask is not None and not bool(mask.sum() > 0):
            return {}
        kl_per_token = float(kl_decision) / n_tok
        if math.isfinite(kl_per_token):
            self._kl_sum += kl_per_token
            self._kl_rows += 1
            self._kl_samples += int(mask.sum()) if mask is not None else rows
        return {"kl/ref_per_token": kl_per_token}

    def _step_stats(self, batch, fwd_out, values, mask) -> dict[str, float]:
        """How far this step moved from the sampler (and the target-KL stop), and the critic's fit."""
        logp_new, logp_old = fwd_out[Columns.ACTION_LOGP], batch[Columns.ACTION_LOGP]
        stats = {"policy/approx_kl": float(ppo_math.approx_kl(logp_new, logp_old, mask)),  # per decision
                 "value/explained_variance": ppo_math.explained_variance(values, batch[Postprocessing.VALUE_TARGETS],
                                                                         mask),
                 "value/mean": float(ppo_math.masked_mean(values, mask))}
        if SAMPLED_TOKEN_LOGP in batch:
            log_r = fwd_out[TOKEN_LOGP] - batch[SAMPLED_TOKEN_LOGP]
            stats["policy/approx_kl_per_token"] = float(ppo_math.masked_mean((log_r.exp() - 1.0 - log_r).mean(-1), mask))
            target = self.settings.target_kl
            if target and stats["policy/approx_kl_per_token"] > 1.5 * target:
                self._kl_stopped = True  # this minibatch's step and every later one leave LoRA alone
        stats["policy/kl_stopped_steps"] = float(self._kl_stopped)
        return stats

    @staticmethod
    def _first_minibatch_stats(batch, fwd_out, ratio, mask, kl_mask) -> dict[str, float]:
        """On-policy rows with unchanged weights: the ratio must be exactly 1, and the sampled tokens come from the
        policy being scored, so k1/k3 estimate KL(pi || pi_ref) (after the first step they would not)."""
        dev = (ratio - 1.0).abs()
        stats = {"policy/first_ratio_max_dev": float(dev[mask.bool()].max() if mask is not None else dev.max())}
        if SAMPLED_TOKEN_LOGP in batch:  # the sampler's per-token log-probs match the learner's too
            tok = (fwd_out[TOKEN_LOGP] - batch[SAMPLED_TOKEN_LOGP]).abs()
            stats["policy/first_token_logp_max_dev"] = float(tok[mask.bool()].max() if mask is not None else tok.max())
        token_logp = fwd_out[TOKEN_LOGP]
        ref_token_logp = batch.get(REF_TOKEN_LOGP, token_logp)
        if kl_mask is not None and not bool(kl_mask.sum() > 0):
            return stats
        stats["kl/k1_per_token"] = float(ppo_math.masked_mean(ppo_math.kl_k1(token_logp, ref_token_logp).mean(-1),
                                                              kl_mask))
        stats["kl/k3_per_token"] = float(ppo_math.masked_mean(ppo_math.kl_k3(token_logp, ref_token_logp).mean(-1),
                                                              kl_mask))
        return stats

    def _optimizers(self) -> list:
        """(name, optimizer) of every module, through RLlib's public accessor."""
        return [named for mid in self.module.keys() for named in self.get_optimizers_for_module(mid)]

    # --- skip (never apply) a step with NaN/inf -----------------------------------------------------
    def apply_gradients(self, gradients_dict) -> None:
        finite = all(g is None or bool(torch.isfinite(g).all()) for g in gradients_dict.values())
        self.metrics.log_value("losses/skipped_steps", 0 if finite else 1, reduce="sum")
        if not finite:
            for _, optim in self._optimizers():
                optim.zero_grad(set_to_none=True)
            return
        if self._kl_stopped or self.updates_done < self.settings.critic_warmup:
            # Critic warm-up or a target_kl stop: the value loss also reaches LoRA through the shared backbone, so keep
            # the policy still (grad None: AdamW skips the tensor, momentum included) while the critic trains.
            lora = {self.get_param_ref(p): p for name, opt in self._optimizers() if name.endswith("lora")
                    for group in opt.param_groups for p in group["params"]}
            for ref in [ref for ref in gradients_dict if ref in lora]:
                lora[ref].grad = None  # backward left its gradient on the tensor; the optimizer must not see it
                del gradients_dict[ref]
        super().apply_gradients(gradients_dict)

    # --- per-update bookkeeping ----------------------------------------------------------------------
    def update(self, *args, **kwargs):
        self._first_minibatch = True
        self._kl_stopped = False
        self._kl_sum, self._kl_rows, self._kl_samples = 0.0, 0, 0
        self._epochs = max(1, int(kwargs.get("num_epochs", 1) or 1))
        for piece in self._update_indexed:
            piece.update_index = self.updates_done
        return super().update(*args, **kwargs)

    def after_gradient_based_update(self, *, timesteps: dict[str, Any]) -> None:
        super().after_gradient_based_update(timesteps=timesteps)
        self.updates_done += 1
        if self._kl_rows:
            # β moves once per update, by the mean KL per token over its minibatches and the number of samples in the
            # batch (each epoch passes over the batch once: the rows the minibatches saw, divided by the epochs).
            self.kl_controller.update(self._kl_sum / self._kl_rows, n_steps=round(self._kl_samples / self._epochs))

    def get_state(self, components=None, *, not_components=None, **kwargs):
        state = super().get_state(components, not_components=not_components, **kwargs)
        state[KL_STATE] = {**self.kl_controller.state_dict(), "updates_done": self.updates_done}
        return state

    def set_state(self, state) -> None:
        super().set_state(state)
        if KL_STATE in state:
            self.kl_controller.load_state_dict(state[KL_STATE])
            self.updates_done = int(state[KL_STATE].get("updates_done", 0))

