"""Typed dataclass configs for every command; YAML files + dotted CLI overrides via draccus.

draccus (LeRobot's choice) parses `--config_path file.yaml` and overrides such as
`--env_options.image_size 128`, rejects unknown keys by name, and builds `--help` from the field
comments below. `validate()` holds every cross-field and range check; each run writes its resolved
config next to its outputs (`save_config`).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import draccus

from envs.errors import ConfigError, check_range
from envs.options import EnvOptions
from vla_rl.atomic_io import atomic_write_text

T = TypeVar("T")


@dataclass
class EnvsConfig:
    """List every registered environment: id, instruction(s), action size, episode length."""

    # Only list this family ("tabletop" or "metaworld"); empty = all.
    family: str = ""
    # Print JSON instead of a table.
    json: bool = False

    def validate(self) -> None:
        if self.family not in ("", "tabletop", "metaworld"):
            raise ConfigError(f"family={self.family!r} is not allowed: choose 'tabletop', 'metaworld' or ''")


@dataclass
class CollectConfig:
    """Run a task's scripted expert and write (or append to) a demonstration dataset."""

    # Environment id (run `vla-rl envs` for the list).
    env: str = "tabletop/touch-color"
    # Environment settings (image size, camera, episode length, ...).
    env_options: EnvOptions = field(default_factory=EnvOptions)
    # Number of episodes to record.
    episodes: int = 20
    # Output dataset directory; appended to if it already holds a compatible dataset.
    out: str = "outputs/demos"
    # Seed of the first episode; episode i uses seed + i, so runs are reproducible.
    seed: int = 0
    # Std of Gaussian noise added to the expert's actions (before clipping) for diverse demos.
    noise: float = 0.0
    # Keep failed episodes too (they are flagged success=false in the index).
    keep_failures: bool = True

    def validate(self) -> None:
        from envs.registry import get_spec

        try:
            get_spec(self.env)
        except KeyError as e:
            raise ConfigError(f"env: {e.args[0]}") from None
        self.env_options.validate()
        check_range("episodes", self.episodes, 1, 10_000_000)
        check_range("noise", self.noise, 0.0, 2.0)
        check_range("seed", self.seed, 0, 2**31 - 1)
        if not self.out:
            raise ConfigError("out='' : give an output directory, e.g. --out outputs/demos/touch")


def parse_config(config_class: type[T], args: Sequence[str], prog: str) -> T:
    """Parse CLI args (and an optional --config_path YAML) into a validated config."""
    try:
        cfg = draccus.parse(config_class=config_class, args=list(args), prog=prog, exit_on_error=False)
    except (draccus.utils.DecodingError, draccus.utils.DraccusException) as e:
        raise ConfigError(f"bad config: {e} (see `{prog} --help`)") from None
    cfg.validate()
    return cfg


def config_to_yaml(cfg) -> str:
    buf = io.StringIO()
    draccus.dump(cfg, buf)
    return buf.getvalue()


def save_config(cfg, path: str | Path) -> Path:
    """Write the resolved config as YAML (atomically); loadable again with --config_path."""
    path = Path(path)
    atomic_write_text(path, config_to_yaml(cfg))
    return path


def load_config(config_class: type[T], path: str | Path) -> T:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        with open(path) as f:
            cfg = draccus.load(config_class, f)
    except draccus.utils.DecodingError as e:
        raise ConfigError(f"{path}: {e}") from None
    cfg.validate()
    return cfg


@dataclass
class PolicyOptions:
    """Which VLA to build (when training from scratch) or load."""

    # Model family of the from-config VLA: "llava" (SigLIP + Llama) or "idefics3" (SmolVLM-style).
    family: str = "llava"
    # Size preset of the from-config VLA: "tiny" (tests) or "small" (CPU default, ~4.7 M parameters).
    preset: str = "small"
    # A pretrained HF image-text-to-text checkpoint (local dir or hub id) to start from instead of a preset.
    base_model: str = ""
    # Allow the checkpoint's own Python code (needed by some hub models). Off unless you trust the source.
    trust_remote_code: bool = False
    # Action chunk K: future steps predicted per decision (K x D tokens).
    chunk_size: int = 1
    # Feed proprioception as a projected <state> token.
    use_state: bool = True
    # Text part of the prompt is left-padded to this many tokens (longer instructions are an error).
    max_prompt_tokens: int = 32
    # Weights dtype: float32 (CPU) or bfloat16 (GPU).
    dtype: str = "float32"

    def validate(self) -> None:
        from envs.errors import check_choice

        check_choice("policy.family", self.family, ("llava", "idefics3"))
        check_choice("policy.preset", self.preset, ("tiny", "small"))
        check_choice("policy.dtype", self.dtype, ("float32", "bfloat16", "float16"))
        check_range("policy.chunk_size", self.chunk_size, 1, 64)
        check_range("policy.max_prompt_tokens", self.max_prompt_tokens, 8, 4096)


@dataclass
class PretrainConfig:
    """Behaviour cloning: train a VLA's action tokens on demonstrations (cross-entropy, AdamW, cosine)."""

    # Demo dataset directories (written by `vla-rl collect`), e.g. --demos '[outputs/demos/a,outputs/demos/b]'.
    demos: list[str] = field(default_factory=lambda: ["outputs/demos"])
    # Use only the first N successful episodes of each dataset (0 = all).
    max_episodes: int = 0
    policy: PolicyOptions = field(default_factory=PolicyOptions)
    # Run directory: checkpoints/<step>/, metrics.jsonl, pretrain_config.yaml.
    out: str = "outputs/pretrain"
    # Optimizer steps in total (the cosine schedule spans them).
    steps: int = 3000
    batch_size: int = 32
    # Peak learning rate (AdamW; 3e-4 suits the from-scratch presets, ~2e-5 a pretrained VLM as OpenVLA).
    lr: float = 3e-4
    weight_decay: float = 0.01
    warmup_steps: int = 100
    # Clip the gradient norm to this (0 = off).
    grad_clip: float = 1.0
    # Random-shift augmentation of training images by up to N pixels (DrQ uses 4 at 84 px; 0 = off).
    augment_shift: int = 4
    # Evaluate in the demos' env every N steps and at the end (0 = only at the end; -1 = never).
    eval_every: int = 0
    eval_episodes: int = 20
    # Save a checkpoint every N steps (and always at the end).
    save_every: int = 500
    # Print / log metrics every N steps.
    log_every: int = 25
    seed: int = 0
    # Continue the run in `out` from checkpoints/last (same options required).
    resume: bool = False
    # Stop after this many steps in this invocation (0 = run to `steps`); resume later with --resume true.
    stop_after: int = 0
    device: str = "cpu"

    def validate(self) -> None:
        self.policy.validate()
        if not self.demos:
            raise ConfigError("demos=[] : give at least one dataset directory")
        for name, lo in (("steps", 1), ("batch_size", 1), ("save_every", 1), ("log_every", 1), ("eval_episodes", 1)):
            check_range(name, getattr(self, name), lo, 10**9)
        check_range("max_episodes", self.max_episodes, 0, 10**9)
        check_range("lr", self.lr, 1e-9, 1.0)
        check_range("weight_decay", self.weight_decay, 0.0, 10.0)
        check_range("warmup_steps", self.warmup_steps, 0, 10**9)
        check_range("grad_clip", self.grad_clip, 0.0, 1e6)
        check_range("augment_shift", self.augment_shift, 0, 64)
        check_range("eval_every", self.eval_every, -1, 10**9)
        check_range("stop_after", self.stop_after, 0, 10**9)
        if not self.out:
            raise ConfigError("out='' : give a run directory, e.g. --out outputs/pretrain/touch")


@dataclass
class EvalConfig:
    """Run a policy on fixed-seed episodes; write eval.json (success rate + 95 % CI) and videos."""

    # Policy directory (a `pretrained_model` dir, e.g. outputs/pretrain/checkpoints/last/pretrained_model).
    policy: str = ""
    # Environment id; empty = the env of the policy's training demos.
    env: str = ""
    env_options: EnvOptions = field(default_factory=EnvOptions)
    episodes: int = 50
    # Output directory for eval.json and videos/.
    out: str = "outputs/eval"
    # Episode i uses env seed `seed + i`.
    seed: int = 1000
    # Argmax decoding (default); false samples at `temperature`.
    greedy: bool = True
    temperature: float = 1.0
    # Episodes run at once (batched through one act() call).
    num_envs: int = 8
    # Record mp4s of the first N episodes.
    videos: int = 3
    device: str = "cpu"

    def validate(self) -> None:
        if not self.policy:
            raise ConfigError("policy='' : give a policy directory, e.g. --policy outputs/pretrain/checkpoints/last/pretrained_model")
        if self.env:
            from envs.registry import get_spec

            try:
                get_spec(self.env)
            except KeyError as e:
                raise ConfigError(f"env: {e.args[0]}") from None
        self.env_options.validate()
        check_range("episodes", self.episodes, 1, 10**7)
        check_range("num_envs", self.num_envs, 1, 1024)
        check_range("videos", self.videos, 0, 1000)
        check_range("temperature", self.temperature, 1e-4, 100.0)
        check_range("seed", self.seed, 0, 2**31 - 1)
