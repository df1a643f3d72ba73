"""Training a Bradley–Terry ensemble on labelled pairs, with a held-out split and early stopping.

Every member has its own initialisation and its own data order (PEBBLE/RL-VLM-F); each keeps the
weights of its best held-out accuracy and stops after `patience` epochs without improvement.
Ties train towards 0.5 (soft labels); abstained and unlabelled pairs are not used.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from reward_models.bradley_terry import (
    bt_loss,
    bt_probability,
    expected_calibration_error,
    pairwise_accuracy,
)
from reward_models.pairs import Pair
from reward_models.reward_model import RewardEnsemble, RewardModelConfig


@dataclass
class PairArrays:
    first: np.ndarray  # (N, H, h, w, 3)
    second: np.ndarray
    instruction: np.ndarray  # (N, L)
    label: np.ndarray  # (N,) float

    @classmethod
    def from_pairs(cls, pairs: list[Pair]) -> PairArrays:
        used = [p for p in pairs if p.status == "labeled"]
        if not used:
            raise ValueError("no labelled pairs to train on (all unlabeled or abstained)")
        return cls(np.stack([p.first for p in used]), np.stack([p.second for p in used]),
                   np.stack([p.instruction for p in used]), np.array([p.label for p in used], np.float32))

    def __len__(self) -> int:
        return len(self.label)

    def take(self, idx) -> PairArrays:
        return PairArrays(self.first[idx], self.second[idx], self.instruction[idx], self.label[idx])


def scores(model: RewardEnsemble, data: PairArrays, member: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Segment scores (K or 1, N) of first and second segments."""
    n, h = data.first.shape[:2]
    instr = np.repeat(data.instruction, h, axis=0)
    out = []
    for seg in (data.first, data.second):
        frames = seg.reshape(n * h, *seg.shape[2:])
        if member is None:
            r = model.member_rewards(frames, instr)
        else:
            x = model.encode(model._images(frames))
            r = model.members[member](x, model._instruction(instr, len(frames)))[None]
        out.append(r.view(r.shape[0], n, h).sum(-1))
    return out[0], out[1]


@torch.no_grad()
def pair_metrics(model: RewardEnsemble, data: PairArrays, batch: int = 512) -> dict[str, float]:
    """Ensemble-mean pairwise accuracy, NLL and ECE on labelled pairs."""
    probs = []
    for s in range(0, len(data), batch):
        s0, s1 = scores(model, data.take(slice(s, s + batch)))
        probs.append(bt_probability(s0, s1).mean(0))
    p = torch.cat(probs).clamp(1e-6, 1 - 1e-6)
    y = torch.as_tensor(data.label)
    nll = float(-(y * p.log() + (1 - y) * (1 - p).log()).mean())
    return {"pairwise_accuracy": pairwise_accuracy(p, y), "nll": nll, "ece": expected_calibration_error(p, y)}


def train_ensemble(pairs: list[Pair], model_cfg: RewardModelConfig, epochs: int = 50, batch_size: int = 64,
                   lr: float = 3e-4, holdout: float = 0.1, patience: int = 10, seed: int = 0,
                   show_progress: bool = True, init: RewardEnsemble | None = None) -> tuple[RewardEnsemble, dict]:
    """Train an ensemble (from scratch, or from a copy of `init`: the online loop's warm start) on the labelled
    pairs; returns it with normalisation set on its training frames, and a report."""
    data = PairArrays.from_pairs(pairs)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(data))
    n_val = int(round(holdout * len(data))) if len(data) >= 10 else 0
    val, train = data.take(order[:n_val]), data.take(order[n_val:])
    model = RewardEnsemble(model_cfg) if init is None else copy.deepcopy(init).train()
    start = time.perf_counter()
    members = []
    total = model_cfg.ensemble_size * epochs
    bar = tqdm(total=total, desc="reward train", unit="epoch", disable=not show_progress, dynamic_ncols=True)
    for k, member in enumerate(model.members):
        g = np.random.default_rng(seed * 1000 + k + 1)
        opt = torch.optim.Adam(member.parameters(), lr=lr)
        best, best_acc, best_epoch, since = copy.deepcopy(member.state_dict()), -1.0, 0, 0
        for epoch in range(epochs):
            member.train()
            perm = g.permutation(len(train))
            for s in range(0, len(train), batch_size):
                b = train.take(perm[s:s + batch_size])
                s0, s1 = scores(model, b, member=k)
                loss = bt_loss(s0[0], s1[0], torch.as_tensor(b.label))
                opt.zero_grad()
                loss.backward()
                opt.step()
            member.eval()
            with torch.no_grad():
                check = val if n_val else train
                s0, s1 = scores(model, check, member=k)
                acc = pairwise_accuracy(bt_probability(s0[0], s1[0]), torch.as_tensor(check.label))
            bar.update(1)
            bar.set_postfix(member=k, loss=f"{loss.item():.3f}", heldout_acc=f"{acc:.3f}")
            if acc > best_acc:
                best, best_acc, best_epoch, since = copy.deepcopy(member.state_dict()), acc, epoch + 1, 0
            else:
                since += 1
                if since >= patience:
                    bar.update(epochs - epoch - 1)
                    break
        member.load_state_dict(best)
        members.append({"member": k, "best_epoch": best_epoch, "heldout_accuracy": best_acc})
    bar.close()
    model.eval()
    frames = np.concatenate([train.first.reshape(-1, *train.first.shape[2:]), train.second.reshape(-1, *train.second.shape[2:])])
    instr = np.repeat(np.concatenate([train.instruction, train.instruction]), train.first.shape[1], axis=0)
    model.set_normalization(frames, instr)
    report = {"pairs": len(data), "train_pairs": len(train), "heldout_pairs": n_val, "members": members,
              "train_seconds": round(time.perf_counter() - start, 2)}
    if n_val:
        report["heldout"] = pair_metrics(model, val)
    return model, report
