"""The envs package's own error; the project-wide ones live in `vla_rl.base.errors`."""

from __future__ import annotations

from vla_rl.base.errors import VLARLError


class ActionError(VLARLError):
    """An action that does not fit the env (wrong size, NaN or inf); the message names the env."""
