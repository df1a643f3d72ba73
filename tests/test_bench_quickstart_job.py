"""The whole-job timing benchmark (experiments/bench_quickstart_job.py) runs the README's command 1: the same verbs
and configs in the same order, only the output paths redirected — so the time it reports is the README job's."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_bench():
    path = ROOT / "experiments" / "bench_quickstart_job.py"
    spec = importlib.util.spec_from_file_location("bench_quickstart_job", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def readme_main_job() -> list[str]:
    """The steps of the README's command 1: the lines after its `# 1.` comment up to `# 2.`, joined at their
    ` \\` continuations into one command line, split at `&&`."""
    lines = (ROOT / "README.md").read_text().splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("# 1. install"))
    end = next(i for i, ln in enumerate(lines) if i > start and ln.startswith("# 2."))
    body = lines[start + 1:end]
    continued = [ln.rstrip().endswith("\\") for ln in body]
    assert all(continued[:-1]) and not continued[-1], "command 1 is one command: each line but the last ends in \\"
    command = " ".join(ln.rstrip().removesuffix("\\").strip() for ln in body)
    return [step.strip() for step in command.split("&&")]


def test_the_readme_main_job_installs_then_runs_the_five_verbs():
    assert readme_main_job() == [
        "apt-get update", "apt-get install -y libosmesa6 libegl1",
        "pip install torch==2.13.0", 'pip install -e ".[dev]"',
        "vla-rl collect --config_path experiments/quickstart.yaml",
        "vla-rl pretrain --config_path experiments/pretrain/quickstart.yaml",
        "vla-rl reward label --config_path experiments/reward/quickstart_demo_pairs.yaml",
        "vla-rl train --config_path experiments/train/quickstart_preference.yaml",
        "vla-rl eval --policy outputs/quickstart/train/checkpoints/last/pretrained_model --episodes 50 "
        "--greedy false --temperature 0.5 --out outputs/quickstart/eval"]


def _verb_and_options(words: list[str]) -> tuple[str, list[str]]:
    """("label", options) for `vla-rl reward label ...`, ("train", options) for `vla-rl train ...`."""
    n = 3 if words[1] == "reward" else 2
    return words[n - 1], words[n:]


def test_the_timed_steps_are_the_readme_main_job(tmp_path):
    bench = load_bench()
    readme = [_verb_and_options(c.split()) for c in readme_main_job() if c.startswith("vla-rl")]
    steps = bench.steps(tmp_path, ROOT / "experiments" / "train" / "quickstart_preference.yaml")
    assert [name for name, _ in steps] == [verb for verb, _ in readme] == [
        "collect", "pretrain", "label", "train", "eval"]
    for (name, argv), (_, words) in zip(steps, readme, strict=True):
        verb_args = argv[argv.index(name) + 1:]
        readme_args = dict(zip(words[::2], words[1::2], strict=True))
        timed = dict(zip(verb_args[::2], verb_args[1::2], strict=True))
        for key, value in readme_args.items():  # every README option is passed; the configs are the same files
            assert key in timed, (name, key)
            if key == "--config_path":
                assert Path(timed[key]).resolve() == (ROOT / value).resolve()
            elif key not in ("--out", "--policy"):
                assert timed[key] == value, (name, key)
        outputs = [v for k, v in timed.items() if k in ("--out", "--policy", "--demos", "--data",
                                                       "--preference.init_pairs")]
        assert all(str(tmp_path) in v for v in outputs), (name, outputs)  # nothing written under outputs/quickstart
    train = dict(zip(steps[3][1][4::2], steps[3][1][5::2], strict=True))
    assert train["--preference.init_pairs"] == str(tmp_path / "demo_pairs")  # the pairs the label step wrote
