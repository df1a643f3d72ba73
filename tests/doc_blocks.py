"""The worked examples of the docs, as the tests that run them read them."""

from __future__ import annotations

import re
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"


def python_block(page: str, heading: str) -> str:
    """The first ```python block after `heading` (e.g. "## Adding a labeler") in docs/`page`."""
    section = (DOCS / page).read_text().split(heading, 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)
