"""The base layer: errors, validation, atomic writes, file formats, output directories, model sources.

It imports nothing of the project (only the standard library, and torch lazily in `check_device`), so
every package — `envs`, `reward_models` and the rest of `vla_rl` — may use it. The layer order is in
docs/concepts.md and enforced by tests/test_layers.py.
"""
