import json
import re

import numpy as np
import pytest

from envs import DemoDataset
from vla_rl.cli import main


def test_help_lists_verbs(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "collect" in out and "envs" in out


def test_verb_help_explains_options(capsys):
    with pytest.raises(SystemExit) as e:
        main(["collect", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "--noise" in out and "Std of Gaussian noise" in out


def test_envs_json_lists_every_task(capsys):
    assert main(["envs", "--json", "true"]) == 0
    from envs import CORE_FAMILIES, list_specs

    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == len(list_specs())  # optional families (LIBERO's extra) too, when installed
    assert sum(r["id"].split("/")[0] in CORE_FAMILIES for r in rows) == 54  # 50 Meta-World + 4 tabletop
    drawer = next(r for r in rows if r["id"] == "metaworld/drawer-open")
    assert drawer["action_dim"] == 4 and drawer["instructions"] == ["open the drawer"]


def test_collect_end_to_end_and_reproducible(tmp_path, capsys):
    runs = []
    for name in ("a", "b"):
        out = tmp_path / name
        assert main(["collect", "--env", "tabletop/off-center", "--episodes", "3", "--out", str(out),
                     "--noise", "0.2", "--seed", "4", "--env_options.image_size", "32"]) == 0
        summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert summary["episodes"] == 3 and summary["path"] == str(out)
        assert summary["success_rate"] == DemoDataset(out).success_rate
        assert summary["steps"] == DemoDataset(out).num_steps
        assert (out / "collect_config.yaml").read_text().count("noise: 0.2") == 1
        runs.append(DemoDataset(out))
    for ea, eb in zip(*runs, strict=True):
        np.testing.assert_array_equal(ea.image, eb.image)
        np.testing.assert_array_equal(ea.action, eb.action)


def test_collect_appends(tmp_path, capsys):
    out = str(tmp_path / "d")
    main(["collect", "--episodes", "2", "--out", out])
    main(["collect", "--episodes", "1", "--out", out, "--seed", "10"])
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["total_episodes"] == 3
    ds = DemoDataset(out)
    assert [e["seed"] for e in ds.episodes] == [0, 1, 10] and len(ds.index["collections"]) == 2


def test_bad_input_exits_2_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "never"
    assert main(["collect", "--env", "tabletop/nope", "--out", str(out)]) == 2
    assert "unknown env id" in capsys.readouterr().err
    assert not out.exists()
    assert main(["colect"]) == 2
    assert "did you mean 'collect'" in capsys.readouterr().err


@pytest.mark.parametrize("verb", ["envs", "collect", "pretrain", "eval", "reward label", "reward train", "reward eval"])
def test_every_option_has_help_text_and_appears_once(verb, capsys):
    with pytest.raises(SystemExit):
        main([*verb.split(), "--help"])
    out = capsys.readouterr().out
    options = out[out.index("options:"):]
    entries = re.findall(r"^  (--[\w.]+)(?: \w+)?(.*?)(?=^  --|^\S|\Z)", options, flags=re.M | re.S)
    assert len(entries) > 2
    names = [name for name, _ in entries]
    assert len(names) == len(set(names)), names
    for name, text in entries:
        described = re.sub(r"\(default:.*?\)", "", " ".join(text.split())).strip()
        assert described, f"{verb} {name} has no help text"


def test_collect_that_fails_before_its_first_episode_leaves_no_directory(tmp_path, capsys, monkeypatch):
    """e.g. a LIBERO suite without a scripted expert: the expert refuses at its first action."""
    from envs.experts import ScriptedExpert
    from vla_rl.base.errors import ConfigError

    def refuse(self):
        raise ConfigError("this task has no scripted expert")

    monkeypatch.setattr(ScriptedExpert, "act", refuse)
    out = tmp_path / "demos"
    assert main(["collect", "--env", "tabletop/off-center", "--episodes", "2", "--out", str(out)]) == 2
    assert "no scripted expert" in capsys.readouterr().err and not out.exists()
    existing = tmp_path / "kept"
    monkeypatch.undo()
    assert main(["collect", "--env", "tabletop/off-center", "--episodes", "1", "--out", str(existing)]) == 0
    monkeypatch.setattr(ScriptedExpert, "act", refuse)
    assert main(["collect", "--env", "tabletop/off-center", "--episodes", "1", "--seed", "5", "--out",
                 str(existing)]) == 2
    assert len(json.loads((existing / "dataset.json").read_text())["episodes"]) == 1  # an appended-to dataset stays
