"""The Qwen2.5-VL family (windowed ViT + patch merger + Qwen2 LM) through the generic VLAPolicy path.

What the families share is parametrized in test_vla_policy.py / test_policy_io.py; here what is Qwen2.5-VL's own: the
vocabulary with its vision tokens, the flattened patch layout, the 3-D M-RoPE positions (equal to transformers'
`get_rope_index`, continued by the KV-cached `act` exactly as the teacher-forced `evaluate` numbers them, with
left-padded prompts of different lengths), the <state> embedding, LoRA targets and the image-only processor."""

import json

import numpy as np
import pytest
import torch
from family_checks import (
    check_lora_on_lm_projections,
    check_scores_do_not_depend_on_batch_composition,
    check_unpadded_batch_scores_like_act,
    naive_greedy,
)

from vla_rl.policy import ActionTokenizer, VLAPolicy, build_policy
from vla_rl.policy.backbones import BackboneError, Qwen2_5_VLFamily, vla_family_names

VISION_TOKENS = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]


@pytest.fixture
def qwen(tiny_policy):
    return lambda **kw: tiny_policy(family="qwen2_5_vl", **kw)


def _padded_lengths(policy, obs):
    return policy.prepare(obs)["mask"].sum(-1)


def test_a_tiny_qwen_policy_builds_with_the_action_tokens_last(qwen):
    from transformers import Qwen2_5_VLForConditionalGeneration

    assert "qwen2_5_vl" in vla_family_names()
    policy = qwen()
    assert isinstance(policy.base_model, Qwen2_5_VLForConditionalGeneration)
    assert isinstance(policy.family, Qwen2_5_VLFamily)
    tok, config = policy.processor.tokenizer, policy.base_model.config
    n_vocab = policy.model.get_output_embeddings().weight.shape[0]
    assert len(tok) == n_vocab == config.text_config.vocab_size
    off = policy.action_tokenizer.token_offset
    assert off == n_vocab - 256 and tok.convert_ids_to_tokens(off) == "<act_000>"
    ids = tok.convert_tokens_to_ids(VISION_TOKENS)
    assert max(ids) < off
    assert ids == [config.vision_start_token_id, config.vision_end_token_id, config.image_token_id,
                   config.video_token_id]
    prompt = policy._prompt_ids("open the drawer")  # 64 px, patch 16: 4x4 patches merged 2x2 -> 4 image tokens
    assert tok.convert_ids_to_tokens(prompt[:6]) == ["<|vision_start|>"] + ["<|image_pad|>"] * 4 + ["<|vision_end|>"]
    assert tok.convert_ids_to_tokens(prompt[-1:]) == ["<state>"] and config.image_token_id not in prompt[6:]
    assert config.vision_config.image_size == 64 and config.vision_config.spatial_merge_size == 2


def test_an_image_size_off_the_merge_grid_is_refused():
    with pytest.raises(BackboneError, match="divisible by patch size x merge size = 32, got 48"):
        build_policy(ActionTokenizer((-1.0,), (1.0,)), state_dim=1, image_size=(48, 48), family="qwen2_5_vl",
                     preset="tiny")


def test_the_flattened_pixels_equal_the_image_processors(qwen, obs_batch):
    policy = qwen()
    obs = obs_batch(3)
    x = policy.prepare(obs)
    theirs = policy.processor.image_processor(images=list(obs["image"]), return_tensors="pt")
    assert x["pixels"]["pixel_values"].shape == (3 * 16, 3 * 2 * 16 * 16)
    torch.testing.assert_close(x["pixels"]["pixel_values"], theirs["pixel_values"], atol=1e-5, rtol=0)
    assert torch.equal(x["pixels"]["image_grid_thw"], theirs["image_grid_thw"])


def test_the_3d_positions_equal_transformers_get_rope_index(qwen, obs_batch):
    """The processor's ids, token types and the policy's left padding through `get_rope_index`."""
    policy = qwen()
    obs = obs_batch(6)
    x = policy.prepare(obs)
    assert len(set(x["mask"].sum(-1).tolist())) > 1  # prompts of different lengths, left-padded
    config = policy.base_model.config
    length = x["mask"].shape[1]
    ids = torch.full((6, length), policy.processor.tokenizer.pad_token_id)
    for i in range(6):
        p = policy._prompt_ids(policy._instruction_text(obs["instruction"][i]))
        ids[i, length - len(p):] = torch.tensor(p)
    types = (ids == config.image_token_id).int()
    theirs, deltas = policy.base_model.model.get_rope_index(ids, types, image_grid_thw=x["pixels"]["image_grid_thw"],
                                                            attention_mask=x["mask"])
    assert x["positions"].shape == (3, 6, length)
    assert torch.equal(x["positions"], theirs)
    assert torch.equal(deltas.view(-1), torch.full((6,), 2 - 4))  # text after a 2x2 image: max side - tokens
    image = ids == config.image_token_id
    assert not torch.equal(x["positions"][1][image], x["positions"][2][image])  # rows and columns differ


@pytest.mark.parametrize("chunk_size", [1, 3])
def test_first_ppo_ratio_is_one_on_a_left_padded_mixed_length_batch(qwen, obs_batch, chunk_size):
    policy = qwen(chunk_size=chunk_size)
    obs = obs_batch(8)
    assert len(set(_padded_lengths(policy, obs).tolist())) > 1
    off = policy.action_tokenizer.token_offset
    for seed in range(2):
        out = policy.act(obs, temperature=3.0, generator=torch.Generator().manual_seed(seed))
        assert int(out.tokens.min()) >= off and int(out.tokens.max()) < off + 256  # only action-bin tokens
        ev = policy.evaluate(obs, out.tokens, temperature=3.0)
        torch.testing.assert_close(ev.logp, out.logp, atol=1e-5, rtol=0)
        torch.testing.assert_close(ev.value, out.value, atol=1e-5, rtol=0)


def test_an_unpadded_batch_scores_like_act_too(obs_batch):
    check_unpadded_batch_scores_like_act("qwen2_5_vl", obs_batch)


def test_kv_cached_decoding_equals_a_naive_uncached_loop(qwen, obs_batch):
    """Each token re-scored by a full forward over the prompt and the tokens so far (positions + 1 on all 3 axes)."""
    policy = qwen(chunk_size=3)
    obs = obs_batch(5)
    out = policy.act(obs, greedy=True)
    tokens, logps = naive_greedy(policy, obs)
    assert torch.equal(tokens, out.tokens)
    torch.testing.assert_close(logps, out.logp, atol=1e-5, rtol=0)
    assert policy.base_model.model.rope_deltas is None  # transformers' per-call rope state is never used


def test_scores_do_not_depend_on_batch_composition(qwen, obs_batch):
    check_scores_do_not_depend_on_batch_composition(qwen(chunk_size=2), obs_batch(6))


def test_the_state_enters_as_its_projection_and_moves_the_actions(qwen, obs_batch):
    policy = qwen()
    obs = obs_batch(2)
    x = policy.prepare(obs)
    ids = torch.tensor(policy._prompt_ids(policy._instruction_text(obs["instruction"][0])))
    weight = policy.base_model.get_input_embeddings().weight
    torch.testing.assert_close(x["embeds"][0, -len(ids):-1], weight[ids[:-1]])  # Qwen2 does not scale embeddings
    torch.testing.assert_close(x["embeds"][:, -1], policy.state_proj(torch.as_tensor(obs["state"])))
    tokens = policy.act(obs, greedy=True).tokens
    other = dict(obs, state=obs["state"] + 1.0)
    assert (policy.evaluate(obs, tokens).logp - policy.evaluate(other, tokens).logp).abs().max() > 1e-4


def test_lora_attaches_to_the_qwen2_projections_and_reference_is_adapter_free(qwen, obs_batch):
    policy, obs = qwen(chunk_size=2), obs_batch(4)
    check_lora_on_lm_projections(policy, obs)
    out = policy.act(obs, generator=torch.Generator().manual_seed(0))  # with LoRA on: still ratio 1 on its own samples
    torch.testing.assert_close(policy.evaluate(obs, out.tokens).logp, out.logp, atol=1e-5, rtol=0)
    with_vision = qwen()
    with_vision.add_lora(r=2, alpha=4, include_vision=True)
    vision = {n.rsplit(".", 2)[-2] for n, _ in with_vision.model.named_modules()
              if ".visual." in n and n.endswith(".lora_A")}
    assert vision == {"qkv", "proj", "gate_proj", "up_proj", "down_proj"}  # the ViT blocks, not the patch conv


def test_a_saved_policy_reloads_with_its_processor_and_acts_the_same(qwen, obs_batch, tmp_path):
    from vla_rl.policy.qwen2_5_vl import Qwen2_5_VLImageProcessor

    policy = qwen(chunk_size=2)
    policy.add_lora(r=4, alpha=8)
    policy.save_pretrained(tmp_path / "p")
    config = json.loads((tmp_path / "p/base/config.json").read_text())
    assert config["model_type"] == "qwen2_5_vl" and config["vision_config"]["image_size"] == 64
    loaded = VLAPolicy.from_pretrained(tmp_path / "p")
    assert isinstance(loaded.family, Qwen2_5_VLFamily) and isinstance(loaded.processor, Qwen2_5_VLImageProcessor)
    assert len(loaded.processor.tokenizer) == len(policy.processor.tokenizer)
    obs = obs_batch(4)
    a, b = policy.act(obs, greedy=True), loaded.act(obs, greedy=True)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.logp, b.logp)
    np.testing.assert_array_equal(a.actions, b.actions)


def test_a_hub_style_checkpoint_without_an_image_size_reads_the_envs_frames(qwen, obs_batch, tmp_path):
    """Published Qwen2.5-VL configs name no image size (dynamic resolution) and their processors allow a pixel range:
    `policy_from_hf` takes the env's side (a multiple of patch x merge), records it, and pins the processor to it."""
    from vla_rl.policy import policy_from_hf
    from vla_rl.policy.backbones import BackboneError

    policy = qwen()
    policy.save_pretrained(tmp_path / "p")
    base = tmp_path / "p/base"
    config = json.loads((base / "config.json").read_text())
    del config["vision_config"]["image_size"]
    (base / "config.json").write_text(json.dumps(config))
    files = [f for f in base.glob("*.json") if "size" in json.loads(f.read_text()).get("image_processor", {})
             or "size" in json.loads(f.read_text())]
    for f in files:  # a hub processor: 4 to 16384 merged tokens, not one fixed image
        d = json.loads(f.read_text())
        target = d.get("image_processor", d)
        target["size"] = {"shortest_edge": 128 * 128, "longest_edge": 28 * 28 * 16384}  # would upscale 64 px
        f.write_text(json.dumps(d))
    at, dims = policy.action_tokenizer, policy.spec.state_dim
    loaded = policy_from_hf(str(base), at, state_dim=dims, image_size=(64, 64),
                            max_prompt_tokens=policy.spec.max_prompt_tokens)
    assert files and loaded.base_model.config.vision_config.image_size == 64 and loaded.vision_image_size == 64
    assert loaded.processor.image_processor.size == {"shortest_edge": 64 * 64, "longest_edge": 64 * 64}
    obs = obs_batch(2)
    assert loaded.prepare(obs)["embeds"].shape == policy.prepare(obs)["embeds"].shape  # 4 merged image tokens
    assert loaded.act(obs, greedy=True).tokens.shape == (2, policy.spec.n_action_tokens)
    with pytest.raises(BackboneError, match=r"multiple of patch size x merge size = 32 px; the env renders 48 px"):
        policy_from_hf(str(base), at, state_dim=dims, image_size=(48, 48))


def test_policy_family_option_accepts_it():
    from vla_rl.config import PolicyOptions

    PolicyOptions(family="qwen2_5_vl", preset="tiny").validate()
