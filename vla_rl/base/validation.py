"""Checks of single config values whose messages name the field, the value and what is allowed."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from vla_rl.base.errors import ConfigError


def check_range(field: str, value: Any, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (low <= value <= high):
        raise ConfigError(f"{field}={value!r} is out of range: expected a number in [{low}, {high}]")


def check_choice(field: str, value: Any, choices: Iterable[Any]) -> None:
    choices = tuple(choices)
    if value not in choices:
        raise ConfigError(f"{field}={value!r} is not allowed: choose one of {list(choices)}")


def check_device(field_name: str, device: str) -> None:
    """Refuse a torch device this machine does not have, before anything loads onto it."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"{field_name}={device!r} is not a torch device — use cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise ConfigError(f"{field_name}={device!r}: this torch has no CUDA device "
                              f"(torch {torch.__version__}) — use --{field_name} cpu")
        if dev.index is not None and dev.index >= n:
            raise ConfigError(f"{field_name}={device!r}: only {n} CUDA device(s) here (cuda:0..cuda:{n - 1})")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"{field_name}={device!r}: MPS is not available here — use --{field_name} cpu")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"{field_name}={device!r}: unsupported device type — use cpu, cuda, cuda:N or mps")


def seeds_overlap(first_a: int, count_a: int, first_b: int, count_b: int) -> bool:
    """Do the seed ranges [first_a, first_a + count_a) and [first_b, first_b + count_b) share a seed?"""
    return first_a < first_b + count_b and first_b < first_a + count_a
