"""The default VLA's language does not depend on which optional env families an install has."""

import envs.registry as registry
from envs import EnvFamily, TaskSpec
from vla_rl.policy.text_tokenizer import default_corpus


def test_an_extra_family_leaves_the_default_corpus_and_tokenization_unchanged(monkeypatch):
    from vla_rl.policy.factory import OPENVLA_PROMPT
    from vla_rl.policy.text_tokenizer import build_text_tokenizer

    template = OPENVLA_PROMPT
    before = default_corpus(template)
    assert before and all("libero" not in line for line in before)
    # An extra family (as LIBERO's extra or an entry-point package would register) with instructions of its own.
    monkeypatch.setattr(registry, "_FAMILIES", dict(registry._FAMILIES))
    monkeypatch.setattr(registry, "_SPECS", dict(registry._SPECS))
    monkeypatch.setattr(registry, "register_gym_envs", lambda: None)
    spec = TaskSpec(id="extra/stack", family="extra", description="test", instructions=("stack the teal cups",),
                    max_episode_steps=10, action_dim=2, state_dim=2)
    registry.register_family(EnvFamily("extra", lambda: [spec], lambda *a: None, reward_max=1.0))
    assert "extra/stack" in {s.id for s in registry.list_specs()}
    assert default_corpus(template) == before
    tok = build_text_tokenizer(before, 512, 256)
    assert tok(template.format(instruction="stack the teal cups"))["input_ids"]  # still tokenizes, in smaller pieces
