"""docs/policy.md, "Adding a VLA family": the page's code block, run as written, registers a family whose tiny policy
acts, scores its own actions, saves and loads back, takes LoRA, and loads as a pretrained checkpoint; registration
refuses what does not fit."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vla_rl.policy import ActionTokenizer, VLAPolicy, policy_from_hf
from vla_rl.policy.backbones import FAMILIES, LlavaFamily, register_vla_family

sys.path.insert(0, str(Path(__file__).parent))
from doc_blocks import python_block
from obs_samples import make_obs  # noqa: E402

DOC = Path(__file__).resolve().parents[1] / "docs" / "policy.md"


def _doc_example() -> str:
    return python_block("policy.md", "## Adding a VLA family")


@pytest.fixture(scope="module")
def vip():
    """The page's block, as a user would paste it; the registry is as before afterwards."""
    before = dict(FAMILIES)
    namespace = {}
    exec(compile(_doc_example(), str(DOC), "exec"), namespace)
    yield namespace
    FAMILIES.clear(), FAMILIES.update(before)


def test_the_documented_family_builds_a_policy_that_acts(vip):
    policy = vip["policy"]
    assert policy.base_model.config.model_type == "vipllava" and isinstance(policy.family, vip["VipLlavaFamily"])
    obs = make_obs(3)
    out = policy.act(obs, greedy=True)
    assert out.actions.shape == (3, 1, 2) and np.isfinite(out.actions).all()
    again = policy.evaluate(obs, out.tokens, temperature=1.0)
    torch.testing.assert_close(again.logp, out.logp, atol=1e-5, rtol=0)


def test_the_documented_family_saves_loads_and_takes_lora(vip, tmp_path):
    policy, obs = vip["policy"], make_obs(2, seed=1)
    tokens = policy.act(obs, greedy=True).tokens
    policy.save_pretrained(tmp_path / "policy")
    loaded = VLAPolicy.from_pretrained(tmp_path / "policy")
    assert torch.equal(loaded.act(obs, greedy=True).tokens, tokens)
    loaded.add_lora(r=4, alpha=8)
    assert any("lora" in n for n, p in loaded.named_parameters() if p.requires_grad)
    assert torch.equal(loaded.act(obs, greedy=True).tokens, tokens)  # LoRA starts at zero: the same policy


def test_the_documented_family_loads_a_pretrained_checkpoint(vip, tmp_path):
    base = vip["policy"]
    base.base_model.save_pretrained(tmp_path / "hf")
    base.processor.save_pretrained(tmp_path / "hf")
    policy = policy_from_hf(str(tmp_path / "hf"), ActionTokenizer((-1.0, -1.0), (1.0, 1.0)), state_dim=2,
                            image_size=(64, 64), max_prompt_tokens=32)
    assert policy.base_model.config.model_type == "vipllava"
    assert policy.act(make_obs(2), greedy=True).actions.shape == (2, 1, 2)


def test_registration_refuses_a_taken_model_type_or_a_wrong_object(vip):
    with pytest.raises(ValueError, match="registered already"):
        register_vla_family(vip["VipLlavaFamily"]())
    with pytest.raises(ValueError, match="registered already"):
        register_vla_family(LlavaFamily())
    with pytest.raises(TypeError, match="not a vla_rl.policy.backbones.Family"):
        register_vla_family(object())

    class Nameless(LlavaFamily):
        model_type = ""

    with pytest.raises(ValueError, match="model_type is empty"):
        register_vla_family(Nameless())


def _entry_points(monkeypatch, *eps):
    """Simulate another process whose installed packages name `eps` under the family entry point."""
    from vla_rl.policy import backbones

    monkeypatch.setattr("importlib.metadata.entry_points",
                        lambda group: list(eps) if group == backbones.ENTRY_POINT_GROUP else [])
    monkeypatch.setattr(backbones, "_ENTRY_POINTS_LOADED", False)


class _EntryPoint:
    def __init__(self, name, load):
        self.name, self.value, self._load = name, f"my_package.families:{name}", load

    def load(self):
        return self._load()


def test_the_cli_takes_a_registered_family_and_entry_points_reach_every_process(vip, monkeypatch):
    from vla_rl.config import PolicyOptions
    from vla_rl.policy import backbones

    PolicyOptions(family="vipllava", preset="tiny").validate()  # registered in this process: the option takes it
    family = FAMILIES.pop("vipllava")  # another process: not registered there, but named by an entry point
    _entry_points(monkeypatch, _EntryPoint("vipllava", lambda: family))
    assert backbones.get_family("vipllava") is family
    FAMILIES.pop("vipllava")
    _entry_points(monkeypatch, _EntryPoint("vipllava", lambda: family))
    assert "vipllava" in backbones.vla_family_names()
    PolicyOptions(family="vipllava", preset="tiny").validate()


def test_a_broken_family_entry_point_is_one_line_naming_it(vip, monkeypatch):
    from vla_rl.config import PolicyOptions
    from vla_rl.policy.backbones import BackboneError

    def fail():
        raise ImportError("No module named 'my_package'")

    _entry_points(monkeypatch, _EntryPoint("broken", fail))
    with pytest.raises(BackboneError, match=r"vla_rl.vla_families:broken \(my_package.families:broken\) failed "
                                            r"to load: ImportError: No module named 'my_package'"):
        PolicyOptions(family="llava", preset="tiny").validate()
    _entry_points(monkeypatch, _EntryPoint("notafamily", lambda: object()))
    with pytest.raises(BackboneError, match=r"is a object, not a vla_rl.policy.backbones.Family instance"):
        PolicyOptions(family="llava", preset="tiny").validate()
    _entry_points(monkeypatch, _EntryPoint("clash", lambda: LlavaFamily()))  # model_type "llava" is taken
    with pytest.raises(BackboneError, match=r"model_type 'llava' is taken by another family"):
        PolicyOptions(family="llava", preset="tiny").validate()
