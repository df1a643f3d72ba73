"""The project-wide user-facing errors.

Every error a user can cause (a bad option, a missing or corrupt file, an output directory that
holds something else) derives from `VLARLError`, and its message names the file or field, the
value, and what to do. `vla-rl` turns it into one line on stderr and exit code 2
(`vla_rl.cli`); anything else escaping a command is a bug and keeps its traceback.

It subclasses ValueError so code that caught the older, per-module ValueErrors still does. The
subclasses that several packages raise live here; one package's own errors (`envs.ActionError`,
`envs.DatasetError`, `reward_models.PairDataError`, ...) live in that package.
"""

from __future__ import annotations


class VLARLError(ValueError):
    """A user-facing error: the message says where (file/field/value), what is wrong, what to do."""


class ConfigError(VLARLError):
    """A configuration value is invalid; the message names the field and the allowed values."""


class CheckpointError(VLARLError):
    """A checkpoint is missing or does not fit the run; the message names the file and field."""
