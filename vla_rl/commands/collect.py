"""`vla-rl collect`: scripted-expert demonstrations into a demo dataset (see envs.demos)."""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import time
from pathlib import Path

from tqdm import tqdm

from envs.collect import rollout_expert
from envs.demos import DemoWriter, env_facts
from envs.experts import ScriptedExpert
from envs.options import EnvOptions
from envs.registry import make_env
from vla_rl import __version__
from vla_rl.base.outputs import DEMOS, prepare_output
from vla_rl.config import CollectConfig, save_config

INDEX_EVERY_S = 2.0  # the dataset index is rewritten at most this often (envs.demos: rewriting per episode is quadratic)


def run(cfg: CollectConfig) -> int:
    if cfg.suite or cfg.envs:
        return run_suite(cfg)
    print(json.dumps(collect_dataset(cfg)))
    return 0


def run_suite(cfg: CollectConfig) -> int:
    """One dataset per task of --suite / --envs, OUT/<env id with '/' as '.'>, each as `--env ID --out` would write
    it (its own collect_config.yaml); every task's directory and instructions are checked before the first episode.
    Prints each task's summary line, then the suite's."""
    from envs import resolve_env_ids
    from vla_rl.suite_evaluation import check_instructions_fit

    env_ids = resolve_env_ids(cfg.suite, cfg.envs)  # names checked by CollectConfig.validate
    root = Path(cfg.out)
    check_datasets_dir(root)
    outs = {e: root / e.replace("/", ".") for e in env_ids}  # new, or a demo dataset appended to as with --env
    check_instructions_fit(env_ids, {e: cfg.env_options for e in env_ids})
    check_tasks_collectable(outs, cfg.env_options)
    created = not root.exists()
    summaries = []
    try:
        for env_id, out in outs.items():
            summary = collect_dataset(dataclasses.replace(cfg, env=env_id, out=str(out), suite="", envs=[]))
            summaries.append(summary)
            print(json.dumps(summary))
    finally:
        if created and root.is_dir() and not any(root.iterdir()):
            root.rmdir()  # a run that failed before its first episode leaves nothing behind
    episodes = sum(s["episodes"] for s in summaries)
    print(json.dumps({
        "suite": cfg.suite, "tasks": len(env_ids), "episodes": episodes, "kept": sum(s["kept"] for s in summaries),
        "success_rate": sum(s["success_rate"] * s["episodes"] for s in summaries) / episodes,
        "success_rate_per_task": {s["env"]: s["success_rate"] for s in summaries},
        "steps": sum(s["steps"] for s in summaries), "path": str(root), "datasets": [s["path"] for s in summaries],
    }))
    return 0


def check_datasets_dir(root: Path) -> None:
    """`--out` of --suite / --envs is new, empty, or holds demo datasets only (an earlier suite run, appended to)."""
    from vla_rl.base.outputs import OutputError

    if not root.exists():
        return
    if not root.is_dir():
        raise OutputError(f"{root}: is a file, not a directory — give a directory for --out")
    if (root / DEMOS.marker).exists():
        raise OutputError(f"{root}: is a demo dataset of one env; --suite / --envs writes one dataset per task into "
                          "a new or empty directory (or one that holds only demo datasets) — give another --out")
    foreign = sorted(p.name for p in root.iterdir() if not (p.is_dir() and (p / DEMOS.marker).exists()))
    if foreign:
        what = "is not a demo dataset" if len(foreign) == 1 else "are not demo datasets"
        raise OutputError(f"{root}: holds {foreign[:3]}, which {what}; --suite / --envs writes one dataset per task into a new or empty directory (or "
                          "one that holds only demo datasets) — give another --out")


def check_tasks_collectable(outs: dict[str, Path], options: EnvOptions) -> None:
    """Before the first episode of --suite / --envs, what would otherwise stop the run at a task's turn, after the
    earlier tasks wrote theirs: a task without a scripted expert, or a task's existing dataset (OUT/<task>) recorded
    by an env whose facts differ from this run's (DemoWriter's check; builds that task's env)."""
    from envs import DemoDataset, check_appendable, has_scripted_expert
    from vla_rl.base.errors import ConfigError
    from vla_rl.base.outputs import existing_output

    missing = [e for e in outs if not has_scripted_expert(e)]
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise ConfigError(f"--suite / --envs: {', '.join(missing[:3])}{more} ({len(missing)} of {len(outs)} tasks) "
                          "have no scripted expert (envs/experts.py) — collect the other tasks with --envs")
    for env_id, out in outs.items():
        if existing_output(out, DEMOS):
            env = make_env(env_id, options)
            try:
                check_appendable(DemoDataset(out), env_facts(env))
            finally:
                env.close()


def collect_dataset(cfg: CollectConfig) -> dict:
    """Collect `cfg.episodes` expert episodes of `cfg.env` into the dataset `cfg.out`; the summary dict."""
    out = Path(cfg.out)
    created = not out.exists()
    prepare_output(out, DEMOS, append=True)
    env = make_env(cfg.env, cfg.env_options)
    writer = None
    try:
        writer = DemoWriter(out, env_facts(env), index_every_s=INDEX_EVERY_S)
        seeds = list(range(cfg.seed, cfg.seed + cfg.episodes))
        reused = sorted({e.get("seed") for e in writer.index["episodes"]} & set(seeds))
        if reused:
            print(
                f"warning: {len(reused)} of these seeds are already in {out} (e.g. {reused[:3]}); "
                "the same initial states will repeat — pass a different --seed to append new ones",
                file=sys.stderr,
            )
        expert = ScriptedExpert(env, noise=cfg.noise)
        writer.begin_collection(
            {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "vla_rl_version": __version__,
             "config": dataclasses.asdict(cfg)}
        )
        save_config(cfg, out / "collect_config.yaml")
        start, steps, successes, kept = time.perf_counter(), 0, 0, 0
        bar = tqdm(seeds, desc=f"collect {cfg.env}", unit="ep", file=sys.stderr, dynamic_ncols=True)
        for i, seed in enumerate(bar, 1):
            episode = rollout_expert(env, expert, seed)
            steps += episode.length
            successes += episode.succeeded
            if episode.succeeded or cfg.keep_failures:
                writer.add(episode, extra={"noise": cfg.noise})
                kept += 1
            bar.set_postfix(success=f"{successes / i:.2f}", steps=steps)
        elapsed = time.perf_counter() - start
    except BaseException:
        if created and (writer is None or not writer.index["episodes"]):
            shutil.rmtree(out, ignore_errors=True)  # e.g. a task without an expert: leave no empty dataset behind
        raise
    finally:
        if writer is not None:
            writer.flush()  # the episodes written so far, also when interrupted (a no-op when none were added)
        env.close()
    summary = {
        "episodes": cfg.episodes,
        "kept": kept,
        "success_rate": successes / cfg.episodes,
        "steps": steps,
        "steps_per_s": round(steps / max(elapsed, 1e-9), 1),
        "total_episodes": len(writer.index["episodes"]),
        "env": cfg.env,
        "path": str(out),
    }
    return summary
