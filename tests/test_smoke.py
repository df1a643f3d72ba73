"""The README's smoke test runs as written (only its outputs redirected): the four verbs on the tiny preset, ending
in a 2-iteration run directory and an evaluation."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from vla_rl.cli import main

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "experiments" / "smoke"


def readme_smoke_steps() -> list[list[str]]:
    """The commands of the README's smoke-test block: the bash block after the "**Smoke test**" paragraph."""
    text = (ROOT / "README.md").read_text()
    block = text[text.index("**Smoke test**"):]
    block = block[block.index("```bash\n") + len("```bash\n"):]
    block = block[:block.index("```")]
    command = " ".join(line.rstrip().removesuffix("\\").strip() for line in block.splitlines())
    return [shlex.split(step) for step in command.split("&&")]


def test_the_readme_smoke_test_runs_the_four_verbs_on_the_smoke_configs(tmp_path, monkeypatch):
    steps = readme_smoke_steps()
    assert [s[:2] for s in steps] == [["vla-rl", "collect"], ["vla-rl", "pretrain"], ["vla-rl", "train"],
                                     ["vla-rl", "eval"]]
    out = {"collect": tmp_path / "demos", "pretrain": tmp_path / "pretrain", "train": tmp_path / "train",
           "eval": tmp_path / "eval"}
    redirect = {
        "collect": ["--out", str(out["collect"])],
        "pretrain": ["--demos", f"[{out['collect']}]", "--out", str(out["pretrain"])],
        "train": ["--policy", str(out["pretrain"] / "checkpoints/last/pretrained_model"), "--out", str(out["train"]),
                  "--wandb.mode", "disabled"],
        "eval": ["--policy", str(out["train"] / "checkpoints/last/pretrained_model"), "--out", str(out["eval"])],
    }
    monkeypatch.chdir(ROOT)  # the configs' relative paths are the README's
    for argv in steps:
        verb = argv[1]
        assert main([*argv[1:], *redirect[verb]]) == 0, verb
    rows = [json.loads(line) for line in (out["train"] / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [0, 1, 2] and rows[-1]["env_steps"] == 80  # 4 envs x 10 decisions x 2
    assert json.loads((out["eval"] / "eval.json").read_text())["episodes"] == 2
