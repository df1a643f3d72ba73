"""The learner-connector pieces of the VLA PPO learner, in pipeline order (RLlib's own pieces between them):

    EpisodeOutcomes (first; with group_size > 1) -> [RLlib: bootstrap rows, observations, batching]
    -> ReferenceBinLogp -> Advantages (replaces RLlib's GAE) -> ShuffledAdvantages (the no-credit control)
    -> DropBootstrapRows -> ShuffleRows (last)

A reward model's rewards are on the episodes before the pipeline runs (scored once in the driver:
`vla_rl.rl.algorithm.VLAPPO._relabel`).

Each sees `{module_id: {column: tensor}}` with RLlib's row layout: per episode chunk its real rows, then one masked
bootstrap row (`LOSS_MASK` False) holding the chunk's last observation.
"""

from __future__ import annotations

import torch
from ray.rllib.connectors.connector_v2 import ConnectorV2
from ray.rllib.core.columns import Columns
from ray.rllib.evaluation.postprocessing import Postprocessing

from vla_rl.rl import ppo_math
from vla_rl.rl.env import GROUP_SEED

REF_BIN_LOGP = "ref_bin_logp"  # (B, K·D, 256) the reference policy's bin distributions
REF_TOKEN_LOGP = "ref_token_logp"  # (B, K·D) the reference log-prob of each sampled token
REF_ROWS = "ref_rows"  # (B,) True on the rows the reference scored (all loss rows, or a log-only subsample)


def unwrap(module):
    return module.unwrapped() if hasattr(module, "unwrapped") else module


class ReferenceBinLogp(ConnectorV2):
    """Adds REF_BIN_LOGP / REF_TOKEN_LOGP / REF_ROWS: the reference policy's distributions, once per batch, no grad.

    `max_rows` > 0 scores only that many evenly spaced loss rows: for a run whose KL weight is fixed at 0, where the
    reference feeds only the `kl/*` logs (a forward pass over every row costs ~15 % of the learner's time)."""

    def __init__(self, *args, chunk: int = 64, temperature: float = 1.0, max_rows: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        self.chunk, self.temperature, self.max_rows = int(chunk), float(temperature), int(max_rows)

    def _rows(self, mb, n: int) -> torch.Tensor:
        """The rows to score: the loss rows (the bootstrap rows are dropped before the loss), or a spread subset."""
        rows = torch.nonzero(torch.as_tensor(mb[Columns.LOSS_MASK]).bool().cpu()).squeeze(-1) \
            if Columns.LOSS_MASK in mb else torch.arange(n)
        if 0 < self.max_rows < len(rows):
            rows = rows[torch.linspace(0, len(rows) - 1, self.max_rows).round().long().unique()]
        return rows

    def __call__(self, *, rl_module, batch, episodes, explore=None, shared_data=None, metrics=None, **kwargs):
        for mid, mb in batch.items():
            module = unwrap(rl_module[mid])
            policy = module.policy
            obs, tokens = mb[Columns.OBS], module._tokens(mb[Columns.ACTIONS])
            rows = self._rows(mb, len(tokens))
            parts = []
            was_training = policy.training
            policy.eval()
            with torch.no_grad(), policy.reference():
                for i in range(0, len(rows), self.chunk):
                    sel = rows[i:i + self.chunk]
                    parts.append(policy.evaluate({k: v[sel.to(v.device)] for k, v in obs.items()},
                                                 tokens[sel.to(tokens.device)], self.temperature).bin_logp)
            policy.train(was_training)
            n_tok, n_bins = policy.spec.n_action_tokens, policy.action_tokenizer.n_bins
            ref = torch.zeros(len(tokens), n_tok, n_bins, device=parts[0].device if parts else "cpu")
            scored = torch.zeros(len(tokens), dtype=torch.bool, device=ref.device)
            if parts:
                ref[rows.to(ref.device)] = torch.cat(parts)
                scored[rows.to(ref.device)] = True
            mb[REF_BIN_LOGP] = ref
            mb[REF_ROWS] = scored
            off = policy.action_tokenizer.token_offset
            mb[REF_TOKEN_LOGP] = ref.gather(-1, (tokens - off)[..., None].to(ref.device)).squeeze(-1)
        return batch


GROUP_OUTCOMES = "vla_group_outcomes"  # shared_data key: per-episode (group seed, finished), in batch order


class EpisodeOutcomes(ConnectorV2):
    """First piece of the learner pipeline: notes each episode chunk's group seed (from its reset info) and whether
    it finished inside the rollout — before later pieces extend the chunks by a bootstrap step."""

    def __call__(self, *, rl_module, batch, episodes, explore=None, shared_data=None, metrics=None, **kwargs):
        rows = []
        for e in self.single_agent_episode_iterator(episodes, agents_that_stepped_only=False):
            seed = int(e.get_infos(0).get(GROUP_SEED, -1)) if e.t_started == 0 else -1  # a continued chunk: no group
            rows.append((seed, bool(e.is_done) and seed >= 0))
        shared_data[GROUP_OUTCOMES] = rows
        return batch


VF_PREDS = "vla_vf_preds"  # the critic's values of the batch's rows before the update (held-out explained variance)


class Advantages(ConnectorV2):
    """Replaces RLlib's `GeneralAdvantageEstimation`: value targets and advantages from `ppo_math`, whitened over the
    loss rows only.

    RLlib 2.60's GAE standardises advantages over every row of the batch, including the masked bootstrap row that
    `AddOneTsToEpisodesAndTruncate` appends to each episode chunk (a quarter of the rows on a 3-decision task; those
    rows' "advantages" leak in from the next chunk). Here:
    - values: `compute_values` once on the whole batch (no grad), kept as VF_PREDS;
    - targets: `ppo_math.gae` over the batch's rows in RLlib's layout — V(s_{t+1}) is the next row (the bootstrap
      row after a chunk's last real row), a terminated row does not bootstrap, a chunk's last real row and every
      bootstrap row cut the λ-trace;
    - advantages: GAE's (`estimator="gae"`), or group-relative (`"group"`, GRPO / SimpleVLA-RL: each episode's
      return minus its group's mean, `ppo_math.group_advantages`; episodes cut at the rollout boundary or alone in
      their group weigh 0) — value targets stay GAE's either way, so the critic still trains and is measured;
    - the critic gate (GAE only, `critic_gate`): if the critic's explained variance on this fresh batch is not above
      0 — it predicts no better than the batch's mean return — its advantages would carry its error, so the
      batch's advantages are Monte-Carlo returns-to-go instead (V = 0, λ = 1; whitening then subtracts the batch
      mean: REINFORCE with a mean baseline). The value targets stay GAE's, so the critic trains on and takes over
      once it predicts. Logged as `value/critic_gated` (1 = fell back);
    - whitening (GAE only): zero mean, unit std over the loss rows (`ppo_math.whiten` with the mask); the group
      estimator is already centred and scaled, and its zeros must stay zero; bootstrap rows get 0 either way.
    Logs `value/explained_variance_batch`: the critic's explained variance on this fresh batch, before it trains on
    it (a held-out measure; < 0 means the critic is worse than the batch's mean return), and with the group
    estimator `policy/informative_groups` (the fraction of groups whose returns differ).
    """

    def __init__(self, *args, gamma: float = 0.99, lam: float = 0.95, estimator: str = "gae", critic_gate: bool = False,
                 **kwargs):
        super().__init__(*args, **kwargs)
        if estimator not in ("gae", "group"):
            raise ValueError(f"advantage estimator {estimator!r}: choose 'gae' or 'group'")
        self.gamma, self.lam, self.estimator, self.critic_gate = float(gamma), float(lam), estimator, bool(critic_gate)

    def __call__(self, *, rl_module, batch, episodes, explore=None, shared_data=None, metrics=None, **kwargs):
        chunks = list(self.single_agent_episode_iterator(episodes, agents_that_stepped_only=False))
        for mid, mb in batch.items():
            values = unwrap(rl_module[mid]).compute_values(mb).detach().float()
            device = values.device
            rewards = torch.as_tensor(mb[Columns.REWARDS], dtype=torch.float32, device=device)
            terminated = torch.as_tensor(mb[Columns.TERMINATEDS], device=device).bool()
            truncated = torch.as_tensor(mb[Columns.TRUNCATEDS], device=device).bool()
            mask = torch.as_tensor(mb[Columns.LOSS_MASK], device=device).bool()
            next_values = torch.cat([values[1:], values.new_zeros(1)])
            cut = terminated | truncated | ~mask
            advantages, targets = ppo_math.gae(rewards, values, next_values, terminated, cut, self.gamma, self.lam)
            ev = ppo_math.explained_variance(values, targets, mask)
            gated = self.critic_gate and self.estimator == "gae" and not ev > 0.0  # nan (constant targets) gates too
            if gated:
                zeros = torch.zeros_like(values)
                advantages, _ = ppo_math.gae(rewards, zeros, zeros, terminated, cut, self.gamma, 1.0)
            if self.estimator == "group":  # already centred per group and scaled per batch: whitening again would
                # re-centre by the row-weighted mean and give every zero-advantage episode (cut, alone, all alike) a push
                advantages = self._group(chunks, mid, rewards, shared_data[GROUP_OUTCOMES], metrics).to(device)
            else:
                advantages = ppo_math.whiten(advantages, mask)
            advantages = torch.where(mask, advantages, torch.zeros_like(advantages))
            mb[Postprocessing.ADVANTAGES], mb[Postprocessing.VALUE_TARGETS], mb[VF_PREDS] = advantages, targets, values
            if metrics is not None:
                metrics.log_value((mid, "value/explained_variance_batch"), ev, window=1)
                if self.critic_gate:
                    metrics.log_value((mid, "value/critic_gated"), float(gated), window=1)
        return batch

    @staticmethod
    def _group(chunks, mid, rewards, outcomes, metrics) -> torch.Tensor:
        groups = torch.tensor([r[0] for r in outcomes], dtype=torch.int64)
        valid = torch.tensor([r[1] for r in outcomes], dtype=torch.bool)
        lengths = torch.tensor([len(e) for e in chunks if e.module_id in (None, mid)])  # rows per chunk (+ bootstrap)
        if int(lengths.sum()) != len(rewards):
            raise RuntimeError(f"group advantages: {int(lengths.sum())} rows in the episodes for a batch of {len(rewards)}")
        owner = torch.repeat_interleave(torch.arange(len(lengths)), lengths)
        returns = torch.zeros(len(lengths), dtype=torch.float64).index_add_(0, owner, rewards.double().cpu())
        per_episode = ppo_math.group_advantages(returns, groups, valid)
        if metrics is not None:
            spread = [float(per_episode[valid & (groups == g)].abs().max()) > 0 for g in torch.unique(groups[valid])]
            metrics.log_value((mid, "policy/informative_groups"), float(sum(spread)) / max(1, len(spread)), window=1)
        return per_episode[owner]


def update_generator(seed: int, update_index: int, stream: int) -> torch.Generator:
    """A generator that depends only on (seed, update index, stream): a piece that draws from it draws the same numbers
    in a resumed run (the learner sets each piece's update_index before its update)."""
    return torch.Generator().manual_seed((int(seed) * 1_000_003 + int(update_index)) * 4 + stream)


def take_rows(mb: dict, index: torch.Tensor) -> dict:
    """Every column of a module batch at the rows `index` (a bool mask or positions), nested dicts (observations)
    included; a column that is not a per-row tensor is refused — dropping or reordering it would misalign it. The
    loss mask (every batch has one: RLlib's bootstrap-row piece adds it) gives the number of rows."""
    n = len(mb[Columns.LOSS_MASK])

    def take(value):
        if isinstance(value, dict):
            return {k: take(v) for k, v in value.items()}
        if torch.is_tensor(value) and value.ndim and len(value) == n:
            return value[index.to(value.device)]
        raise RuntimeError(f"learner batch column of type {type(value).__name__} / shape "
                           f"{getattr(value, 'shape', None)}: cannot select its rows")

    return {k: take(v) for k, v in mb.items()}


class DropBootstrapRows(ConnectorV2):
    """Remove the masked bootstrap rows once advantages and value targets exist. They carry no loss, yet each
    minibatch would run them forward and backward — on a 2-decision task a third of the learner's compute."""

    def __call__(self, *, rl_module, batch, episodes, explore=None, shared_data=None, metrics=None, **kwargs):
        for mid, mb in batch.items():
            keep = torch.as_tensor(mb[Columns.LOSS_MASK]).bool()
            if not bool(keep.all()):
                batch[mid] = take_rows(mb, keep)
        return batch


class ShuffleRows(ConnectorV2):
    """Last piece: put the batch's rows in a random order before RLlib cuts it into minibatches.

    RLlib 2.60's `MiniBatchCyclicIterator` shuffles only when it wraps around the batch, so the first epoch walks the
    rows in the order the connectors left them — episode after episode. On a 40-decision task each 128-row minibatch
    of that epoch then holds ~3 episodes: its gradient (and `value/explained_variance`, measured per minibatch) is that
    of 3 episodes, not a sample of the batch. CleanRL and SB3 draw a fresh permutation for every epoch, the first
    included; this piece gives the first epoch one (later epochs keep RLlib's reshuffle, from the global numpy RNG,
    which a checkpoint restores for the driver learner only). The permutation depends only on (seed, update index),
    so a resumed run draws the same one."""

    def __init__(self, *args, seed: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        self.seed, self.update_index = int(seed), 0  # the learner sets update_index before each update

    def permutation(self, n: int) -> torch.Tensor:
        """The order this update gives n rows: row i of the output is row permutation[i] of the input."""
        return torch.randperm(n, generator=update_generator(self.seed, self.update_index, stream=0))

    def __call__(self, *, rl_module, batch, episodes, explore=None, shared_data=None, metrics=None, **kwargs):
        for mid, mb in batch.items():
            n = len(mb[Columns.LOSS_MASK])
            if n > 1:
                batch[mid] = take_rows(mb, self.permutation(n))
        return batch


class ShuffledAdvantages(ConnectorV2):
    """A control, never a training setting: permute the advantages over the batch's loss rows (same values, same
    scale, no credit left). A run that gains as much with it as without was not learning from its reward. The
    permutation depends only on (seed, update index), like `ShuffleRows`', so a resumed control draws the same ones."""

    def __init__(self, *args, seed: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        self.seed, self.update_index = int(seed), 0  # the learner sets update_index before each update

    def __call__(self, *, rl_module, batch, episodes, explore=None, shared_data=None, metrics=None, **kwargs):
        generator = update_generator(self.seed, self.update_index, stream=1)
        for mb in batch.values():
            adv = mb[Postprocessing.ADVANTAGES]
            rows = torch.nonzero(torch.as_tensor(mb[Columns.LOSS_MASK]).bool().cpu()).squeeze(-1)
            shuffled = adv.clone()
            shuffled[rows.to(adv.device)] = adv[rows[torch.randperm(len(rows), generator=generator)].to(adv.device)]
            mb[Postprocessing.ADVANTAGES] = shuffled
        return batch
