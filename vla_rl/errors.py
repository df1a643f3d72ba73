"""The project-wide base of every user-facing error.

Every error a user can cause (a bad option, a missing or corrupt file, an output directory that
holds something else) derives from `VLARLError`, and its message names the file or field, the
value, and what to do. `vla-rl` turns it into one line on stderr and exit code 2
(`vla_rl.cli`); anything else escaping a command is a bug and keeps its traceback.

It subclasses ValueError so code that caught the older, per-module ValueErrors still does.
"""

from __future__ import annotations


class VLARLError(ValueError):
    """A user-facing error: the message says where (file/field/value), what is wrong, what to do."""
