"""Env ids shared by the env tests (a plain module: `conftest` names clash across test folders)."""

TABLETOP_IDS = ["tabletop/touch-color", "tabletop/reach-corner", "tabletop/push-to-target", "tabletop/off-center"]
# One Meta-World task per contract test keeps the suite fast; all 50 are swept by bench_envs.py.
CONTRACT_IDS = TABLETOP_IDS + ["metaworld/drawer-open"]
