"""Preference data, labelers and Bradley–Terry reward models (see the issue tracker: not built yet).

The package is registered now so the layout of DESIGN.md holds; its public API will live here.
"""

__all__: list[str] = []
