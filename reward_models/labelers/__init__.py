"""Preference labelers: one batch interface, `label(pairs) -> list[LabelResult]`.

Backends: scripted B-Pref teachers over privileged progress (`ScriptedLabeler`); local HF VLMs and
OpenAI-compatible servers follow the same interface. A labeler never drops a pair: a failure is a
result with status "unlabeled" (retried later), an unsure or unparseable answer is "abstain".
`register_labeler` (or the `vla_rl.labelers` entry point of an installed package) adds another under a name the
`labeler` option takes (docs/preferences.md, "Adding a labeler").
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from reward_models.labelers.base import Labeler, LabelResult
from reward_models.labelers.scripted import ScriptedLabeler

__all__ = ["LabelResult", "Labeler", "ScriptedLabeler", "labeler_names", "make_labeler", "register_labeler"]

BUILTIN_LABELERS = ("scripted", "hf", "openai")
ENTRY_POINT_GROUP = "vla_rl.labelers"  # an installed package's labeler factories, loaded when first asked for
# factory(opts: LabelerOptions, cache_dir: Path, seed: int) -> a Labeler
LabelerFactory = Callable[[Any, Path, int], Labeler]
_FACTORIES: dict[str, LabelerFactory] = {}


def register_labeler(name: str, factory: LabelerFactory) -> None:
    """Make `labeler=name` build `factory(opts, cache_dir, seed)`, in this process. A taken name is refused."""
    if not name or name in BUILTIN_LABELERS or name in _FACTORIES:
        raise ValueError(f"labeler {name!r} is registered already (or empty): taken are {labeler_names()}")
    if not callable(factory):
        raise TypeError(f"labeler {name!r}: the factory is a {type(factory).__name__}, not a callable "
                        "factory(opts, cache_dir, seed) -> labeler")
    _FACTORIES[name] = factory


def labeler_names(other_processes: bool = False) -> list[str]:
    """What the `labeler` option takes: the built-in backends, then registered and entry-point labelers. With
    `other_processes` (the online loop's labeler runs in a Ray actor) only those every process knows: the built-in and
    the entry-point ones, not those registered in this process alone."""
    named = [ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)]
    return list(dict.fromkeys([*BUILTIN_LABELERS, *([] if other_processes else _FACTORIES), *named]))


def _registered_factory(name: str) -> LabelerFactory | None:
    if name not in _FACTORIES:
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if ep.name == name:
                register_labeler(name, ep.load())
                break
    return _FACTORIES.get(name)


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
    if opts.labeler != "scripted":
        factory = _registered_factory(opts.labeler)
        if factory is None:
            raise ValueError(f"labeler {opts.labeler!r} is not registered: choose one of {labeler_names()}")
        return factory(opts, Path(cache_dir), seed)
    return ScriptedLabeler(opts.teacher, seed=seed)
