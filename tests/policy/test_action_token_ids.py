"""Which vocabulary ids become the 256 action bins (`factory.action_token_offset`).

Real checkpoints hold their added specials at the end of the vocabulary (llava-1.5: `<image>` = 32000 of a 32064-row
embedding; PaliGemma: 257152 of 257216). Taking the last 256 ids made an action bin the image token, and `evaluate`
failed with "Image features and image tokens do not match" (transformers finds the image by comparing embeddings
with the image token's). The bins are now the highest 256 consecutive ids that no special or added token holds."""

import dataclasses

import pytest
import torch

from vla_rl.policy import ActionTokenizer, PolicyError, VLAPolicy, policy_from_hf
from vla_rl.policy.factory import action_token_offset, reserved_token_ids

ADDED = ["<image>", "<pad>", "<fake_token_around_image>", "<global-img>", "<end_of_utterance>"]


def _checkpoint(path, layout="llava-1.5", alphabet=True, bpe_vocab_size=512):
    """A tiny LLaVA saved the way the hub serves one: a BPE base vocabulary, then added special tokens.

    llava-1.5: `<image>`, `<pad>` and Idefics3's placeholders appended, embeddings padded to a multiple of 64 rows.
    image-last: only `<image>` appended, the very last id, no padding rows."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from vla_rl.policy.backbones import LlavaFamily, get_preset
    from vla_rl.policy.text_tokenizer import default_corpus
    from vla_rl.policy.vla_policy import OPENVLA_PROMPT

    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=bpe_vocab_size, special_tokens=["<unk>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet() if alphabet else [],
                                  show_progress=False)
    bpe.train_from_iterator(default_corpus(OPENVLA_PROMPT), trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    if layout == "llava-1.5":
        tok.add_special_tokens({"pad_token": "<pad>", "additional_special_tokens": [t for t in ADDED if t != "<pad>"]})
    else:
        tok.add_special_tokens({"pad_token": "<s>", "additional_special_tokens": ["<image>"]})
    torch.manual_seed(0)
    model, processor = LlavaFamily().build(get_preset("tiny"), 64, tok)
    if layout == "llava-1.5":
        model.resize_token_embeddings((len(tok) // 64 + 1) * 64, mean_resizing=False)  # 32064 rows for 32002
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def _load(path, **kw):
    at = ActionTokenizer((-1.0, -0.5), (1.0, 0.5))
    return policy_from_hf(str(path), at, state_dim=2, image_size=(64, 64), max_prompt_tokens=32, **kw)


def _every_bin(off: int) -> torch.Tensor:
    """(64, 8) tokens in which each of the 256 bins is an input token (not only the last, which no forward reads)."""
    bins = torch.cat([torch.arange(256).view(32, 8), ((torch.arange(256) + 1) % 256).view(32, 8)])
    assert set(bins[:, :-1].flatten().tolist()) == set(range(256))
    return bins + off


@pytest.mark.parametrize("layout,use_state", [("llava-1.5", True), ("image-last", False)])
def test_every_bin_acts_and_evaluates_on_a_checkpoint_whose_image_token_ends_the_vocabulary(
        tmp_path, obs_batch, monkeypatch, layout, use_state):
    import vla_rl.policy.vla_policy as vla_policy

    policy = _load(_checkpoint(tmp_path / "hf", layout), chunk_size=4, use_state=use_state)
    image_id = policy.base_model.config.image_token_id
    n_rows = policy.model.get_output_embeddings().weight.shape[0]
    assert image_id >= n_rows - 256  # among the last 256 ids, which the old rule made the bins
    tokens = _every_bin(policy.action_tokenizer.token_offset)
    steps = iter(tokens.T - policy.action_tokenizer.token_offset)
    monkeypatch.setattr(vla_policy, "sample_categorical", lambda logp, generator: next(steps))  # force each bin
    obs = obs_batch(64)
    out = policy.act(obs)
    assert torch.equal(out.tokens, tokens)
    ev = policy.evaluate(obs, tokens)  # before the fix: "Image features and image tokens do not match"
    torch.testing.assert_close(ev.logp, out.logp, atol=1e-5, rtol=0)


def test_the_bins_skip_the_image_token_and_every_added_token(tmp_path):
    policy = _load(_checkpoint(tmp_path / "hf"))  # use_state: <state> is added too (id after the others)
    tok, model = policy.processor.tokenizer, policy.base_model
    off = policy.action_tokenizer.token_offset
    ids = set(range(off, off + 256))
    assert off == tok.vocab_size - 256  # OpenVLA's rule: the last 256 ids of the base vocabulary
    for name in ADDED + ["<state>", "<s>", "</s>", "<unk>"]:
        assert tok.convert_tokens_to_ids(name) not in ids, name
    assert not ids & set(tok.added_tokens_decoder) and not ids & set(tok.all_special_ids)
    assert max(ids) < min(len(tok), model.get_input_embeddings().weight.shape[0])
    assert model.get_input_embeddings().weight.shape[0] > len(tok)  # the padding rows are not used either


def test_a_config_image_token_inside_the_base_vocabulary_is_avoided_too(tmp_path):
    policy = _load(_checkpoint(tmp_path / "hf"), use_state=False)
    model, processor = policy.base_model, policy.processor
    model.config.image_token_index = processor.tokenizer.vocab_size - 10  # e.g. a remote-code config field
    assert model.config.image_token_index in reserved_token_ids(processor, model, 256)
    assert action_token_offset(processor, model, 256, "x") == processor.tokenizer.vocab_size - 10 - 256


@pytest.mark.parametrize("family", ["llava", "idefics3", "paligemma", "qwen2_5_vl"])
def test_from_config_policies_keep_the_last_ids(tiny_policy, tmp_path, family):
    """The project's tokenizer ends with its own <act_NNN> tokens: the rule keeps build_policy's offset (every saved
    policy and benchmark keeps its ids), and a saved base loads through policy_from_hf with the same ids."""
    built = tiny_policy(family=family)
    tok = built.processor.tokenizer
    assert built.action_tokenizer.token_offset == len(tok) - 256
    assert action_token_offset(built.processor, built.base_model, 256, "x") == len(tok) - 256
    built.base_model.save_pretrained(tmp_path / "hf")
    built.processor.save_pretrained(tmp_path / "hf")
    assert _load(tmp_path / "hf").action_tokenizer.token_offset == len(tok) - 256


def test_a_saved_policy_keeps_its_stored_offset(tiny_policy, tmp_path):
    policy = tiny_policy()
    at = dataclasses.replace(policy.action_tokenizer, token_offset=policy.action_tokenizer.token_offset - 7)
    VLAPolicy(policy.model, policy.processor, at, policy.spec).save_pretrained(tmp_path / "p")
    assert VLAPolicy.from_pretrained(tmp_path / "p").action_tokenizer.token_offset == at.token_offset  # not recomputed


def test_a_checkpoint_without_room_for_the_bins_is_refused(tmp_path):
    path = _checkpoint(tmp_path / "hf", layout="image-last", alphabet=False, bpe_vocab_size=200)
    with pytest.raises(PolicyError, match=r"hf: no 256 consecutive token ids below \d+ are free of special/added"):
        _load(path, use_state=False)


def test_the_constructor_refuses_bins_that_cover_the_image_token(tiny_policy):
    policy = tiny_policy()
    image_id = policy.base_model.config.image_token_id
    at = dataclasses.replace(policy.action_tokenizer, token_offset=max(image_id - 255, 0))
    with pytest.raises(PolicyError, match=f"include the image token id {image_id}: transformers finds the image"):
        VLAPolicy(policy.model, policy.processor, at, policy.spec)
