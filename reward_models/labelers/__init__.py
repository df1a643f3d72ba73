"""Preference labelers: one batch interface, `label(pairs) -> list[LabelResult]`.

Backends: scripted B-Pref teachers over privileged progress (`ScriptedLabeler`); local HF VLMs and
OpenAI-compatible servers follow the same interface. A labeler never drops a pair: a failure is a
result with status "unlabeled" (retried later), an unsure or unparseable answer is "abstain".
"""

from reward_models.labelers.base import Labeler, LabelResult
from reward_models.labelers.scripted import ScriptedLabeler

__all__ = ["LabelResult", "Labeler", "ScriptedLabeler"]
