"""Policy save/load: exact round trips, PEFT adapters, the HF path, and named errors."""

import json

import pytest
import torch

from vla_rl.policy import ActionTokenizer, PolicyError, VLAPolicy, policy_from_hf


def _perturb_all(policy, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)


@pytest.mark.parametrize("family", ["llava", "idefics3", "paligemma", "qwen2_5_vl"])
@pytest.mark.parametrize("lora", [False, True])
def test_save_load_round_trip_is_exact(tiny_policy, obs_batch, tmp_path, family, lora):
    policy = tiny_policy(family=family, chunk_size=2)
    if lora:
        policy.add_lora(r=4, alpha=8)
    _perturb_all(policy)
    policy.save_pretrained(tmp_path / "p")
    loaded = VLAPolicy.from_pretrained(tmp_path / "p", trainable=lora)
    a, b = policy.state_dict(), loaded.state_dict()
    assert set(a) == set(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    obs = obs_batch(3)
    oa, ob = policy.act(obs, greedy=True), loaded.act(obs, greedy=True)
    assert torch.equal(oa.tokens, ob.tokens) and torch.equal(oa.logp, ob.logp) and torch.equal(oa.value, ob.value)
    assert loaded.spec == policy.spec
    if lora:
        assert (tmp_path / "p/adapter/adapter_model.safetensors").is_file()
        with policy.reference(), loaded.reference():
            torch.testing.assert_close(loaded.evaluate(obs, oa.tokens).logp, policy.evaluate(obs, oa.tokens).logp,
                                       atol=0, rtol=0)
        assert {n for n, p in loaded.named_parameters() if p.requires_grad} == \
               {n for n, p in policy.named_parameters() if p.requires_grad}


def test_adapter_loads_with_peft_alone(tiny_policy, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    policy = tiny_policy()
    policy.add_lora(r=4, alpha=8)
    _perturb_all(policy)
    policy.save_pretrained(tmp_path / "p")
    base = AutoModelForImageTextToText.from_pretrained(tmp_path / "p/base")
    model = PeftModel.from_pretrained(base, tmp_path / "p/adapter")
    ours = {k: v for k, v in policy.model.state_dict().items()}
    for k, v in model.state_dict().items():
        assert torch.equal(v, ours[k]), k


@pytest.mark.parametrize("family", ["llava", "idefics3", "paligemma", "qwen2_5_vl"])
def test_hf_checkpoint_loads_through_the_same_path(tiny_policy, obs_batch, tmp_path, family):
    """A plain HF directory (what the hub serves) becomes a VLA with the last 256 ids as actions."""
    built = tiny_policy(family=family, use_state=False)
    built.base_model.save_pretrained(tmp_path / "hf")
    built.processor.save_pretrained(tmp_path / "hf")
    at = ActionTokenizer((-1.0, -0.5), (1.0, 0.5))
    policy = policy_from_hf(str(tmp_path / "hf"), at, state_dim=2, image_size=(64, 64), use_state=False)
    assert policy.action_tokenizer.token_offset == built.action_tokenizer.token_offset
    obs = obs_batch(2)
    assert torch.equal(policy.act(obs, greedy=True).tokens, built.act(obs, greedy=True).tokens)


def test_hf_missing_checkpoint_fails_at_once_without_the_hub(tmp_path, monkeypatch):
    """A mistyped local path must not be retried against the hub as an id."""
    from vla_rl.base.hub import ModelSourceError

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    at = ActionTokenizer((-1.0,), (1.0,))
    with pytest.raises(ModelSourceError, match="no such directory"):
        policy_from_hf(str(tmp_path / "nope"), at, state_dim=1, image_size=(64, 64))
    (tmp_path / "runs").mkdir()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelSourceError, match="no such directory"):  # `org` is a local directory
        policy_from_hf("runs/modle", at, state_dim=1, image_size=(64, 64))
    with pytest.raises(ModelSourceError, match="no config.json"):
        policy_from_hf(str(tmp_path / "runs"), at, state_dim=1, image_size=(64, 64))


def test_unsupported_architecture_is_refused_before_weights_load(tmp_path):
    from transformers import Qwen2Config

    Qwen2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                vocab_size=300).save_pretrained(tmp_path / "qwen")  # a config only: no weights to read
    at = ActionTokenizer((-1.0,), (1.0,))
    with pytest.raises(PolicyError, match="model_type 'qwen2' is not supported"):
        policy_from_hf(str(tmp_path / "qwen"), at, state_dim=1, image_size=(64, 64))


def test_corrupt_or_missing_files_are_named(tiny_policy, tmp_path):
    policy = tiny_policy()
    policy.save_pretrained(tmp_path / "p")
    weights = tmp_path / "p/base/model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(PolicyError, match=r"model\.safetensors: checksum mismatch"):
        VLAPolicy.from_pretrained(tmp_path / "p")

    policy.save_pretrained(tmp_path / "q")
    (tmp_path / "q/action_tokenizer.json").unlink()
    with pytest.raises(PolicyError, match=r"action_tokenizer\.json: missing"):
        VLAPolicy.from_pretrained(tmp_path / "q")

    with pytest.raises(PolicyError, match="policy.json: not found"):
        VLAPolicy.from_pretrained(tmp_path)

    policy.save_pretrained(tmp_path / "r")
    index = json.loads((tmp_path / "r/policy.json").read_text())
    index["format"] = "something-else"
    (tmp_path / "r/policy.json").write_text(json.dumps(index))
    with pytest.raises(PolicyError, match="field 'format'"):
        VLAPolicy.from_pretrained(tmp_path / "r")


def test_saving_over_an_existing_policy_replaces_it_whole(tiny_policy, tmp_path):
    a, b = tiny_policy(seed=0), tiny_policy(seed=1)
    b.add_lora(r=4, alpha=8)
    b.save_pretrained(tmp_path / "p")
    a.save_pretrained(tmp_path / "p")  # no stale adapter/ may survive from b
    assert not (tmp_path / "p/adapter").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p"]
    loaded = VLAPolicy.from_pretrained(tmp_path / "p")
    assert not loaded.has_lora


@pytest.mark.parametrize("family", ["llava", "idefics3", "paligemma", "qwen2_5_vl"])
def test_decoding_runs_the_same_kernels_whether_or_not_weights_require_grad(tiny_policy, obs_batch, family):
    """The cause of a round-trip failure seen on some CPUs: torch's matmul folds a strided 3-D input
    into mm when the 2-D weight requires grad and uses bmm otherwise, even under no_grad — so a
    frozen and a trainable copy of the same weights rounded differently. Both must run the same ops."""
    from torch.profiler import ProfilerActivity, profile

    policy = tiny_policy(family=family, chunk_size=2)
    obs = obs_batch(3)

    def ops_and_logp():
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            out = policy.act(obs, greedy=True)
            ev = policy.evaluate(obs, out.tokens)
        counts = {e.key: e.count for e in prof.key_averages() if e.key in ("aten::mm", "aten::bmm", "aten::addmm")}
        return counts, out.logp, ev.logp.detach()

    trainable = ops_and_logp()
    policy.requires_grad_(False)
    frozen = ops_and_logp()
    assert trainable[0] == frozen[0]
    assert torch.equal(trainable[1], frozen[1]) and torch.equal(trainable[2], frozen[2])


def test_a_policy_on_a_shared_base_loads_exactly_and_checks_the_base(tiny_policy, obs_batch, tmp_path):
    from vla_rl.policy.policy_io import save_shared_base

    policy = tiny_policy(chunk_size=2)
    policy.add_lora(r=4, alpha=8)
    _perturb_all(policy)
    base = save_shared_base(policy, tmp_path / "ckpts/base_model")
    stamp = (base / "base.json").stat().st_mtime_ns
    for step in ("000001", "000002"):
        policy.save_pretrained(tmp_path / "ckpts" / step / "pretrained_model", shared_base=base)
    assert save_shared_base(policy, base) == base and (base / "base.json").stat().st_mtime_ns == stamp  # written once
    ckpt = tmp_path / "ckpts/000002/pretrained_model"
    assert not (ckpt / "base").exists() and json.loads((ckpt / "policy.json").read_text())["base"]["path"] == \
        "../../base_model"
    (tmp_path / "ckpts/last").symlink_to("000002")  # loaded through the run's `last` link, as `vla-rl eval` does
    loaded = VLAPolicy.from_pretrained(tmp_path / "ckpts/last/pretrained_model")
    a, b = policy.state_dict(), loaded.state_dict()
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    obs = obs_batch(3)
    assert torch.equal(policy.act(obs, greedy=True).logp, loaded.act(obs, greedy=True).logp)
    # self-contained again on export (a plain save): the same policy, with its own base/
    loaded.save_pretrained(tmp_path / "exported")
    assert (tmp_path / "exported/base/config.json").is_file()
    assert "base" not in json.loads((tmp_path / "exported/policy.json").read_text())
    # a changed base file is caught by the checksum the checkpoint was saved with; a moved checkpoint names the fix
    weights = next(base.glob("*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(PolicyError, match="checksum mismatch"):
        VLAPolicy.from_pretrained(ckpt)
    (tmp_path / "moved").mkdir()
    ckpt.rename(tmp_path / "moved/pretrained_model")
    with pytest.raises(PolicyError, match="vla-rl export"):
        VLAPolicy.from_pretrained(tmp_path / "moved/pretrained_model")
