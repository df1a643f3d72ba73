"""The labeler interface shared by every backend (batchable, no global state: Ray-actor friendly)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from reward_models.pairs import Pair


@dataclass
class LabelResult:
    status: str  # "labeled" | "abstain" | "unlabeled" (a failed call: the pair is kept and retried)
    label: float | None  # 0, 1 or 0.5 when labeled
    source: str  # e.g. "scripted:oracle"
    provenance: dict[str, Any] = field(default_factory=dict)


class Labeler(Protocol):
    name: str

    def label(self, pairs: list[Pair]) -> list[LabelResult]: ...
