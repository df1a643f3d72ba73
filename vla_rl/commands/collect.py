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
from envs.registry import make_env
from vla_rl import __version__
from vla_rl.base.outputs import DEMOS, prepare_output
from vla_rl.config import CollectConfig, save_config

INDEX_EVERY_S = 2.0  # the dataset index is rewritten at most this often (envs.demos: rewriting per episode is quadratic)


def run(cfg: CollectConfig) -> int:
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
    print(json.dumps(summary))
    return 0
