"""The PaliGemma family (SigLIP + linear projector + Gemma, pi0's backbone) through the generic VLAPolicy path.

What the other families share is parametrized in test_vla_policy.py / test_policy_io.py (act = evaluate, exact save/
load, the HF path, the fast image path); here what is PaliGemma's own: the vocabulary layout with the processor's
extra tokens, the prefix-LM attention, Gemma's embedding scale, KV-cached = uncached decoding, LoRA targets."""

import json
import math

import pytest
import torch
from family_checks import (
    check_lora_on_lm_projections,
    check_scores_do_not_depend_on_batch_composition,
    check_unpadded_batch_scores_like_act,
    naive_greedy,
)

from vla_rl.policy import ActionTokenizer, PolicyError, VLAPolicy, build_policy, policy_from_hf
from vla_rl.policy.backbones import FAMILIES, PaliGemmaFamily


@pytest.fixture
def pg(tiny_policy):
    return lambda **kw: tiny_policy(family="paligemma", **kw)


def test_a_tiny_paligemma_policy_builds_with_the_action_tokens_last(pg):
    from transformers import PaliGemmaForConditionalGeneration
    from transformers.models.paligemma.processing_paligemma import EXTRA_TOKENS

    policy = pg()
    assert isinstance(policy.base_model, PaliGemmaForConditionalGeneration)
    assert isinstance(policy.family, PaliGemmaFamily)
    tok = policy.processor.tokenizer
    n_vocab = policy.model.get_output_embeddings().weight.shape[0]
    assert len(tok) == n_vocab == policy.base_model.config.text_config.vocab_size
    off = policy.action_tokenizer.token_offset
    assert off == n_vocab - 256 and tok.convert_ids_to_tokens(off) == "<act_000>"
    assert max(tok.convert_tokens_to_ids(list(EXTRA_TOKENS))) < off  # the processor's <loc>/<seg> come before
    ids = policy._prompt_ids("open the drawer")
    image_id = policy.base_model.config.image_token_id
    assert ids[:16] == [image_id] * 16 and image_id not in ids[16:]  # (64 px / patch 16)^2 image tokens
    assert tok.convert_ids_to_tokens(ids[16:17] + ids[-2:]) == ["<s>", "Ċ", "<state>"]  # BOS, prefix "\n", state


def test_act_emits_only_action_bin_tokens(pg, obs_batch):
    policy = pg(chunk_size=3)
    off = policy.action_tokenizer.token_offset
    for seed in range(3):
        out = policy.act(obs_batch(8, seed=seed), temperature=5.0, generator=torch.Generator().manual_seed(seed))
        assert int(out.tokens.min()) >= off and int(out.tokens.max()) < off + 256


def test_kv_cached_decoding_equals_a_naive_uncached_loop(pg, obs_batch):
    """Each token re-scored by a full forward (prompt = prefix, the tokens so far = causal suffix)."""
    policy = pg(chunk_size=3)
    obs = obs_batch(4)
    out = policy.act(obs, greedy=True)
    tokens, logps = naive_greedy(policy, obs)
    assert torch.equal(tokens, out.tokens)
    torch.testing.assert_close(logps, out.logp, atol=1e-5, rtol=0)


def test_the_prompt_is_a_bidirectional_prefix_and_the_actions_are_causal(pg, obs_batch):
    policy = pg(chunk_size=2)
    obs = obs_batch(2)
    x = policy.prepare(obs)
    other = policy.prepare(dict(obs, state=obs["state"] + 1.0))  # only the last prompt embedding differs
    with torch.no_grad():
        a = policy._forward(x["embeds"], x["mask"], x["positions"], x["pixels"]).last_hidden_state
        b = policy._forward(other["embeds"], x["mask"], x["positions"], x["pixels"]).last_hidden_state
    assert (a[:, -2] - b[:, -2]).abs().max() > 1e-4  # an earlier prompt position sees <state> (prefix-LM)
    tokens = policy.act(obs, greedy=True).tokens
    changed = tokens.clone()
    changed[:, -1] = policy.action_tokenizer.token_offset + (changed[:, -1] - policy.action_tokenizer.token_offset + 7) % 256
    first, second = policy.evaluate(obs, tokens).logp.detach(), policy.evaluate(obs, changed).logp.detach()
    assert torch.equal(first[:, :-1], second[:, :-1])  # an action token never sees a later one


def test_an_unpadded_batch_scores_like_act_too(obs_batch):
    """A prompt exactly max_prompt_tokens long has no padding; there transformers skips the mask unless the
    token types are passed, and Gemma's SDPA then attends bidirectionally over the action tokens as well."""
    check_unpadded_batch_scores_like_act("paligemma", obs_batch)


def test_scores_do_not_depend_on_batch_composition(pg, obs_batch):
    check_scores_do_not_depend_on_batch_composition(pg(chunk_size=2), obs_batch(6))


def test_text_embeddings_carry_gemmas_scale_and_the_state_enters_like_the_image_features(pg, obs_batch):
    """Gemma scales token embeddings by sqrt(hidden) inside its embedding module and never rescales inputs_embeds,
    so the <state> projection (like PaliGemma's projected image features) enters the LM as computed."""
    policy = pg()
    obs = obs_batch(2)
    x = policy.prepare(obs)
    ids = torch.tensor(policy._prompt_ids(policy._instruction_text(obs["instruction"][0])))
    weight = policy.base_model.get_input_embeddings().weight
    hidden = policy.base_model.config.text_config.hidden_size
    torch.testing.assert_close(x["embeds"][0, -len(ids):-1], weight[ids[:-1]] * math.sqrt(hidden))
    state = policy.state_proj(torch.as_tensor(obs["state"]))
    torch.testing.assert_close(x["embeds"][:, -1], state)


def test_lora_attaches_to_the_gemma_projections_and_reference_is_adapter_free(pg, obs_batch):
    check_lora_on_lm_projections(pg(chunk_size=2), obs_batch(4))
    with_vision = pg()
    with_vision.add_lora(r=2, alpha=4, include_vision=True)
    assert any("vision_tower" in n and "lora_" in n for n, _ in with_vision.model.named_parameters())


def test_a_saved_policy_rebuilds_the_family_from_config_json(pg, obs_batch, tmp_path):
    policy = pg()
    policy.add_lora(r=4, alpha=8)
    policy.save_pretrained(tmp_path / "p")
    assert json.loads((tmp_path / "p/base/config.json").read_text())["model_type"] == "paligemma"
    loaded = VLAPolicy.from_pretrained(tmp_path / "p")
    assert isinstance(loaded.family, PaliGemmaFamily)
    assert len(loaded.processor.tokenizer) == len(policy.processor.tokenizer)  # loading the processor adds no token
    obs = obs_batch(3)
    a, b = policy.act(obs, greedy=True), loaded.act(obs, greedy=True)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.logp, b.logp)


def test_unsupported_architectures_are_refused_naming_paligemma_among_the_supported(tmp_path):
    from transformers import Qwen2Config

    Qwen2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                vocab_size=300).save_pretrained(tmp_path / "qwen")
    with pytest.raises(PolicyError, match=r"model_type 'qwen2' is not supported.*'paligemma'.*PaliGemma"):
        policy_from_hf(str(tmp_path / "qwen"), ActionTokenizer((-1.0,), (1.0,)), state_dim=1, image_size=(64, 64))


def test_a_family_whose_processor_appends_tokens_after_the_actions_is_refused(monkeypatch):
    """Without `processor_tokens`, the stock PaliGemmaProcessor would append its 1152 <loc>/<seg> tokens after the
    action tokens, which then would not be the vocabulary's last 256 ids."""

    class Bare(PaliGemmaFamily):
        processor_tokens = ()

    monkeypatch.setitem(FAMILIES, "paligemma", Bare())
    with pytest.raises(PolicyError, match="added tokens after the action tokens.*Bare.processor_tokens"):
        build_policy(ActionTokenizer((-1.0,), (1.0,)), state_dim=1, image_size=(64, 64), family="paligemma",
                     preset="tiny")
