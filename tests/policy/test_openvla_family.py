"""OpenVLA checkpoints load into VLAPolicy through vla-rl's own transformers model (no remote code), checked on a tiny
checkpoint written in OpenVLA's exact layout from random tensors (`openvla_checkpoint`; no download).

- the towers: the converted DINOv2 / SigLIP give the second-to-last-block patch features of timm's ViTs on the same
  tensors — against a reference written out from timm's ViT code (always), and against timm itself when it imports
  (it needs torchvision; the test is skipped otherwise);
- the whole model: logits equal a plain composition of the checkpoint's parts (towers -> concat -> projector ->
  Llama with the patches inserted after BOS, as OpenVLA's forward does);
- the checks every family passes (KV-cached = uncached decoding, first PPO ratio 1, LoRA on the Llama projections with
  an adapter-free reference, exact save/load), the from-preset family too;
- OpenVLA's action tokens and `predict_action`'s un-normalisation on hand numbers, `unnorm_key`;
- export back to OpenVLA's layout (tensor for tensor) and reload; bad checkpoints as one-line errors."""

import json

import numpy as np
import pytest
import torch
from family_checks import check_lora_on_lm_projections, check_unpadded_batch_scores_like_act, naive_greedy
from openvla_checkpoint import (
    BASE_VOCAB,
    DINO,
    IMAGE,
    MEANS,
    NORM_STATS,
    PAD_TO,
    SIGLIP,
    STDS,
    TEXT,
    openvla_config,
    openvla_tensors,
    projector,
    timm_vit_features,
    write_checkpoint,
)

from vla_rl.policy import ActionTokenizer, PolicyError, VLAPolicy, build_policy, policy_from_hf
from vla_rl.policy.backbones import OpenVLAFamily

PROMPT = "In: What action should the robot take to open the drawer?\nOut:"
OFFSET = TEXT["vocab_size"] - PAD_TO - 256  # OpenVLA: vocab_size - pad_to_multiple_of - n_bins


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("openvla") / "tiny")


def _load(path, dims=2, **kw):
    at = ActionTokenizer((-1.0,) * dims, (1.0,) * dims)
    kw.setdefault("use_state", False)
    return policy_from_hf(str(path), at, state_dim=2, image_size=(64, 64), **kw)


def _pixels(seed=0):
    """OpenVLA's 6-channel pixel_values of two random images: DINOv2's then SigLIP's normalisation."""
    x = torch.rand(2, 3, IMAGE, IMAGE, generator=torch.Generator().manual_seed(seed))
    return torch.cat([(x - torch.tensor(m).view(1, 3, 1, 1)) / torch.tensor(s).view(1, 3, 1, 1)
                      for m, s in zip(MEANS, STDS)], 1)


def test_the_checkpoint_converts_tensor_for_tensor_and_the_prompt_is_openvlas(ckpt):
    from vla_rl.policy.openvla import to_prismatic

    policy = _load(ckpt)
    model = policy.base_model
    assert type(model).__name__ == "PrismaticVLAForConditionalGeneration" and isinstance(policy.family, OpenVLAFamily)
    assert model.config.model_type == "vla_rl_openvla" and model.config.image_token_id == TEXT["vocab_size"] - 1
    assert model.config.image_means == MEANS and model.config.image_stds == STDS  # the saved tvf_normalize_params
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    converted = to_prismatic(openvla_tensors(), model.config, shapes, ckpt)
    assert set(converted) == set(model.state_dict())
    assert all(torch.equal(converted[k], v) for k, v in model.state_dict().items())
    tok = policy.processor.tokenizer
    theirs = tok(PROMPT)["input_ids"]  # OpenVLA: tokenizer(prompt), patches after BOS, then 29871 ("▁") appended
    ids = policy.processor(text=["<image>" + PROMPT])["input_ids"][0]
    assert ids == theirs[:1] + [model.config.image_token_id] * 16 + theirs[1:] + [tok.convert_tokens_to_ids("▁")]
    assert theirs[0] == tok.bos_token_id


def test_each_tower_gives_timms_second_to_last_block_patch_features(ckpt):
    """Against timm's ViT forward written out on the checkpoint's tensors (no final norm, prefix tokens dropped)."""
    tower = _load(ckpt).base_model.model.vision_tower
    t, x = openvla_tensors(), _pixels()
    with torch.no_grad():
        ours = tower(x)
    torch.testing.assert_close(ours[..., :32], timm_vit_features(t, DINO, x[:, :3], dino=True), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours[..., 32:], timm_vit_features(t, SIGLIP, x[:, 3:], dino=False), atol=1e-5, rtol=1e-5)


def test_the_towers_equal_timm_itself_on_the_same_weights(ckpt):
    """timm (OpenVLA's own vision code) built with the tiny sizes loads the checkpoint's tensors strictly — the layout
    is timm's — and its `get_intermediate_layers(n={depth - 2})`, full features and SigLIP pooling head equal ours."""
    timm = pytest.importorskip("timm")
    model = _load(ckpt).base_model
    tower, t, x = model.model.vision_tower, openvla_tensors(), _pixels(1)
    for prefix, timm_id, ours_full, width, kw in (
            (DINO, "vit_large_patch14_reg4_dinov2.lvd142m", tower.featurizer, 32, dict(mlp_ratio=4.0)),
            (SIGLIP, "vit_so400m_patch14_siglip_224", tower.fused_featurizer, 48, dict(mlp_ratio=2.0))):
        vit = timm.create_model(timm_id, pretrained=False, num_classes=0, img_size=IMAGE, patch_size=8,
                                embed_dim=width, depth=3, num_heads=16, **kw).eval()
        vit.load_state_dict({k[len(prefix):].replace("scale_factor", "gamma"): v for k, v in t.items()
                             if k.startswith(prefix)}, strict=True)
        pixels = x[:, :3] if prefix == DINO else x[:, 3:]
        with torch.no_grad():
            theirs = vit.get_intermediate_layers(pixels, n={len(vit.blocks) - 2})[0]
            torch.testing.assert_close(theirs, timm_vit_features(t, prefix, pixels, prefix == DINO), atol=1e-5,
                                       rtol=1e-5)
            ours = tower(x)[..., :32] if prefix == DINO else tower(x)[..., 32:]
            torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
            full = ours_full(pixel_values=pixels)
            torch.testing.assert_close(full.last_hidden_state, vit.forward_features(pixels), atol=1e-5, rtol=1e-5)
            if prefix == SIGLIP:
                torch.testing.assert_close(full.pooler_output, vit.forward_head(vit.forward_features(pixels)),
                                           atol=1e-5, rtol=1e-5)


def test_logits_equal_a_plain_composition_of_the_parts(ckpt):
    """Towers -> concat -> projector -> Llama with the patches inserted after BOS (OpenVLA's forward), all from the
    checkpoint's tensors, against the converted model fed its own prompt ids."""
    from transformers import LlamaConfig, LlamaForCausalLM

    policy = _load(ckpt)
    model, tok, t, x = policy.base_model, policy.processor.tokenizer, openvla_tensors(), _pixels(2)
    llama = LlamaForCausalLM(LlamaConfig(**{k: v for k, v in TEXT.items() if k not in ("model_type", "torch_dtype")}))
    llama.load_state_dict({k[len("language_model."):]: v for k, v in t.items() if k.startswith("language_model.")})
    ids = torch.tensor([tok(PROMPT)["input_ids"] + [tok.convert_tokens_to_ids("▁")]] * 2)
    with torch.no_grad():
        patches = projector(t, torch.cat([timm_vit_features(t, DINO, x[:, :3], True),
                                          timm_vit_features(t, SIGLIP, x[:, 3:], False)], -1))
        embeds = llama.get_input_embeddings()(ids)
        theirs = llama(inputs_embeds=torch.cat([embeds[:, :1], patches, embeds[:, 1:]], 1)).logits
        ours_ids = torch.tensor(policy.processor(text=["<image>" + PROMPT] * 2)["input_ids"])
        ours = model(input_ids=ours_ids, pixel_values=x).logits
    assert ours.shape == theirs.shape == (2, 16 + ids.shape[1], TEXT["vocab_size"])
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)
    # the policy's path: ids replaced by embeddings, the image found by the image token's embedding row
    with torch.no_grad():
        via_embeds = model(inputs_embeds=model.get_input_embeddings()(ours_ids), pixel_values=x).logits
    torch.testing.assert_close(via_embeds, ours, atol=1e-6, rtol=0)


def test_the_policys_pixels_are_each_towers_normalisation_of_the_image(ckpt, obs_batch):
    policy = _load(ckpt)
    obs = obs_batch(2)
    pixels = policy.prepare(obs)["pixels"]["pixel_values"]
    unit = torch.nn.functional.interpolate(torch.as_tensor(obs["image"]).permute(0, 3, 1, 2).float() / 255,
                                           size=(IMAGE, IMAGE), mode="bilinear", antialias=True, align_corners=False)
    assert pixels.shape == (2, 6, IMAGE, IMAGE)
    for i, (m, s) in enumerate(zip(MEANS, STDS)):
        torch.testing.assert_close(pixels[:, 3 * i:3 * i + 3], (unit - torch.tensor(m).view(1, 3, 1, 1)) /
                                   torch.tensor(s).view(1, 3, 1, 1), atol=1e-6, rtol=0)


@pytest.mark.parametrize("use_state", [False, True])
def test_kv_cached_decoding_and_the_first_ppo_ratio(ckpt, obs_batch, use_state):
    policy = _load(ckpt, chunk_size=2, use_state=use_state)
    obs = obs_batch(6)
    assert len(set(policy.prepare(obs)["mask"].sum(-1).tolist())) > 1  # left-padded prompts of different lengths
    out = policy.act(obs, greedy=True)
    tokens, logps = naive_greedy(policy, obs)
    assert torch.equal(tokens, out.tokens)
    torch.testing.assert_close(logps, out.logp, atol=1e-5, rtol=0)
    sampled = policy.act(obs, temperature=1.3, generator=torch.Generator().manual_seed(0))
    assert int(sampled.tokens.min()) >= OFFSET and int(sampled.tokens.max()) < OFFSET + 256
    ev = policy.evaluate(obs, sampled.tokens, temperature=1.3)
    torch.testing.assert_close(ev.logp, sampled.logp, atol=1e-5, rtol=0)
    torch.testing.assert_close(ev.value, sampled.value, atol=1e-5, rtol=0)


def test_lora_on_the_llama_projections_with_an_adapter_free_reference(ckpt, obs_batch):
    check_lora_on_lm_projections(_load(ckpt, chunk_size=2), obs_batch(4))
    policy = _load(ckpt)
    policy.add_lora(r=2, alpha=4, include_vision=True)
    names = {n for n, _ in policy.model.named_modules() if n.endswith(".lora_A")}
    assert any(".featurizer." in n for n in names) and any(".fused_featurizer." in n for n in names)


def test_save_and_load_round_trip_is_exact(ckpt, obs_batch, tmp_path):
    policy = _load(ckpt, chunk_size=2, use_state=True, unnorm_key="toy")
    policy.add_lora(r=4, alpha=8)
    with torch.no_grad():
        for n, p in policy.model.named_parameters():
            if "lora_B" in n:
                p.add_(0.1)
    policy.save_pretrained(tmp_path / "p")
    assert json.loads((tmp_path / "p/base/config.json").read_text())["model_type"] == "vla_rl_openvla"
    assert json.loads((tmp_path / "p/action_tokenizer.json").read_text())["scheme"] == "openvla"
    loaded = VLAPolicy.from_pretrained(tmp_path / "p", trainable=True)
    assert loaded.action_tokenizer == policy.action_tokenizer and loaded.spec == policy.spec
    a, b = policy.state_dict(), loaded.state_dict()
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    obs = obs_batch(3)
    oa, ob = policy.act(obs, greedy=True), loaded.act(obs, greedy=True)
    assert torch.equal(oa.tokens, ob.tokens) and torch.equal(oa.logp, ob.logp)
    np.testing.assert_array_equal(oa.actions, ob.actions)
    # a saved base of a converted checkpoint loads through policy_from_hf too, with OpenVLA's tokens and stats
    again = _load(tmp_path / "p/base", unnorm_key="toy", use_state=True)
    assert again.action_tokenizer == policy.action_tokenizer


def test_openvla_action_tokens_and_unnormalisation_on_hand_numbers():
    """prismatic/vla/action_tokenizer.py + predict_action: token = vocab - digitize(a, linspace(-1, 1, 256));
    decoding: centres of the 255 intervals at clip(vocab - token - 1, 0, 254), then 0.5 (n + 1)(q99 - q01) + q01 where
    the mask is set (the gripper is not)."""
    vocab = 32000  # text_config.vocab_size 32064 - pad_to_multiple_of 64
    stats = NORM_STATS["bridge_orig"]["action"]
    at = ActionTokenizer(tuple(stats["q01"]), tuple(stats["q99"]), 256, vocab - 256, "openvla", tuple(stats["mask"]))
    tokens = np.array([[31999, 31744, 31872], [31745, 31800, 31999]])
    centre = lambda i: -1 + (2 / 255) * (i + 0.5)  # noqa: E731 - the 255 centres of linspace(-1, 1, 256)
    n = np.array([[centre(0), centre(254), centre(127)], [centre(254), centre(199), centre(0)]])
    q01, q99 = np.array(stats["q01"]), np.array(stats["q99"])
    expected = np.where([True, True, False], 0.5 * (n + 1) * (q99 - q01) + q01, n)
    np.testing.assert_allclose(at.decode(tokens), expected.astype(np.float32), rtol=0, atol=0)
    np.testing.assert_allclose(expected[0, 0], 0.5 * (2 * 0.5 / 255) * 0.06 - 0.03, atol=1e-12)  # = -0.02988...
    # encoding: OpenVLA's BOUNDS_Q99 normalisation, clip, digitize; the two highest ids share a centre
    actions = np.array([[-0.03, 0.04, 1.0], [0.0, -5.0, 0.3]])
    normed = np.where([True, True, False], np.clip(2 * (actions - q01) / (q99 - q01 + 1e-8) - 1, -1, 1),
                      np.clip(actions, -1, 1))
    assert at.encode(actions).tolist() == (vocab - np.digitize(normed, np.linspace(-1, 1, 256))).tolist()
    assert at.encode(np.array([[0.05, 0.05, 1.0]])).tolist() == [[31744, 31744, 31744]]  # a = 1 -> digitize 256
    assert at.encode(np.array([[0.03, 0.04, 1.0]])).tolist() == [[31745, 31745, 31744]]  # q99 itself: the 1e-8


def test_unnorm_key_picks_the_datasets_statistics_for_the_policys_actions(ckpt, obs_batch):
    policy = _load(ckpt, dims=3, unnorm_key="bridge_orig")
    at = policy.action_tokenizer
    stats = NORM_STATS["bridge_orig"]["action"]
    assert (at.scheme, at.token_offset, at.low, at.high, at.mask) == (
        "openvla", BASE_VOCAB - 256, tuple(stats["q01"]), tuple(stats["q99"]), tuple(stats["mask"]))
    out = policy.act(obs_batch(4), temperature=5.0, generator=torch.Generator().manual_seed(1))
    edges = np.linspace(-1, 1, 256)
    centres = (edges[:-1] + edges[1:]) / 2
    normed = centres[np.clip(BASE_VOCAB - out.tokens.numpy() - 1, 0, 254)]  # predict_action on these tokens
    q01, q99 = np.array(stats["q01"]), np.array(stats["q99"])
    theirs = np.where(stats["mask"], 0.5 * (normed + 1) * (q99 - q01) + q01, normed)
    np.testing.assert_array_equal(out.actions.reshape(4, 3), theirs.astype(np.float32))
    without = _load(ckpt, dims=2)  # no unnorm_key: OpenVLA's tokens on the caller's bounds (a new robot)
    assert (without.action_tokenizer.scheme, without.action_tokenizer.low) == ("openvla", (-1.0, -1.0))


def test_pretrain_wraps_an_openvla_checkpoint_with_the_configured_unnorm_key(ckpt):
    """`vla-rl pretrain --policy.base_model DIR --policy.unnorm_key K` reaches the loader (the path that runs)."""
    from types import SimpleNamespace

    from vla_rl.config import PolicyOptions, PretrainConfig
    from vla_rl.pretrain_run import build_initial_policy

    actions = np.random.default_rng(0).uniform(-0.5, 0.5, (50, 3)).astype(np.float32)
    data = SimpleNamespace(all_actions=actions, env={"image_shape": [224, 224, 3], "state_dim": 2, "env_id": "x"},
                           env_options={})
    keyed = build_initial_policy(PretrainConfig(policy=PolicyOptions(base_model=str(ckpt), unnorm_key="bridge_orig",
                                                                     use_state=False)), data)
    stats = NORM_STATS["bridge_orig"]["action"]
    assert (keyed.action_tokenizer.low, keyed.action_tokenizer.high) == (tuple(stats["q01"]), tuple(stats["q99"]))
    own = build_initial_policy(PretrainConfig(policy=PolicyOptions(base_model=str(ckpt), use_state=False)), data)
    assert own.action_tokenizer.scheme == "openvla" and own.action_tokenizer.low != tuple(stats["q01"])  # the demos'


def test_vla_rl_export_writes_openvlas_layout_from_a_policy_directory(ckpt, obs_batch, tmp_path):
    """`vla-rl export --format openvla --stats_key K`: a saved policy (LoRA trained) back in OpenVLA's layout, its
    action statistics under K, loading to the same actions; the option's misuse is one ConfigError."""
    from vla_rl.base.errors import ConfigError
    from vla_rl.commands import export
    from vla_rl.train_config import ExportConfig

    policy = _load(ckpt, dims=3, unnorm_key="bridge_orig")
    policy.add_lora(r=4, alpha=8)
    with torch.no_grad():
        for name, p in policy.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)
    policy.save_pretrained(tmp_path / "trained")
    cfg = ExportConfig(checkpoint=str(tmp_path / "trained"), out=str(tmp_path / "ov"), format="openvla",
                       stats_key="my_robot")
    cfg.validate()
    assert export.run(cfg) == 0
    config = json.loads((tmp_path / "ov/config.json").read_text())
    assert config["model_type"] == "openvla" and "my_robot" in config["norm_stats"]
    back = _load(tmp_path / "ov", dims=3, unnorm_key="my_robot")
    obs = obs_batch(3)
    a, b = policy.act(obs, greedy=True), back.act(obs, greedy=True)
    torch.testing.assert_close(b.logp, a.logp, atol=1e-4, rtol=0)
    np.testing.assert_array_equal(b.actions, a.actions)
    with pytest.raises(ConfigError, match="stats_key='k' names OpenVLA norm_stats"):
        ExportConfig(checkpoint="c", out="o", stats_key="k").validate()


def test_export_to_openvlas_layout_round_trips_exactly(ckpt, obs_batch, tmp_path):
    from safetensors.torch import load_file

    from vla_rl.policy.openvla_export import export_openvla

    policy = _load(ckpt, unnorm_key="toy")
    export_openvla(policy, tmp_path / "out")
    original, exported = load_file(str(ckpt / "model.safetensors")), load_file(str(tmp_path / "out/model.safetensors"))
    assert set(exported) == set(original) and all(torch.equal(exported[k], original[k]) for k in original)
    for name in ("config.json", "preprocessor_config.json"):
        assert json.loads((tmp_path / "out" / name).read_text()) == json.loads((ckpt / name).read_text())
    again = _load(tmp_path / "out", unnorm_key="toy")
    a, b = policy.base_model.state_dict(), again.base_model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    obs = obs_batch(3)
    assert torch.equal(policy.act(obs, greedy=True).logp, again.act(obs, greedy=True).logp)
    # a fine-tuned policy: LoRA merged into the exported weights, its action statistics under a new key
    tuned = _load(ckpt, dims=2)
    tuned.add_lora(r=4, alpha=8)
    with torch.no_grad():
        for n, p in tuned.model.named_parameters():
            if "lora_B" in n:
                p.add_(0.05)
    export_openvla(tuned, tmp_path / "tuned", stats_key="my_robot")
    merged = _load(tmp_path / "tuned", unnorm_key="my_robot")
    assert merged.action_tokenizer == tuned.action_tokenizer
    tokens = tuned.act(obs, generator=torch.Generator().manual_seed(0)).tokens
    torch.testing.assert_close(merged.evaluate(obs, tokens).logp, tuned.evaluate(obs, tokens).logp, atol=1e-5, rtol=0)
    with pytest.raises(PolicyError, match="exists"):
        export_openvla(tuned, tmp_path / "tuned")
    with pytest.raises(PolicyError, match="<state>"):
        export_openvla(_load(ckpt, use_state=True), tmp_path / "s")


def test_a_small_prismatic_policy_builds_from_a_preset(tiny_policy, obs_batch):
    policy = tiny_policy(family="vla_rl_openvla", chunk_size=2)
    assert policy.base_model.config.openvla is None and policy.action_tokenizer.scheme == "uniform"
    obs = obs_batch(4)
    out = policy.act(obs, greedy=True)
    assert torch.equal(naive_greedy(policy, obs)[0], out.tokens)
    check_unpadded_batch_scores_like_act("vla_rl_openvla", obs_batch)
    with pytest.raises(PolicyError, match="not loaded from an OpenVLA checkpoint"):
        from vla_rl.policy.openvla_export import export_openvla

        export_openvla(policy, "unused")


def test_bad_checkpoints_and_keys_are_one_line_errors(ckpt, tmp_path):
    def one_line(match, **kw):
        with pytest.raises(PolicyError, match=match) as e:
            _load(**kw)
        assert "\n" not in str(e.value)

    one_line(r"unnorm_key='nope' is not in the checkpoint's norm_stats; choose one of \['bridge_orig', 'toy'\]",
             path=ckpt, unnorm_key="nope")
    one_line(r"norm_stats\['bridge_orig'\] has 3 action dimensions; the action tokenizer passed has 2", path=ckpt,
             unnorm_key="bridge_orig")
    tensors = openvla_tensors()
    del tensors[SIGLIP + "blocks.1.attn.qkv.weight"]
    one_line(r"model\.safetensors: tensor 'vision_backbone\.fused_featurizer\.blocks\.1\.attn\.qkv\.weight' is missing",
             path=write_checkpoint(tmp_path / "missing", tensors))
    extra = {**openvla_tensors(), "action_head.fc.weight": torch.zeros(2, 2)}
    one_line(r"1 tensor\(s\) this loader does not know, e\.g\. 'action_head\.fc\.weight'",
             path=write_checkpoint(tmp_path / "extra", extra))
    clip = write_checkpoint(tmp_path / "clip")
    (clip / "config.json").write_text(json.dumps({**openvla_config(), "timm_model_ids": ["vit_large_patch14_clip_224"]}))
    one_line(r"config\.json: field 'timm_model_ids'=\['vit_large_patch14_clip_224'\] must be", path=clip)
    tiny_llava = tmp_path / "llava"
    with pytest.raises(PolicyError, match="unnorm_key='toy' applies to OpenVLA checkpoints"):
        from vla_rl.policy import ActionTokenizer as AT

        built = build_policy(AT((-1.0,), (1.0,)), state_dim=1, image_size=(64, 64), preset="tiny")
        built.base_model.save_pretrained(tiny_llava)
        built.processor.save_pretrained(tiny_llava)
        policy_from_hf(str(tiny_llava), AT((-1.0,), (1.0,)), state_dim=1, image_size=(64, 64), unnorm_key="toy")
