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


GOALS = ("open the drawer", "press the button down firmly", "push the red block onto the green target")


def _pairs(n=2):
    rng = np.random.default_rng(0)
    return [Pair(rng.integers(0, 255, (1, 64, 64, 3), dtype=np.uint8), rng.integers(0, 255, (1, 64, 64, 3), dtype=np.uint8),
                 encode_instruction(GOALS[i % 3], 64), GOALS[i % 3],
                 {"source": "s", "episode": i, "t": 0, "length": 1}, {"source": "s", "episode": i, "t": 3, "length": 1})
            for i in range(n)]


def _scripted_generate(lab, monkeypatch, replies):
    """Run the real generate (random weights), then substitute scripted replies row by row."""
    calls, real_generate, tok = [], lab.model.generate, lab.processor.tokenizer
    replies = iter(replies)

    def spy(**inputs):
        calls.append(inputs)
        out = real_generate(**inputs)
        rows = [tok(next(replies), add_special_tokens=False)["input_ids"] + [tok.eos_token_id]  # a finished reply
                for _ in range(out.shape[0])]
        width = max(map(len, rows))
        padded = torch.tensor([r + [tok.pad_token_id] * (width - len(r)) for r in rows])
        return torch.cat([out[:, :inputs["input_ids"].shape[1]], padded], dim=1)

    monkeypatch.setattr(lab.model, "generate", spy)
    return calls


def test_prompts_images_parsing_and_abstains(tiny_vlm_dir, monkeypatch):
    lab = HFVLMLabeler(str(tiny_vlm_dir), max_new_tokens=4)
    tok = lab.processor.tokenizer
    calls = _scripted_generate(lab, monkeypatch, ["The first image shows a closed drawer.", "1", "Now the second.", "0"])
    [result] = lab.label(_pairs(1))
    # stage 1 got both frames; stage 2 is text only and contains the stage-1 analysis
    assert calls[0]["pixel_values"].shape[0] == 2
    assert "pixel_values" not in calls[1]
    stage2 = tok.decode(calls[1]["input_ids"][0])
    assert "closed drawer" in stage2 and "open the drawer" in stage2
    # answers 1 then (swapped) 0: consistent -> labeled "second better"
    assert result.status == "labeled" and result.label == 1.0 and result.provenance["swap_consistent"]
    assert result.provenance["raw"] == ["The first image shows a closed drawer.", "1"]
    assert result.provenance["raw_swapped"] == ["Now the second.", "0"]
    assert len(calls) == 4


def test_batches_group_pairs_and_only_decided_pairs_are_asked_again(tiny_vlm_dir, monkeypatch):
    lab = HFVLMLabeler(str(tiny_vlm_dir), max_new_tokens=4, batch_size=2)
    replies = [
        "a0", "a1", "1", "-1",  # batch 1 (pairs 0, 1): stage 1, stage 2 -> pair 1 unsure
        "s0", "0",  # pair 0 swapped: consistent
        "b2", "maybe",  # batch 2 (pair 2): unparseable -> abstain, not asked again
    ]
    calls = _scripted_generate(lab, monkeypatch, replies)
    results = lab.label(_pairs(3))
    assert [c["input_ids"].shape[0] for c in calls] == [2, 2, 1, 1, 1, 1]
    assert calls[0]["pixel_values"].shape[0] == 4  # two frames per pair, in one call
    # left padding: every row of a batch ends with the generation prompt, none with padding
    assert (calls[0]["attention_mask"][:, -1] == 1).all() and (calls[1]["attention_mask"][:, -1] == 1).all()
    assert [r.status for r in results] == ["labeled", "abstain", "abstain"]
    assert results[0].label == 1.0 and results[0].provenance["raw_swapped"] == ["s0", "0"]
    assert results[1].provenance["parsed"] == -1 and "raw_swapped" not in results[1].provenance
    assert results[2].provenance["parse_failure"] and results[2].provenance["raw"] == ["b2", "maybe"]


def test_batched_replies_equal_one_pair_at_a_time(tiny_vlm_dir, monkeypatch):
    pairs = _pairs(3)  # goals of different lengths: stage-1 prompts are padded too
    one = HFVLMLabeler(str(tiny_vlm_dir), max_new_tokens=6, swap_check=False, batch_size=1).label(pairs)
    batched = HFVLMLabeler(str(tiny_vlm_dir), max_new_tokens=6, swap_check=False, batch_size=3)
    masks, real_generate = [], batched.model.generate
    monkeypatch.setattr(batched.model, "generate", lambda **kw: masks.append(kw["attention_mask"]) or real_generate(**kw))
    many = batched.label(pairs)
    assert (masks[0] == 0).any() and (masks[1] == 0).any()  # both stages really were padded
    assert [r.provenance["raw"] for r in one] == [r.provenance["raw"] for r in many]
    assert len({r.provenance["raw"][0] for r in one}) > 1  # the replies depend on the pair


def test_a_reply_cut_at_max_tokens_leaves_the_pair_unlabeled_with_the_cause(tiny_vlm_dir):
    lab = HFVLMLabeler(str(tiny_vlm_dir), max_new_tokens=3, swap_check=False)
    results = lab.label(_pairs(2))  # a random model babbles up to the limit, no end-of-sequence token
    assert len(results) == 2
    for r in results:
        assert r.status == "unlabeled" and r.label is None and r.source.startswith("hf:")
        assert "reply cut at max_tokens=3" in r.provenance["error"] and len(r.provenance["raw"][0]) > 0


def test_an_unfinished_analysis_is_never_turned_into_a_label(tiny_vlm_dir, monkeypatch):
    lab = HFVLMLabeler(str(tiny_vlm_dir), max_new_tokens=4, swap_check=False)
    tok = lab.processor.tokenizer
    real_generate, replies = lab.model.generate, iter(["one two three four five six seven", "1"])

    def cut_then_answer(**inputs):  # stage 1 runs to the limit (no EOS), stage 2 answers "1" and stops
        out = real_generate(**inputs)
        ids = tok(next(replies), add_special_tokens=False)["input_ids"]
        ids = ids[:4] if len(ids) >= 4 else ids + [tok.eos_token_id]
        return torch.cat([out[:, :inputs["input_ids"].shape[1]], torch.tensor([ids])], dim=1)

    monkeypatch.setattr(lab.model, "generate", cut_then_answer)
    [r] = lab.label(_pairs(1))
    assert r.status == "unlabeled" and r.label is None and "reply cut at max_tokens=4" in r.provenance["error"]
