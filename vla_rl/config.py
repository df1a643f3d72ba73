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
