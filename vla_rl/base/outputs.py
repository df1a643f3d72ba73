"""Output directories: one rule for every command that writes.

A command never deletes or overwrites what it did not create. Each kind of output is recognised
by a marker file and owns a fixed set of top-level names; `--out` may be

- new, or an empty directory;
- an output of the same kind: appended to (datasets), resumed (runs), or — only with
  `--overwrite true` — replaced, and then only when it holds nothing but the kind's own names;

anything else (a file, a foreign non-empty directory, another kind's output) is refused by name
before anything is written.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from vla_rl.base.errors import VLARLError

# Leftovers of an interrupted atomic write (vla_rl.base.atomic_io): ours, never the user's.
_TEMP = re.compile(r"^\..+\.(tmp|old)$")


class OutputError(VLARLError):
    """`--out` holds something this command did not write, or would be replaced without consent."""


@dataclass(frozen=True)
class OutputKind:
    what: str  # "a demo dataset"
    verb: str  # the command that writes it
    marker: str  # the file that identifies it
    names: frozenset[str]  # top-level entries it writes

    def foreign_entries(self, path: Path) -> list[str]:
        return sorted(p.name for p in path.iterdir() if p.name not in self.names and not _TEMP.match(p.name))


DEMOS = OutputKind("a demo dataset", "vla-rl collect", "dataset.json",
                   frozenset({"dataset.json", "episodes", "collect_config.yaml"}))
PAIRS = OutputKind("a pair dataset", "vla-rl reward label", "pairs.json", frozenset({"pairs.json", "segments", "vlm_cache"}))
REWARD_MODEL = OutputKind("a reward model", "vla-rl reward train", "reward_model.json",
                          frozenset({"reward_model.json", "weights.safetensors"}))
POLICY = OutputKind("a policy directory", "vla-rl pretrain", "policy.json",
                    frozenset({"policy.json", "action_tokenizer.json", "heads.safetensors", "base", "adapter"}))
PRETRAIN_RUN = OutputKind("a pretrain run", "vla-rl pretrain", "pretrain_config.yaml",
                          frozenset({"pretrain_config.yaml", "checkpoints", "metrics.jsonl"}))
TRAIN_RUN = OutputKind("a train run", "vla-rl train", "train_config.yaml",
                       frozenset({"train_config.yaml", "checkpoints", "metrics.jsonl", "eval", "wandb", "summary.json",
                                  "pairs"}))
EVAL = OutputKind("an evaluation", "vla-rl eval", "eval_config.yaml", frozenset({"eval_config.yaml", "eval.json", "videos"}))


def existing_output(path: str | Path, kind: OutputKind) -> bool:
    """False if `path` is new or an empty directory, True if it is a `kind` output; else OutputError."""
    path = Path(path)
    if not path.exists():
        return False
    if not path.is_dir():
        raise OutputError(f"{path}: is a file, not a directory — give a directory for --out")
    if not any(path.iterdir()):
        return False
    if not (path / kind.marker).is_file():
        raise OutputError(f"{path}: is not empty and is not {kind.what} (no {kind.marker}); refusing to write "
                          "into it — give a new or empty --out")
    return True


def prepare_output(path: str | Path, kind: OutputKind, overwrite: bool = False, append: bool = False,
                   alternative: str = "") -> bool:
    """Check `--out` before anything is written; returns True when it already holds a `kind` output.

    `append`: an existing output of this kind is written into (datasets, resumed runs).
    Otherwise an existing one is refused unless `overwrite`, and replaced only if it holds nothing
    but `kind.names` (then the caller replaces it; `clear_output` removes exactly those names).
    `alternative` names another way out for the refusal, e.g. "--resume true to continue it".
    """
    path = Path(path)
    if not existing_output(path, kind):
        return False
    if append:
        return True
    if not overwrite:
        other = f"{alternative}, " if alternative else ""
        raise OutputError(f"{path}: already holds {kind.what} — pass {other}--overwrite true to replace it, "
                          "or give another --out")
    foreign = kind.foreign_entries(path)
    if foreign:
        raise OutputError(f"{path}: holds {foreign[:3]}, which {kind.verb} did not write; --overwrite replaces only "
                          f"{kind.what} — move those away or give another --out")
    return True


def clear_output(path: str | Path, kind: OutputKind) -> None:
    """Delete the entries a `kind` output owns (after `prepare_output(..., overwrite=True)` accepted it)."""
    path = Path(path)
    for name in kind.names:
        p = path / name
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()


def check_replaceable(path: str | Path, kind: OutputKind) -> None:
    """For writers that replace a whole directory (policies, reward models): refuse a foreign one."""
    path = Path(path)
    if existing_output(path, kind):
        foreign = kind.foreign_entries(path)
        if foreign:
            raise OutputError(f"{path}: holds {foreign[:3]} besides {kind.what}; refusing to replace it — move "
                              "those away or save elsewhere")


def prepare_output_file(path: str | Path, overwrite: bool = False) -> None:
    """A single output file (e.g. `reward eval --out F.json`): refuse a directory, or an existing file without consent."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{path}: is a directory; --out names a file here, e.g. {path / 'reward_eval.json'}")
    if path.exists() and not overwrite:
        raise OutputError(f"{path}: exists — pass --overwrite true to replace it, or give another --out")
    if path.parent.exists() and not path.parent.is_dir():
        raise OutputError(f"{path.parent}: is a file, not a directory")
