"""Reading the project's versioned JSON files with errors that name the file and the field.

Every on-disk format (policies, action statistics, pair datasets, reward models) starts with
`{"format": NAME, "version": N, ...}`; this is the one place that checks that header.
"""

from __future__ import annotations

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
