"""The local-VLM labeler end to end with a tiny LLaVA built from configs (no download)."""

import numpy as np
import pytest
import torch

from envs.instruction import encode_instruction
from reward_models.labelers.hf_vlm import HFVLMLabeler
from reward_models.pairs import Pair


@pytest.fixture(scope="module")
def tiny_vlm_dir(tmp_path_factory):
    from vla_rl.policy import ActionTokenizer, build_policy

    policy = build_policy(ActionTokenizer((-1.0,), (1.0,)), state_dim=1, image_size=(64, 64), preset="tiny",
                          use_state=False)
    path = tmp_path_factory.mktemp("vlm") / "tiny-llava"
    policy.base_model.save_pretrained(path)
    policy.processor.save_pretrained(path)
    return path


def _pairs(n=2):
    rng = np.random.default_rng(0)
    return [Pair(rng.integers(0, 255, (1, 64, 64, 3), dtype=np.uint8), rng.integers(0, 255, (1, 64, 64, 3), dtype=np.uint8),
                 encode_instruction("open the drawer", 64), "open the drawer",
                 {"source": "s", "episode": i, "t": 0, "length": 1}, {"source": "s", "episode": i, "t": 3, "length": 1})
            for i in range(n)]


def test_prompts_images_parsing_and_abstains(tiny_vlm_dir, monkeypatch):
    lab = HFVLMLabeler(str(tiny_vlm_dir), max_new_tokens=4)
    calls = []
    real_generate = lab.model.generate
    tok = lab.processor.tokenizer
    scripted = iter(["The first image shows a closed drawer.", "1", "Now the second.", "0"])

    def spy(**inputs):
        calls.append(inputs)
        out = real_generate(**inputs)  # the real path runs (random weights)
        reply = tok(next(scripted), add_special_tokens=False, return_tensors="pt")["input_ids"]
        return torch.cat([out[:, :inputs["input_ids"].shape[1]], reply], dim=1)

    monkeypatch.setattr(lab.model, "generate", spy)
    pairs = _pairs(1)
    [result] = lab.label(pairs)
    # stage 1 got both frames; stage 2 is text only and contains the stage-1 analysis
    assert calls[0]["pixel_values"].shape[0] == 2
    assert "pixel_values" not in calls[1]
    stage2 = tok.decode(calls[1]["input_ids"][0])
    assert "closed drawer" in stage2 and "open the drawer" in stage2
    # answers 1 then (swapped) 0: consistent -> labeled "second better"
    assert result.status == "labeled" and result.label == 1.0 and result.provenance["swap_consistent"]
    assert result.provenance["raw"] == ["The first image shows a closed drawer.", "1"]
    assert len(calls) == 4


def test_random_tiny_model_answers_are_counted_as_abstains(tiny_vlm_dir):
    lab = HFVLMLabeler(str(tiny_vlm_dir), max_new_tokens=3, swap_check=False)
    results = lab.label(_pairs(2))
    assert len(results) == 2
    for r in results:  # a random model's babble is not "0", "1" or "-1"
        assert r.status == "abstain" and r.provenance["parse_failure"] and r.source.startswith("hf:")
