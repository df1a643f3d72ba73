"""Candidate pairs from demo or rollout datasets (envs.demos format), and query selection.

A segment is H consecutive observations o_t .. o_{t+H-1} of one episode (H = 1: single frames, as
RL-VLM-F). Both segments of a pair share the instruction. The privileged per-frame ground truth a
scripted teacher needs is the task progress of each frame (`gt_return` = its sum over the segment).

Selection (PEBBLE): draw a pool of `pool_factor` × N uniform candidates, score them, keep the N
best — `uniform` (random), `disagreement` (std across ensemble members of P[second ≻ first]),
`entropy` (binary entropy of the ensemble-mean P).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from envs.demos import DemoDataset
from reward_models.pairs import Pair
from vla_rl.base.errors import ConfigError

METHODS = ("uniform", "disagreement", "entropy")


@dataclass
class EpisodeFrames:
    """The frames, instructions and privileged progress of a set of episodes: what pair sampling reads.

    Built from a demo dataset (`load_episodes`) or from rollouts (`vla_rl.rl.episodes.episode_frames`); `source`
    names where they came from and goes into every pair's provenance.
    """

    source: str
    image: list[np.ndarray]
    instruction: list[np.ndarray]
    text: list[str]
    gt: list[np.ndarray]
    progress: list[np.ndarray]


def load_episodes(paths) -> list[EpisodeFrames]:
    out = []
    for path in paths:
        ds = DemoDataset(path)
        eps = EpisodeFrames(str(path), [], [], [], [], [])
        for ep in ds:
            eps.image.append(ep.image)
            eps.instruction.append(ep.instruction)
            eps.text.append(ep.instruction_text)
            eps.progress.append(ep.progress.astype(np.float64))
            eps.gt.append(ep.progress.astype(np.float64))
        out.append(eps)
    return out


def sample_candidates(datasets: list[EpisodeFrames], n: int, segment_length: int, rng: np.random.Generator) -> list[Pair]:
    """`n` uniform pairs of same-instruction segments (images, refs, privileged returns and progress)."""
    flat = [(d, i) for d in datasets for i in range(len(d.image)) if len(d.image[i]) >= segment_length]
    if len(flat) < 1:
        longest = max((len(im) for d in datasets for im in d.image), default=0)
        raise ConfigError(f"segment_length={segment_length}: no episode of {[d.source for d in datasets]} has that many "
                          f"observations (the longest has {longest}) — lower --segment_length")
    by_text: dict[str, list] = {}
    for d, i in flat:
        by_text.setdefault(d.text[i], []).append((d, i))
    pairs = []
    for _ in range(n):
        d0, i0 = flat[rng.integers(len(flat))]
        d1, i1 = by_text[d0.text[i0]][rng.integers(len(by_text[d0.text[i0]]))]
        segs = []
        for d, i in ((d0, i0), (d1, i1)):
            t = int(rng.integers(0, len(d.image[i]) - segment_length + 1))
            segs.append((d, i, t))
        (da, ia, ta), (db, ib, tb) = segs
        sl = lambda a, t: a[t:t + segment_length]  # noqa: E731
        pairs.append(Pair(
            first=sl(da.image[ia], ta), second=sl(db.image[ib], tb), instruction=da.instruction[ia],
            instruction_text=da.text[ia],
            first_ref={"source": da.source, "episode": ia, "t": ta, "length": segment_length},
            second_ref={"source": db.source, "episode": ib, "t": tb, "length": segment_length},
            gt_return=[float(sl(da.gt[ia], ta).sum()), float(sl(db.gt[ib], tb).sum())],
            progress=[sl(da.progress[ia], ta).tolist(), sl(db.progress[ib], tb).tolist()],
        ))
    return pairs


@torch.no_grad()
def select_pairs(candidates: list[Pair], n: int, method: str = "uniform", model=None,
                 rng: np.random.Generator | None = None) -> list[Pair]:
    """Keep the `n` most informative candidates under `method` (uniform needs no model)."""
    if method not in METHODS:
        raise ValueError(f"selection method {method!r}; choose one of {list(METHODS)}")
    rng = rng or np.random.default_rng(0)
    if method == "uniform":
        return [candidates[i] for i in rng.permutation(len(candidates))[:n]]
    if model is None:
        raise ValueError(f"selection {method!r} needs a reward model (train one first, or use uniform)")
    p = pair_probabilities(model, candidates)  # (K, N)
    if method == "disagreement":
        score = p.std(0)
    else:
        m = p.mean(0).clamp(1e-6, 1 - 1e-6)
        score = -(m * m.log() + (1 - m) * (1 - m).log())
    order = torch.argsort(score, descending=True)[:n]
    return [candidates[i] for i in order.tolist()]


@torch.no_grad()
def pair_probabilities(model, pairs: list[Pair], batch: int = 256) -> torch.Tensor:
    """(K, N) P[second ≻ first] under each ensemble member."""
    from reward_models.bradley_terry import bt_probability

    out = []
    for s in range(0, len(pairs), batch):
        chunk = pairs[s:s + batch]
        h = chunk[0].first.shape[0]
        first = np.concatenate([p.first for p in chunk])
        second = np.concatenate([p.second for p in chunk])
        instr = np.repeat(np.stack([p.instruction for p in chunk]), h, axis=0)
        r0 = model.member_rewards(first, instr).view(model.cfg.ensemble_size, len(chunk), h).sum(-1)
        r1 = model.member_rewards(second, instr).view(model.cfg.ensemble_size, len(chunk), h).sum(-1)
        out.append(bt_probability(r0, r1))
    return torch.cat(out, dim=1)
