"""Pair datasets (round trip, dedup, validation) and the reward ensemble (save/load, learning)."""

import json

import numpy as np
import pytest
import torch

from envs.instruction import encode_instruction
from reward_models.pairs import Pair, PairDataError, PairDataset
from reward_models.reward_model import (
    RewardEnsemble,
    RewardModelConfig,
    RewardModelError,
)
from reward_models.training import train_ensemble

INSTR = encode_instruction("open the drawer", 64)


def _bright(level: float, size=48, rng=None) -> np.ndarray:
    """An image whose brightness encodes progress (plus pixel noise)."""
    rng = rng or np.random.default_rng(0)
    img = np.full((1, size, size, 3), level * 200, np.float64) + rng.normal(0, 10, (1, size, size, 3))
    return img.clip(0, 255).astype(np.uint8)


def _pair(a: float, b: float, rng, label=None) -> Pair:
    status = "labeled" if label is not None else "unlabeled"
    return Pair(_bright(a, rng=rng), _bright(b, rng=rng), INSTR, "open the drawer",
                {"source": "synthetic", "episode": 0, "t": 0, "length": 1},
                {"source": "synthetic", "episode": 1, "t": 0, "length": 1},
                gt_return=[a, b], progress=[[a], [b]], status=status, label=label)


def test_pair_dataset_round_trip_and_dedup(tmp_path):
    rng = np.random.default_rng(0)
    pairs = [_pair(0.1, 0.9, rng, 1.0), _pair(0.5, 0.2, rng, 0.0), _pair(0.3, 0.4, rng)]
    ds = PairDataset(tmp_path / "p", create=True)
    assert ds.add(pairs) == 3
    assert ds.add(pairs[:2]) == 0  # same content -> same id -> skipped
    back = PairDataset(tmp_path / "p")
    assert len(back) == 3 and back.counts() == {"unlabeled": 1, "labeled": 2, "abstain": 0}
    for i, p in enumerate(pairs):
        q = back.load(i)
        assert q.id == p.id and np.array_equal(q.first, p.first) and np.array_equal(q.second, p.second)
        assert q.label == p.label and q.first_ref == p.first_ref and q.gt_return == p.gt_return
    back.set_labels([(pairs[2].id, "labeled", 0.5, "scripted:equal", {"teacher": "equal"})])
    assert PairDataset(tmp_path / "p").load(2).label == 0.5


def test_bad_pair_files_are_named(tmp_path):
    rng = np.random.default_rng(0)
    ds = PairDataset(tmp_path / "p", create=True)
    ds.add([_pair(0.1, 0.9, rng, 1.0)])
    index = json.loads((tmp_path / "p/pairs.json").read_text())
    bad = json.loads(json.dumps(index))
    del bad["pairs"][0]["first"]["episode"]
    (tmp_path / "p/pairs.json").write_text(json.dumps(bad))
    with pytest.raises(PairDataError, match="field 'first.episode' is missing"):
        PairDataset(tmp_path / "p")
    bad = json.loads(json.dumps(index))
    bad["pairs"][0]["label"] = 2
    (tmp_path / "p/pairs.json").write_text(json.dumps(bad))
    with pytest.raises(PairDataError, match="field 'label'=2"):
        PairDataset(tmp_path / "p")
    (tmp_path / "p/pairs.json").write_text(json.dumps(index))
    seg = tmp_path / "p" / index["pairs"][0]["file"]
    seg.write_bytes(seg.read_bytes()[:-10])
    with pytest.raises(PairDataError, match="checksum mismatch"):
        PairDataset(tmp_path / "p").load(0)
    with pytest.raises(PairDataError, match="image_shape"):
        ds.add([Pair(np.zeros((1, 8, 8, 3), np.uint8), np.zeros((1, 8, 8, 3), np.uint8), INSTR, "x",
                     {"source": "s", "episode": 0, "t": 0, "length": 1}, {"source": "s", "episode": 0, "t": 0, "length": 1})])
    with pytest.raises(PairDataError, match="not found"):
        PairDataset(tmp_path / "nothing")


def test_ensemble_learns_a_monotone_reward_and_saves_exactly(tmp_path):
    rng = np.random.default_rng(0)
    levels = rng.uniform(0, 1, (300, 2))
    pairs = [_pair(a, b, rng, float(b > a)) for a, b in levels]
    cfg = RewardModelConfig(image_shape=(48, 48, 3), ensemble_size=2)
    model, report = train_ensemble(pairs, cfg, epochs=15, show_progress=False)
    assert report["heldout"]["pairwise_accuracy"] >= 0.9, report
    frames = np.concatenate([_bright(x, rng=rng) for x in np.linspace(0, 1, 11)])
    r = model.reward({"image": frames, "instruction": INSTR})
    assert np.corrcoef(r, np.linspace(0, 1, 11))[0, 1] > 0.9
    model.save(tmp_path / "rm")
    loaded = RewardEnsemble.load(tmp_path / "rm")
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    np.testing.assert_array_equal(loaded.reward({"image": frames, "instruction": INSTR}), r)


def test_reward_model_bad_inputs(tmp_path):
    model = RewardEnsemble(RewardModelConfig(image_shape=(48, 48, 3)))
    with pytest.raises(RewardModelError, match=r"uint8 \(N, 48, 48, 3\)"):
        model.reward({"image": np.zeros((2, 64, 64, 3), np.uint8), "instruction": INSTR})
    with pytest.raises(RewardModelError, match="instruction-conditioned"):
        model.reward({"image": np.zeros((2, 48, 48, 3), np.uint8)})
    with pytest.raises(RewardModelError, match="at least 45 px"):
        RewardEnsemble(RewardModelConfig(image_shape=(32, 32, 3)))
    model.save(tmp_path / "rm")
    w = tmp_path / "rm/weights.safetensors"
    w.write_bytes(w.read_bytes()[:-4] + b"abcd")
    with pytest.raises(RewardModelError, match="weights.safetensors: checksum mismatch"):
        RewardEnsemble.load(tmp_path / "rm")


def test_output_head_linear_by_default_tanh_on_request_and_for_old_files(tmp_path):
    frames = np.concatenate([_bright(x) for x in (0.0, 0.5, 1.0)])
    models = {out: RewardEnsemble(RewardModelConfig(image_shape=(48, 48, 3), ensemble_size=1, output=out))
              for out in ("linear", "tanh")}
    assert RewardModelConfig().output == "linear"
    for model in models.values():
        with torch.no_grad():
            model.members[0].head[1].weight.mul_(1e4)
    with torch.no_grad():
        assert models["linear"].member_rewards(frames, INSTR[None].repeat(3, 0)).abs().max() > 1.0
        assert models["tanh"].member_rewards(frames, INSTR[None].repeat(3, 0)).abs().max() <= 1.0
    # reward_model.json written before the field existed: those models ended in tanh
    models["tanh"].save(tmp_path / "old")
    index = json.loads((tmp_path / "old/reward_model.json").read_text())
    del index["config"]["output"]
    (tmp_path / "old/reward_model.json").write_text(json.dumps(index))
    assert RewardEnsemble.load(tmp_path / "old").cfg.output == "tanh"
    with pytest.raises(RewardModelError, match="output='sigmoid'; choose 'linear' or 'tanh'"):
        RewardEnsemble(RewardModelConfig(image_shape=(48, 48, 3), output="sigmoid"))
