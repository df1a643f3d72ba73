import json

import numpy as np
import pytest

from envs import DatasetError, DemoDataset, DemoWriter, ScriptedExpert, env_facts
from envs.collect import rollout_expert


@pytest.fixture
def episodes_and_env(make):
    env = make("tabletop/push-to-target", image_size=32)
    expert = ScriptedExpert(env, noise=0.1)
    return [rollout_expert(env, expert, s) for s in range(3)], env


def _write(path, episodes, env):
    writer = DemoWriter(path, env_facts(env))
    for e in episodes:
        writer.add(e)
    return writer


def test_round_trip_is_exact(tmp_path, episodes_and_env):
    episodes, env = episodes_and_env
    _write(tmp_path / "d", episodes, env)
    ds = DemoDataset(tmp_path / "d")
    assert len(ds) == 3 and ds.num_steps == sum(e.length for e in episodes)
    for original, loaded in zip(episodes, ds, strict=True):
        for name, arr in original.arrays().items():
            got = getattr(loaded, name)
            assert got.dtype == arr.dtype
            np.testing.assert_array_equal(got, arr)
        assert loaded.instruction_text == original.instruction_text and loaded.seed == original.seed


def test_append_keeps_old_episodes(tmp_path, episodes_and_env):
    episodes, env = episodes_and_env
    _write(tmp_path / "d", episodes[:2], env)
    _write(tmp_path / "d", episodes[2:], env)
    ds = DemoDataset(tmp_path / "d")
    assert [e.seed for e in ds] == [0, 1, 2]


def test_append_with_other_image_size_is_refused(tmp_path, episodes_and_env, make):
    episodes, env = episodes_and_env
    _write(tmp_path / "d", episodes[:1], env)
    with pytest.raises(DatasetError, match="image_shape"):
        DemoWriter(tmp_path / "d", env_facts(make("tabletop/push-to-target", image_size=64)))


def test_corrupt_episode_file_is_named(tmp_path, episodes_and_env):
    episodes, env = episodes_and_env
    _write(tmp_path / "d", episodes, env)
    f = tmp_path / "d" / "episodes" / "000001.npz"
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0xFF
    f.write_bytes(bytes(data))
    ds = DemoDataset(tmp_path / "d")
    ds[0]  # intact episodes still load
    with pytest.raises(DatasetError, match=r"000001\.npz.*corrupt or truncated"):
        ds[1]


def test_truncated_episode_file_is_named(tmp_path, episodes_and_env):
    episodes, env = episodes_and_env
    _write(tmp_path / "d", episodes, env)
    f = tmp_path / "d" / "episodes" / "000002.npz"
    f.write_bytes(f.read_bytes()[:100])
    with pytest.raises(DatasetError, match=r"000002\.npz"):
        DemoDataset(tmp_path / "d")[2]


@pytest.mark.parametrize(
    "mutate, field",
    [
        (lambda ix: ix.pop("action_dim"), "action_dim"),
        (lambda ix: ix["episodes"][1].pop("sha256"), r"episodes\[1\]\.sha256"),
        (lambda ix: ix.update(version=99), "version"),
        (lambda ix: ix.update(format="other"), "format"),
    ],
)
def test_bad_index_names_the_field(tmp_path, episodes_and_env, mutate, field):
    episodes, env = episodes_and_env
    _write(tmp_path / "d", episodes, env)
    index_path = tmp_path / "d" / "dataset.json"
    index = json.loads(index_path.read_text())
    mutate(index)
    index_path.write_text(json.dumps(index))
    with pytest.raises(DatasetError, match=rf"dataset\.json.*{field}"):
        DemoDataset(tmp_path / "d")


def test_truncated_index_is_reported(tmp_path, episodes_and_env):
    episodes, env = episodes_and_env
    _write(tmp_path / "d", episodes, env)
    index_path = tmp_path / "d" / "dataset.json"
    index_path.write_text(index_path.read_text()[:50])
    with pytest.raises(DatasetError, match="not valid JSON"):
        DemoDataset(tmp_path / "d")


def test_nan_reward_is_refused_and_nothing_is_written(tmp_path, episodes_and_env):
    episodes, env = episodes_and_env
    writer = _write(tmp_path / "d", episodes[:1], env)
    bad = episodes[1]
    bad.reward[3] = np.nan
    with pytest.raises(DatasetError, match="'reward'.*NaN"):
        writer.add(bad)
    assert len(DemoDataset(tmp_path / "d")) == 1
    assert sorted(p.name for p in (tmp_path / "d" / "episodes").iterdir()) == ["000000.npz"]


def test_crash_while_writing_leaves_previous_dataset_readable(tmp_path, episodes_and_env, monkeypatch):
    episodes, env = episodes_and_env
    writer = _write(tmp_path / "d", episodes[:2], env)

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("envs.demos.atomic_write_json", boom)
    with pytest.raises(OSError):
        writer.add(episodes[2])
    ds = DemoDataset(tmp_path / "d")
    assert len(ds) == 2 and [e.seed for e in ds] == [0, 1]
    assert not list((tmp_path / "d").glob("**/*.tmp"))
    monkeypatch.undo()
    _write(tmp_path / "d", episodes[2:], env)  # the next append overwrites the orphan file
    assert [e.seed for e in DemoDataset(tmp_path / "d")] == [0, 1, 2]


def test_refuses_non_dataset_directory(tmp_path, episodes_and_env):
    _, env = episodes_and_env
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "notes.txt").write_text("mine")
    from vla_rl.base.outputs import OutputError

    with pytest.raises(OutputError, match="not empty and is not a demo dataset"):
        DemoWriter(tmp_path / "d", env_facts(env))
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["notes.txt"]
    with pytest.raises(DatasetError, match="dataset.json: not found"):
        DemoDataset(tmp_path / "d")


def test_a_rate_limited_index_is_written_at_flush(tmp_path, episodes_and_env):
    episodes, env = episodes_and_env
    writer = DemoWriter(tmp_path / "d", env_facts(env), index_every_s=3600.0)
    for e in episodes:
        writer.add(e)
    assert len(DemoDataset(tmp_path / "d")) == 1  # the first add writes the index, the next ones wait
    writer.flush()
    assert [e.seed for e in DemoDataset(tmp_path / "d")] == [0, 1, 2]
    writer.add(episodes[0])
    assert len(DemoDataset(tmp_path / "d")) == 3  # the 4th episode is on disk, not yet in the index
    writer.flush()
    assert len(DemoDataset(tmp_path / "d")) == 4
