"""Preference labelers: one batch interface, `label(pairs) -> list[LabelResult]`.

Backends: scripted B-Pref teachers over privileged progress (`ScriptedLabeler`); local HF VLMs and
OpenAI-compatible servers follow the same interface. A labeler never drops a pair: a failure is a
result with status "unlabeled" (retried later), an unsure or unparseable answer is "abstain".
"""

from __future__ import annotations

from pathlib import Path

from reward_models.labelers.base import Labeler, LabelResult
from reward_models.labelers.scripted import ScriptedLabeler

__all__ = ["LabelResult", "Labeler", "ScriptedLabeler", "make_labeler"]


def make_labeler(opts, cache_dir: str | Path, seed: int = 0, show_progress: bool = True) -> Labeler:
    """The labeler described by `opts` (a reward_models.config.LabelerOptions); heavy backends import lazily."""
    if opts.labeler == "hf":
        from reward_models.labelers.hf_vlm import HFVLMLabeler

        return HFVLMLabeler(opts.vlm_model, trust_remote_code=opts.trust_remote_code, swap_check=opts.swap_check,
                            device=opts.vlm_device, dtype=opts.vlm_dtype, batch_size=opts.vlm_batch_size,
                            max_new_tokens=opts.max_tokens, show_progress=show_progress)
    if opts.labeler == "openai":
        from reward_models.labelers.openai_http import OpenAILabeler

        return OpenAILabeler(opts.vlm_model, opts.base_url, opts.api_key_env, opts.concurrency, opts.timeout,
                             opts.max_attempts, opts.swap_check, cache_dir, max_tokens=opts.max_tokens)
    return ScriptedLabeler(opts.teacher, seed=seed)
