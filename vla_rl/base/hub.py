"""Where a Hugging Face model comes from: a local directory or a hub id — decided before loading.

transformers treats any string that is not an existing directory as a hub id and retries the hub
for about a minute; a mistyped local path should fail at once instead, naming the path.
"""

from __future__ import annotations

import os
from pathlib import Path

from vla_rl.base.errors import VLARLError


class ModelSourceError(VLARLError):
    """A model path that does not exist or is not a Hugging Face model directory."""


def looks_like_path(name: str) -> bool:
    """A hub id is `name` or `org/name`; a path prefix, more slashes, or an `org` that is a local
    directory (`outputs/pretrain` typed wrong) mark a local path."""
    return (name.startswith(("/", "./", "../", "~", ".\\")) or name in (".", "..") or name.count("/") > 1
            or (os.sep != "/" and os.sep in name) or ("/" in name and Path(name).parent.is_dir()))


def check_model_source(name_or_path: str, field: str) -> str:
    """Refuse a missing local path or a directory without config.json; return the string unchanged."""
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not path.is_dir() or not (path / "config.json").is_file():
            raise ModelSourceError(f"{field}={name_or_path!r}: {path} is not a Hugging Face model directory (no "
                                   "config.json) — give a directory written by save_pretrained, or a hub id")
        return str(path)
    if looks_like_path(name_or_path):
        raise ModelSourceError(f"{field}={name_or_path!r}: no such directory — check the path (a hub id looks like "
                               "org/name)")
    return name_or_path
