"""Named suites (Meta-World MT10/MT50 with difficulty groups, LIBERO suites) and `vla-rl eval --suite/--envs`:
the listing, the group arithmetic, the table and eval.json on a tiny policy, and bad input."""

from __future__ import annotations

import importlib.util
import json

import pytest

from envs import METAWORLD_DIFFICULTY, get_suite, resolve_env_ids, suite_names, task_groups
from vla_rl.cli import main
from vla_rl.suite_evaluation import format_suite_table, summarize_suite

HAS_LIBERO = importlib.util.find_spec("libero") is not None


def test_metaworld_suites_and_their_groups():
    mt10, mt50 = get_suite("metaworld/mt10"), get_suite("metaworld/mt50")
    assert len(mt10.env_ids) == 10 and len(set(mt10.env_ids)) == 10
    assert mt10.env_ids[:3] == ("metaworld/reach", "metaworld/push", "metaworld/pick-place")  # Meta-World's order
    assert len(mt50.env_ids) == 50 and set(mt10.env_ids) <= set(mt50.env_ids)
    grouped = [e for ids in mt50.groups.values() for e in ids]
    assert sorted(grouped) == sorted(mt50.env_ids)  # every MT50 task in exactly one group
    assert {g: len(ids) for g, ids in mt50.groups.items()} == {"easy": 28, "medium": 11, "hard": 6, "very_hard": 5}
    assert sum(map(len, METAWORLD_DIFFICULTY.values())) == 50
    assert mt10.groups == {"easy": ("metaworld/reach", "metaworld/door-open", "metaworld/drawer-open",
                                    "metaworld/drawer-close", "metaworld/button-press-topdown",
                                    "metaworld/window-open", "metaworld/window-close"),
                           "medium": ("metaworld/peg-insert-side",), "hard": ("metaworld/push", "metaworld/pick-place")}
    assert get_suite("MT10") == mt10 and get_suite("mt50") == mt50  # short names
    assert task_groups(["metaworld/reach", "tabletop/touch-color"]) == {}  # groups only when every task has one


@pytest.mark.skipif(not HAS_LIBERO, reason="the [libero] extra is not installed")
def test_libero_suites_are_the_suites_tasks():
    sizes = {name: len(get_suite(name).env_ids) for name in suite_names() if name.startswith("libero/")}
    assert sizes == {"libero/spatial": 10, "libero/object": 10, "libero/goal": 10, "libero/10": 10, "libero/90": 90}
    assert all(e.startswith("libero/object/") for e in get_suite("libero/object").env_ids)
    assert get_suite("libero/object").groups == {}


def test_unknown_suite_names_close_matches():
    with pytest.raises(KeyError, match=r"unknown suite 'metaworld/mt5'; did you mean \['metaworld/mt50'"):
        get_suite("metaworld/mt5")
    with pytest.raises(KeyError, match="unknown env id 'metaworld/rech'"):
        resolve_env_ids("", ["metaworld/rech"])
    # a list after a suite, without repeats; gymnasium ids resolve to project ids
    assert resolve_env_ids("mt10", ["vla_rl/metaworld.reach", "metaworld/hammer"])[-2:] == [
        "metaworld/window-close", "metaworld/hammer"]


def _task(successes: int, episodes: int) -> dict:
    return {"episodes": episodes, "successes": successes, "success_rate": successes / episodes,
            "success_rate_ci95": [0.0, 1.0]}


def test_summary_means_of_tasks_groups_and_episodes():
    # easy: reach 2/4, door-open 4/4 -> 0.75; hard: push 0/4 -> 0.0; mean of groups 0.375; episodes 6/12 = 0.5
    tasks = {"metaworld/reach": _task(2, 4), "metaworld/push": _task(0, 4), "metaworld/door-open": _task(4, 4)}
    s = summarize_suite(tasks)
    assert s["groups"]["easy"]["tasks"] == ["metaworld/reach", "metaworld/door-open"]
    assert s["groups"]["easy"]["success_rate"] == 0.75 and s["groups"]["hard"]["success_rate"] == 0.0
    assert s["mean_of_groups"] == 0.375 and s["success_rate"] == 0.5 and s["episodes"] == 12
    assert s["tasks"]["metaworld/push"]["group"] == "hard"
    assert s["metrics"]["eval/success_rate/metaworld/reach"] == 0.5
    assert s["metrics"]["eval/group_success_rate/easy"] == 0.75
    assert s["metrics"]["eval/success_rate_mean_of_groups"] == 0.375 and s["metrics"]["eval/success_rate"] == 0.5
    lines = format_suite_table(s).splitlines()
    assert lines[0].split() == ["task", "group", "success", "95%", "CI", "episodes"]
    assert lines[1].split()[:3] == ["metaworld/reach", "easy", "0.500"]
    assert lines[-2].split() == ["mean", "of", "2", "groups", "0.375"]
    assert lines[-1].split()[:6] == ["mean", "of", "episodes", "(3", "tasks)", "0.500"]
    # tasks without groups: no group rows, no mean of groups
    mixed = summarize_suite({"tabletop/touch-color": _task(1, 2), "metaworld/reach": _task(0, 2)})
    assert mixed["groups"] == {} and mixed["mean_of_groups"] is None and mixed["tasks"]["metaworld/reach"]["group"] is None
    assert "success_rate_mean_of_groups" not in " ".join(mixed["metrics"])
    assert not any(line.startswith("mean of groups") for line in format_suite_table(mixed).splitlines())


@pytest.fixture(scope="module")
def metaworld_policy(tmp_path_factory):
    """A tiny randomly initialised 4-D policy at 32 px whose recorded training options end episodes after 4 steps."""
    from vla_rl.policy import ActionTokenizer, build_policy

    path = tmp_path_factory.mktemp("policy") / "pol"
    policy = build_policy(ActionTokenizer((-1.0,) * 4, (1.0,) * 4), state_dim=4, image_size=(32, 32), preset="tiny",
                          seed=0)
    policy.spec.train_env, policy.spec.train_env_options = "metaworld/reach", {"image_size": 32, "max_episode_steps": 4}
    policy.save_pretrained(path)
    return path


def test_eval_envs_writes_the_table_and_the_suite_json(metaworld_policy, tmp_path, capsys):
    out = tmp_path / "eval"
    assert main(["eval", "--policy", str(metaworld_policy), "--envs", "[metaworld/reach,metaworld/push]",
                 "--episodes", "1", "--videos", "1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    brief = json.loads(printed[-1])
    assert brief["tasks"] == 2 and brief["episodes"] == 2 and set(brief["groups"]) == {"easy", "hard"}
    assert printed[1].split()[:2] == ["task", "group"] and printed[2].split()[:2] == ["metaworld/reach", "easy"]
    d = json.loads((out / "eval.json").read_text())
    assert (d["format"], d["version"], d["suite"], d["episodes_per_task"]) == ("vla-rl-suite-eval", 1, "", 1)
    assert d["envs"] == ["metaworld/reach", "metaworld/push"] and list(d["tasks"]) == d["envs"]
    assert d["env_options"]["max_episode_steps"] == 4  # the policy's training options, for every task
    for env_id, task in d["tasks"].items():
        assert task["episodes"] == 1 and len(task["per_episode"]) == 1 and task["per_episode"][0]["seed"] == 1000
        assert task["lengths"][0] <= 4 and len(task["success_rate_ci95"]) == 2
        assert d["metrics"][f"eval/success_rate/{env_id}"] == task["success_rate"]
        assert task["videos"] == [str(out / "videos" / env_id.replace("/", ".") / "episode_000.mp4")]
    assert d["mean_of_groups"] == (d["groups"]["easy"]["success_rate"] + d["groups"]["hard"]["success_rate"]) / 2
    assert d["success_rate"] == sum(t["successes"] for t in d["tasks"].values()) / 2


@pytest.mark.parametrize("args, message", [
    (["--suite", "metaworld/mt5"], "suite: unknown suite 'metaworld/mt5'; did you mean ['metaworld/mt50'"),
    (["--envs", "[metaworld/reach,metaworld/rech]"], "envs[1]: unknown env id 'metaworld/rech'"),
    (["--env", "metaworld/reach", "--suite", "metaworld/mt10"], "give --env for one task, or --suite / --envs"),
    (["--envs", "[metaworld/reach,tabletop/touch-color]"], "env tabletop/touch-color takes 2-D actions"),
    (["--suite", "metaworld/mt10", "--env_options.image_size", "48"], "renders 48x48 images"),
])
def test_bad_suite_input_is_one_line_before_any_rollout(metaworld_policy, tmp_path, capsys, monkeypatch, args, message):
    import vla_rl.evaluation as evaluation

    monkeypatch.setattr(evaluation, "run_episodes", lambda *a, **k: pytest.fail("an episode ran"))
    out = tmp_path / "eval"
    assert main(["eval", "--policy", str(metaworld_policy), *args, "--episodes", "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not out.exists()


@pytest.mark.skipif(not HAS_LIBERO, reason="the [libero] extra is not installed")
def test_a_4d_policy_on_a_libero_suite_is_refused(metaworld_policy, tmp_path, capsys):
    assert main(["eval", "--policy", str(metaworld_policy), "--suite", "libero/object", "--env_options.image_size",
                 "32", "--out", str(tmp_path / "e")]) == 2
    assert "takes 7-D actions; the policy emits 4-D actions" in capsys.readouterr().err


def test_collect_envs_writes_a_dataset_per_task_and_pretrain_evaluates_each(tmp_path, capsys):
    demos = tmp_path / "demos"
    assert main(["collect", "--envs", "[tabletop/reach-corner,tabletop/touch-color]", "--episodes", "2",
                 "--out", str(demos)]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [r["env"] for r in lines[:2]] == ["tabletop/reach-corner", "tabletop/touch-color"]
    assert lines[-1]["tasks"] == 2 and lines[-1]["episodes"] == 4
    assert lines[-1]["datasets"] == [str(demos / "tabletop.reach-corner"), str(demos / "tabletop.touch-color")]
    assert (demos / "tabletop.touch-color" / "collect_config.yaml").read_text().count("env: tabletop/touch-color") == 1
    # `--demos '[DIR]'` reads every task's dataset; evaluation runs in each env
    out = tmp_path / "pre"
    assert main(["pretrain", "--demos", f"[{demos}]", "--out", str(out), "--policy.preset", "tiny", "--steps", "2",
                 "--warmup_steps", "0", "--batch_size", "4", "--eval_episodes", "1"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(summary["success_rate_per_env"]) == {"tabletop/reach-corner", "tabletop/touch-color"}
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if "eval/success_rate" in r]
    assert len(evals) == 1 and evals[0]["eval/episodes"] == 2
    assert {"eval/success_rate/tabletop/reach-corner", "eval/success_rate/tabletop/touch-color"} <= set(evals[0])
    assert not any(k.startswith("eval/group_success_rate") for k in evals[0])  # tabletop tasks have no groups


@pytest.mark.parametrize("args, message", [
    (["--suite", "mt100"], "suite: unknown suite 'mt100'; did you mean ['mt10'"),
    (["--env", "tabletop/off-center", "--suite", "metaworld/mt10"], "give --env for one dataset, or --suite / --envs"),
])
def test_bad_collect_suite_input(tmp_path, capsys, args, message):
    out = tmp_path / "demos"
    assert main(["collect", *args, "--episodes", "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not out.exists()


def test_collect_envs_refuses_a_directory_with_other_things_before_collecting(tmp_path, capsys):
    (tmp_path / "demos" / "tabletop.touch-color").mkdir(parents=True)
    (tmp_path / "demos" / "tabletop.touch-color" / "notes.txt").write_text("a user's file")
    assert main(["collect", "--envs", "[tabletop/reach-corner,tabletop/touch-color]", "--episodes", "1",
                 "--out", str(tmp_path / "demos")]) == 2
    assert "demos: holds ['tabletop.touch-color'], which is not a demo dataset" in capsys.readouterr().err
    assert not (tmp_path / "demos" / "tabletop.reach-corner").exists()


def test_collect_envs_refuses_a_task_without_an_expert_before_any_episode(tmp_path, capsys, monkeypatch):
    import envs

    monkeypatch.setattr(envs, "has_scripted_expert", lambda env_id: env_id != "tabletop/touch-color")
    out = tmp_path / "demos"
    assert main(["collect", "--envs", "[tabletop/reach-corner,tabletop/touch-color]", "--episodes", "1",
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "tabletop/touch-color (1 of 2 tasks) have no scripted expert" in err, err
    assert not out.exists()


def test_collect_envs_refuses_an_existing_dataset_of_other_env_facts_before_any_episode(tmp_path, capsys):
    demos = tmp_path / "demos"
    assert main(["collect", "--envs", "[tabletop/touch-color]", "--episodes", "1", "--out", str(demos)]) == 0
    index = (demos / "tabletop.touch-color" / "dataset.json").read_text()
    capsys.readouterr()
    assert main(["collect", "--envs", "[tabletop/reach-corner,tabletop/touch-color]", "--episodes", "1",
                 "--env_options.image_size", "32", "--out", str(demos)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cannot append — field 'image_shape'" in err, err
    assert not (demos / "tabletop.reach-corner").exists()
    assert (demos / "tabletop.touch-color" / "dataset.json").read_text() == index


def test_which_tasks_have_a_scripted_expert():
    from envs import has_scripted_expert, list_specs

    assert all(has_scripted_expert(s.id) for s in list_specs() if s.family in ("tabletop", "metaworld"))
    if HAS_LIBERO:
        assert has_scripted_expert(get_suite("libero/object").env_ids[0])
        assert not any(has_scripted_expert(e) for e in get_suite("libero/goal").env_ids)
