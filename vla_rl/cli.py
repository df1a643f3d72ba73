"""`vla-rl <verb> [--option value ...]`: the command-line entry point.

Each verb has a typed config (vla_rl.config); options come from `--config_path file.yaml`
and/or dotted overrides (`--env_options.image_size 128`). `vla-rl <verb> --help` lists them.
"""

from __future__ import annotations

import difflib
import importlib
import os
import sys
from collections.abc import Sequence

# Headless MuJoCo rendering unless the user chose a backend (egl: Mesa or GPU; osmesa: software).
os.environ.setdefault("MUJOCO_GL", "egl")

# verb -> (one-line help, config class path, command module)
VERBS: dict[str, tuple[str, str, str]] = {
    "envs": ("list every environment id with instruction(s), action size and episode length",
             "vla_rl.config:EnvsConfig", "vla_rl.commands.envs_list"),
    "collect": ("run a scripted expert and write (or append to) a demonstration dataset",
                "vla_rl.config:CollectConfig", "vla_rl.commands.collect"),
    "pretrain": ("behaviour-clone a VLA on demo datasets (checkpoints, resumable)",
                 "vla_rl.config:PretrainConfig", "vla_rl.commands.pretrain"),
    "eval": ("run a saved policy on fixed-seed episodes; write eval.json and videos",
             "vla_rl.config:EvalConfig", "vla_rl.commands.evaluate"),
    "train": ("RL fine-tuning: PPO on LoRA adapters with a KL penalty to the reference, Ray env runners (resumable)",
              "vla_rl.train_config:TrainConfig", "vla_rl.commands.train"),
    "export": ("export a train checkpoint's policy: the LoRA adapter (PEFT) or, with --merge, a plain model",
               "vla_rl.train_config:ExportConfig", "vla_rl.commands.export"),
    "reward label": ("sample segment pairs from datasets, label them (scripted teacher, local HF VLM or an "
                     "OpenAI-compatible server), append to a pair dataset",
                     "reward_models.config:RewardLabelConfig", "vla_rl.commands.reward_label"),
    "reward train": ("train a Bradley-Terry reward-model ensemble on labelled pairs",
                     "reward_models.config:RewardTrainConfig", "vla_rl.commands.reward_train"),
    "reward eval": ("score a reward model on pairs (accuracy, NLL, ECE) and episodes (Spearman vs progress)",
                    "reward_models.config:RewardEvalConfig", "vla_rl.commands.reward_eval"),
}

USAGE = """usage: vla-rl <verb> [--config_path FILE.yaml] [--option value ...]

Online RL fine-tuning of Vision-Language-Action robot policies.

verbs:
{verbs}

`vla-rl <verb> --help` explains every option of a verb. Options may come from a YAML file
(--config_path, see experiments/*.yaml) and/or the command line; the command line wins.
Bad input (an option, a file, an --out that holds something else) is reported in one line
naming the file or field, and exits with code 2 before anything is written.
"""


def _usage() -> str:
    width = max(map(len, VERBS))
    return USAGE.format(verbs="\n".join(f"  {v:<{width}}  {h}" for v, (h, _, _) in VERBS.items()))


def _load(path: str):
    module, attr = path.split(":")
    return getattr(importlib.import_module(module), attr)


def main(argv: Sequence[str] | None = None) -> int:
    from vla_rl.base.quiet import silence_framework_noise

    silence_framework_noise()  # three known framework messages, in the driver (vla_rl/base/quiet.py)
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    if argv[0] == "--version":
        from vla_rl import __version__

        print(f"vla-rl {__version__}")
        return 0
    verb, rest = argv[0], argv[1:]
    if verb == "reward" and rest and not rest[0].startswith("-"):  # two-word verbs: `vla-rl reward train`
        verb, rest = f"reward {rest[0]}", rest[1:]
    if verb == "reward":
        subs = ", ".join(v.split()[1] for v in VERBS if v.startswith("reward "))
        print(f"vla-rl reward: give a sub-verb ({subs}), e.g. `vla-rl reward train --help`\n\n{_usage()}",
              file=sys.stderr)
        return 0 if rest[:1] in (["-h"], ["--help"]) else 2
    if verb not in VERBS:
        close = difflib.get_close_matches(verb, VERBS, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        print(f"vla-rl: unknown verb {verb!r}{hint}\n\n{_usage()}", file=sys.stderr)
        return 2
    from vla_rl.base.errors import VLARLError
    from vla_rl.config import parse_config

    _, config_path, module = VERBS[verb]
    try:
        cfg = parse_config(_load(config_path), rest, prog=f"vla-rl {verb}")
        return int(importlib.import_module(module).run(cfg) or 0)
    except VLARLError as e:
        return _fail(verb, str(e))
    except OSError as e:  # a user path that cannot be read or written (permissions, a full disk, ...)
        where = f"{e.filename}: " if e.filename else ""
        return _fail(verb, f"{where}{e.strerror or e} — check the path and its permissions")
    except KeyboardInterrupt:
        print(f"vla-rl {verb}: interrupted", file=sys.stderr)
        return 130


def _fail(verb: str, message: str) -> int:
    """The one place a user-facing error is printed: one line, exit code 2."""
    print(f"vla-rl {verb}: error: {' '.join(message.split())}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
