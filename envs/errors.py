"""Validation helpers whose messages name the field, the value and what is allowed."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from vla_rl.errors import VLARLError


class ConfigError(VLARLError):
    """A configuration value is invalid; the message names the field and the allowed values."""


class ActionError(VLARLError):
    """An action that does not fit the env (wrong size, NaN or inf); the message names the env."""


def check_range(field: str, value: Any, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (low <= value <= high):
        raise ConfigError(f"{field}={value!r} is out of range: expected a number in [{low}, {high}]")


def check_choice(field: str, value: Any, choices: Iterable[Any]) -> None:
    choices = tuple(choices)
    if value not in choices:
        raise ConfigError(f"{field}={value!r} is not allowed: choose one of {list(choices)}")
