"""The project's own fast tabletop tasks (planar finger, simple geoms, a 64 px frame in a few ms)."""

from envs.tabletop.tasks import TABLETOP_TASKS, make_tabletop_backend, tabletop_specs

__all__ = ["TABLETOP_TASKS", "make_tabletop_backend", "tabletop_specs"]
