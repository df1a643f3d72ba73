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


def test_the_readme_smoke_test_runs_as_written(tmp_path, monkeypatch):
    """The block's commands unchanged, in a fresh working directory holding only the smoke configs: the paths that
    link one step to the next (demos -> pretrain -> train -> eval) are the README's own."""
    import shutil

    steps = readme_smoke_steps()
    assert [s[:2] for s in steps] == [["vla-rl", "collect"], ["vla-rl", "pretrain"], ["vla-rl", "train"],
                                     ["vla-rl", "eval"]]
    shutil.copytree(SMOKE, tmp_path / "experiments" / "smoke")
    monkeypatch.chdir(tmp_path)
    for argv in steps:
        assert main(argv[1:]) == 0, argv[1]
    out = tmp_path / "outputs" / "smoke"
    rows = [json.loads(line) for line in (out / "train" / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [0, 1, 2] and rows[-1]["env_steps"] == 80  # 4 envs x 10 decisions x 2
    assert json.loads((out / "eval" / "eval.json").read_text())["episodes"] == 2
