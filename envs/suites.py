"""Named suites of task ids — the benchmarks peers report per-task tables on — for evaluation and data collection.

- `metaworld/mt10`, `metaworld/mt50`: Meta-World's MT10 (the ten tasks of `metaworld.env_dict.MT10_V3`, in its
  order) and MT50 (all 50 v3 tasks the project registers), with the difficulty groups below.
- `<family>/<suite>` for every family whose ids nest a suite, `<family>/<suite>/<task>`: LIBERO's `libero/spatial`,
  `libero/object`, `libero/goal`, `libero/10`, `libero/90` (all tasks of the suite, in the benchmark's order). They
  exist only when the family is registered (LIBERO: the `[libero]` extra).

Meta-World difficulty groups (`METAWORLD_DIFFICULTY`): easy 28, medium 11, hard 6, very hard 5 tasks, the grouping of
Seo et al., "Masked World Models for Visual Control" (CoRL 2022, arXiv:2206.14244), which RLinf uses for its MT50
table: RLinf's `rlinf/envs/metaworld/metaworld_config.json` (`DIFFICULTY_TO_TASKS`) and its per-group averaging in
`rlinf/envs/metaworld/metaworld_eval.py`, table in `docs/source-en/rst_source/examples/metaworld.rst` (whose "Avg."
is the mean of the four group means). LeRobot's `envs/metaworld.py` ships the same lists.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field

from envs.registry import OPTIONAL_FAMILIES, family_names, list_specs

METAWORLD_MT10 = ("reach", "push", "pick-place", "door-open", "drawer-open", "drawer-close", "button-press-topdown",
                  "peg-insert-side", "window-open", "window-close")
METAWORLD_DIFFICULTY: dict[str, tuple[str, ...]] = {
    "easy": ("button-press", "button-press-topdown", "button-press-topdown-wall", "button-press-wall",
             "coffee-button", "dial-turn", "door-close", "door-lock", "door-open", "door-unlock", "drawer-close",
             "drawer-open", "faucet-close", "faucet-open", "handle-press", "handle-press-side", "handle-pull",
             "handle-pull-side", "lever-pull", "plate-slide", "plate-slide-back", "plate-slide-back-side",
             "plate-slide-side", "reach", "reach-wall", "window-close", "window-open", "peg-unplug-side"),
    "medium": ("basketball", "bin-picking", "box-close", "coffee-pull", "coffee-push", "hammer", "peg-insert-side",
               "push-wall", "soccer", "sweep", "sweep-into"),
    "hard": ("assembly", "hand-insert", "pick-out-of-hole", "pick-place", "push", "push-back"),
    "very_hard": ("shelf-place", "disassemble", "stick-pull", "stick-push", "pick-place-wall"),
}
# Short names a user may type for a suite.
ALIASES = {"mt10": "metaworld/mt10", "mt50": "metaworld/mt50"}


@dataclass(frozen=True)
class Suite:
    """A named list of task ids, optionally split into groups (a group's tasks are in `env_ids` order)."""

    name: str
    env_ids: tuple[str, ...]
    description: str = ""
    groups: dict[str, tuple[str, ...]] = field(default_factory=dict)


def metaworld_group(env_id: str) -> str | None:
    """The difficulty group of a Meta-World task id ("metaworld/push" -> "hard"); None for any other id."""
    family, _, task = env_id.partition("/")
    if family != "metaworld":
        return None
    return next((g for g, tasks in METAWORLD_DIFFICULTY.items() if task in tasks), None)


def task_groups(env_ids: list[str] | tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    """Difficulty groups of a list of tasks, in group order, non-empty groups only; {} unless every task has one."""
    group_of = {e: metaworld_group(e) for e in env_ids}
    if not env_ids or None in group_of.values():
        return {}
    groups = {g: tuple(e for e in env_ids if group_of[e] == g) for g in METAWORLD_DIFFICULTY}
    return {g: ids for g, ids in groups.items() if ids}


def _suites() -> dict[str, Suite]:
    """Every suite of the registered tasks (built on demand: a family registered later adds its suites)."""
    ids = [s.id for s in list_specs()]
    registered = set(ids)
    suites: dict[str, Suite] = {}
    mt50 = tuple(i for i in ids if i.startswith("metaworld/"))
    if mt50:
        mt10 = tuple(f"metaworld/{t}" for t in METAWORLD_MT10 if f"metaworld/{t}" in registered)
        suites["metaworld/mt10"] = Suite("metaworld/mt10", mt10, "Meta-World MT10 (v3)", task_groups(mt10))
        suites["metaworld/mt50"] = Suite("metaworld/mt50", mt50, "Meta-World MT50 (v3): every task",
                                         task_groups(mt50))
    for i in ids:  # "<family>/<suite>/<task>": the family's suite "<family>/<suite>"
        parts = i.split("/")
        if len(parts) == 3:
            name = f"{parts[0]}/{parts[1]}"
            if name not in suites:
                suites[name] = Suite(name, (), f"every {name} task")
            suites[name] = Suite(name, suites[name].env_ids + (i,), suites[name].description)
    return suites


def suite_names() -> list[str]:
    return list(_suites())


def get_suite(name: str) -> Suite:
    """A suite by name ("metaworld/mt10", "mt10", "libero/object"); KeyError (one line, close matches) if unknown."""
    suites = _suites()
    key = ALIASES.get(name.lower(), name)
    if key in suites:
        return suites[key]
    family = key.split("/", 1)[0]
    if family in OPTIONAL_FAMILIES and family not in family_names():
        raise KeyError(f"suite {name!r} is a suite of the optional family {family!r}, which is not installed: "
                       f"{OPTIONAL_FAMILIES[family]}")
    close = difflib.get_close_matches(key, [*suites, *ALIASES], n=3)
    hint = f"; did you mean {close}?" if close else ""
    raise KeyError(f"unknown suite {name!r}{hint} (suites: {', '.join(suites)})")


def resolve_env_ids(suite: str = "", env_ids: list[str] | tuple[str, ...] = ()) -> list[str]:
    """The tasks of a suite and/or an explicit list, in order, without repeats; KeyError for an unknown name or id."""
    from envs.registry import get_spec

    ids = list(get_suite(suite).env_ids) if suite else []
    for env_id in env_ids:
        ids.append(get_spec(env_id).id)  # also turns a gymnasium id into the project id
    return list(dict.fromkeys(ids))
