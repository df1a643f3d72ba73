"""The README's Python example runs as written (issue 23: a doc that shows code has it run by a test, so the docs
cannot drift from the API). It runs on a tiny randomly initialised policy saved where the example loads the
quickstart's result, on the fast tabletop sanity env instead of the quickstart's off-center."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
QUICKSTART_POLICY = "outputs/quickstart/train/checkpoints/last/pretrained_model"


def test_the_readme_python_example_runs(tmp_path, monkeypatch):
    from envs import get_spec
    from vla_rl.policy import ActionTokenizer, build_policy

    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) == 1, "the README has one Python example"
    code = blocks[0]
    assert QUICKSTART_POLICY in code and "episodes=10" in code
    env_id = "tabletop/reach-corner"
    spec = get_spec(env_id)
    tokenizer = ActionTokenizer((-1.0,) * spec.action_dim, (1.0,) * spec.action_dim)
    policy = build_policy(tokenizer, state_dim=spec.state_dim, image_size=(64, 64), preset="tiny", seed=0)
    policy.spec.train_env, policy.spec.train_env_options = env_id, {"image_size": 64}
    policy.save_pretrained(tmp_path / QUICKSTART_POLICY)
    monkeypatch.chdir(tmp_path)
    printed = []
    namespace = {"print": lambda *a: printed.append(a)}
    exec(compile(code.replace("episodes=10", "episodes=2"), str(README), "exec"), namespace)  # noqa: S102
    assert namespace["out"].actions.shape == (1, 1, spec.action_dim)  # (B, K, D), as the example's comment says
    assert len(namespace["summary"]["per_episode"]) == 2
    rate, (low, high) = printed[-1]
    assert rate == namespace["summary"]["success_rate"] and 0.0 <= low <= rate <= high <= 1.0
