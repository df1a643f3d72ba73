"""Reading the project's versioned JSON files with errors that name the file and the field.

Every on-disk format (policies, action statistics, pair datasets, reward models) starts with
`{"format": NAME, "version": N, ...}`; this is the one place that checks that header, and
`read_checked_bytes` the one place that checks a file against the sha256 its index lists.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any


def read_versioned_json(path: str | Path, fmt: str, version: int, error: type[Exception],
                        missing_hint: str = "", fields: dict[str, type] | None = None) -> dict[str, Any]:
    """Parse `path`, check its format name, that its version is <= `version`, and typed `fields`."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: not found{' — ' + missing_hint if missing_hint else ''}")
    try:
        d = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise error(f"{path}: not valid JSON ({e})") from e
    if not isinstance(d, dict) or d.get("format") != fmt:
        raise error(f"{path}: field 'format' must be {fmt!r}")
    if not isinstance(d.get("version"), int) or d["version"] > version:
        raise error(f"{path}: field 'version'={d.get('version')!r}; this vla-rl reads <= {version}")
    for key, typ in (fields or {}).items():
        if not isinstance(d.get(key), typ):
            raise error(f"{path}: field {key!r} is missing or not a {typ.__name__}")
    return d


def read_checked_bytes(path: str | Path, sha256: str | None, error: type[Exception], listed_in: str = "") -> bytes:
    """The bytes of `path`, after checking they hash to `sha256` (the digest its index recorded)."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: missing{f' (listed in {listed_in})' if listed_in else ''}")
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != sha256:
        raise error(f"{path}: checksum mismatch — the file is corrupt or truncated, or was modified")
    return data
