"""Reward model on the frozen vision tower of a VLA policy."""

import json

import numpy as np
import pytest
import torch

from envs.instruction import encode_instruction
from reward_models.pairs import Pair
from reward_models.reward_model import (
    RewardEnsemble,
    RewardModelConfig,
    RewardModelError,
)
from reward_models.training import train_ensemble

INSTR = encode_instruction("open the drawer", 64)


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory):
    from vla_rl.policy import ActionTokenizer, build_policy

    path = tmp_path_factory.mktemp("pol") / "policy"
    build_policy(ActionTokenizer((-1.0,), (1.0,)), state_dim=1, image_size=(64, 64), preset="tiny").save_pretrained(path)
    return path


def _pairs(n, rng):
    out = []
    for _ in range(n):
        a, b = rng.uniform(0, 1, 2)
        img = lambda v: np.clip(np.full((1, 64, 64, 3), v * 200) + rng.normal(0, 10, (1, 64, 64, 3)), 0, 255).astype(np.uint8)  # noqa: E731
        out.append(Pair(img(a), img(b), INSTR, "open the drawer", {"source": "s", "episode": 0, "t": 0, "length": 1},
                        {"source": "s", "episode": 1, "t": 0, "length": 1}, status="labeled", label=float(b > a)))
    return out


def test_trains_heads_only_and_round_trips(policy_dir, tmp_path):
    cfg = RewardModelConfig(image_shape=(64, 64, 3), ensemble_size=2, encoder="vla", vla_policy=str(policy_dir))
    pairs = _pairs(200, np.random.default_rng(0))
    model, report = train_ensemble(pairs, cfg, epochs=20, show_progress=False, lr=1e-3)
    assert all(not k.startswith("_tower") for k in model.state_dict())  # the tower is neither trained nor saved
    tower_before = [p.detach().clone() for p in model._tower.tower.parameters()]
    assert report["heldout"]["pairwise_accuracy"] >= 0.8, report
    assert all(torch.equal(a, b) for a, b in zip(tower_before, model._tower.tower.parameters(), strict=True))
    model.save(tmp_path / "rm")
    loaded = RewardEnsemble.load(tmp_path / "rm")
    frames = np.stack([p.first[0] for p in pairs[:8]])
    np.testing.assert_array_equal(loaded.reward({"image": frames, "instruction": INSTR}),
                                  model.reward({"image": frames, "instruction": INSTR}))
    # A policy changed after training is detected by name.
    idx = json.loads((policy_dir / "policy.json").read_text())
    (policy_dir / "policy.json").write_text(json.dumps({**idx, "note": "edited"}))
    with pytest.raises(RewardModelError, match="config.vla_policy"):
        RewardEnsemble.load(tmp_path / "rm")
    (policy_dir / "policy.json").write_text(json.dumps(idx, indent=2) + "\n")


def test_vla_encoder_needs_a_policy():
    with pytest.raises(RewardModelError, match="needs vla_policy"):
        RewardEnsemble(RewardModelConfig(encoder="vla"))


@pytest.mark.parametrize("family", ["qwen2_5_vl", "vla_rl_openvla"])
def test_the_vla_encoder_reads_each_familys_own_tower(family, tmp_path):
    """Qwen2.5-VL (flattened patches + grid into `visual`, merged tokens pooled) and OpenVLA (two towers, 6-channel
    pixels) through the same frozen-tower reward model: features of the family's width, that differ between images,
    equal to the tower's own output on the policy's pixels, and a trained head round trip."""
    from vla_rl.policy import ActionTokenizer, build_policy

    policy = build_policy(ActionTokenizer((-1.0,), (1.0,)), state_dim=1, image_size=(64, 64), preset="tiny",
                          family=family)
    policy.save_pretrained(tmp_path / "policy")
    cfg = RewardModelConfig(image_shape=(64, 64, 3), ensemble_size=1, encoder="vla", vla_policy=str(tmp_path / "policy"))
    model, _ = train_ensemble(_pairs(40, np.random.default_rng(1)), cfg, epochs=2, show_progress=False, lr=1e-3)
    tower = model._tower
    assert tower.dim == policy.family.vision_feature_dim(policy.base_model.config)
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    features = tower(torch.as_tensor(images).permute(0, 3, 1, 2).float() / 255)
    assert features.shape == (3, tower.dim) and not torch.allclose(features[0], features[1])
    x = policy.prepare({"image": images, "state": np.zeros((3, 1), np.float32),
                        "instruction": np.stack([INSTR] * 3)})["pixels"]  # the policy's own pixel path
    inner = policy.base_model.model
    with torch.no_grad():
        if family == "qwen2_5_vl":
            merged = inner.visual(x["pixel_values"], grid_thw=x["image_grid_thw"]).pooler_output
            expected = merged.view(3, -1, merged.shape[-1]).mean(1)
        else:
            expected = inner.vision_tower(x["pixel_values"]).mean(1)
    torch.testing.assert_close(features, expected, atol=1e-5, rtol=1e-5)
    model.save(tmp_path / "rm")
    frames = images[:2]
    np.testing.assert_array_equal(RewardEnsemble.load(tmp_path / "rm").reward({"image": frames, "instruction": INSTR}),
                                  model.reward({"image": frames, "instruction": INSTR}))
