"""Wall-clock of the README's main job (command 1 without the install), step by step, into a scratch directory.

Runs exactly the README's five commands — `vla-rl collect`, `pretrain`, `reward label`, `train`, `eval` with the
quickstart configs — with only `--out` (and the paths that follow from it: `--demos`, `--data`, `--policy`,
`--preference.init_pairs`) redirected, so nothing under `outputs/quickstart` is touched.
Prints JSON: each step's seconds, the total in minutes, and the train step's before/after lines (greedy and sampled).
Run it alone on the machine: a second torch job on 2 cores slows both ~2x.

    python experiments/bench_quickstart_job.py --out /tmp/quickstart_job > docs/bench_quickstart_job.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")
EXPERIMENTS = Path(__file__).parent


def steps(out: Path, train_config: Path) -> list[tuple[str, list[str]]]:
    """The README's command 1, one argv per step, redirected into `out`."""
    vla = [sys.executable, "-m", "vla_rl.cli"]
    return [
        ("collect", vla + ["collect", "--config_path", str(EXPERIMENTS / "quickstart.yaml"),
                           "--out", str(out / "demos")]),
        ("pretrain", vla + ["pretrain", "--config_path", str(EXPERIMENTS / "pretrain" / "quickstart.yaml"),
                            "--demos", f"[{out / 'demos'}]", "--out", str(out / "pretrain")]),
        ("label", vla + ["reward", "label", "--config_path", str(EXPERIMENTS / "reward" / "quickstart_demo_pairs.yaml"),
                         "--data", f"[{out / 'demos'}]", "--out", str(out / "demo_pairs")]),
        ("train", vla + ["train", "--config_path", str(train_config),
                         "--policy", str(out / "pretrain" / "checkpoints" / "last" / "pretrained_model"),
                         "--preference.init_pairs", str(out / "demo_pairs"), "--out", str(out / "train")]),
        ("eval", vla + ["eval", "--policy", str(out / "train" / "checkpoints" / "last" / "pretrained_model"),
                        "--episodes", "50", "--greedy", "false", "--temperature", "0.5", "--out", str(out / "eval")]),
    ]


def main() -> None:
    import torch

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="scratch directory (created; must not exist)")
    ap.add_argument("--train_config", type=Path, default=EXPERIMENTS / "train" / "quickstart_preference.yaml",
                    help="the RL step's config (default: the quickstart's, from preference labels)")
    args = ap.parse_args()
    if args.out.exists():
        ap.error(f"--out {args.out}: exists; give a new directory (this benchmark writes a whole job there)")
    args.out.mkdir(parents=True)
    seconds, printed = {}, []
    for name, cmd in steps(args.out, args.train_config):
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        seconds[name] = round(time.perf_counter() - t0, 1)
        if proc.returncode:
            sys.stderr.write(proc.stderr[-2000:])
            raise SystemExit(f"error: step {name} failed (exit {proc.returncode}); its output is above")
        if name == "train":
            printed = [ln.strip() for ln in proc.stderr.splitlines() if "before RL" in ln]
    eval_json = json.loads((args.out / "eval" / "eval.json").read_text())
    print(json.dumps({
        "benchmark": "quickstart_job", "train_config": str(args.train_config), "seconds": seconds,
        "total_min": round(sum(seconds.values()) / 60, 2), "train_printed": printed,
        "final_eval_success_rate": eval_json.get("success_rate"),
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "torch": torch.__version__},
    }, indent=1))


if __name__ == "__main__":
    main()
