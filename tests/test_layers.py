"""The layer order of docs/concepts.md: no module imports from a higher layer, lazy imports inside functions included."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("vla_rl", "envs", "reward_models")

# Lowest first; a module belongs to the longest prefix listed. Keep in step with docs/concepts.md ("Layers").
LAYERS = {
    "vla_rl.base": 0,
    "envs": 1,
    "vla_rl.config": 2, "vla_rl.checkpoints": 2, "vla_rl.schedules": 2, "vla_rl.weight_average": 2, "vla_rl.video": 2, "vla_rl.bc_data": 2,
    "vla_rl.ray_address": 2, "vla_rl.policy": 2,
    "reward_models": 3,
    "vla_rl.train_config": 4, "vla_rl.evaluation": 4, "vla_rl.suite_evaluation": 4, "vla_rl.rl": 4, "vla_rl.run_summary": 4, "vla_rl.pretrain_run": 4,
    "vla_rl.commands": 5, "vla_rl.cli": 5, "vla_rl": 5,
}


def layer(module: str) -> int:
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in LAYERS:
            return LAYERS[".".join(parts[:n])]
    raise KeyError(f"{module} has no layer: add it to LAYERS here and to docs/concepts.md")


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every absolute import of a project package in the file, wherever it stands."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        out += [(node.lineno, m) for m in names if m.split(".")[0] in PACKAGES]
    return out


def sources() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def upward_imports(files, root: Path = ROOT) -> list[str]:
    bad = []
    for path in files:
        me = module_name(path, root)
        for line, target in project_imports(path):
            if layer(target) > layer(me):
                bad.append(f"{path.relative_to(root)}:{line} ({me}, layer {layer(me)}) imports {target} "
                           f"(layer {layer(target)})")
    return bad


def test_every_module_has_a_layer():
    for path in sources():
        layer(module_name(path))


def test_no_module_imports_from_a_higher_layer():
    assert upward_imports(sources()) == []


def test_base_layer_imports_only_itself():
    for path in (ROOT / "vla_rl" / "base").rglob("*.py"):
        assert all(m.startswith("vla_rl.base") for _, m in project_imports(path)), path


def test_the_check_sees_an_upward_import_even_inside_a_function(tmp_path):
    probe = tmp_path / "envs" / "_layer_probe.py"
    probe.parent.mkdir()
    probe.write_text("import envs.spec\n\n\ndef f():\n    from vla_rl.rl.episodes import episode_frames\n"
                     "    return episode_frames\n")
    bad = upward_imports([probe], root=tmp_path)
    assert bad == ["envs/_layer_probe.py:5 (envs._layer_probe, layer 1) imports vla_rl.rl.episodes (layer 4)"]


@pytest.mark.parametrize("module, expected", [("vla_rl.base.errors", 0), ("vla_rl.rl.module", 4), ("vla_rl", 5)])
def test_layer_takes_the_longest_listed_prefix(module, expected):
    assert layer(module) == expected


def test_pyproject_lists_every_package_so_a_wheel_holds_them_all():
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {module_name(p) for pkg in PACKAGES for p in (ROOT / pkg).rglob("__init__.py")}
    assert found == listed
