"""`vla-rl eval`: fixed-seed episodes of a saved policy -> OUT/eval.json (+ OUT/videos/*.mp4).

eval.json fields: env, policy, episodes, successes, success_rate, success_rate_ci95 (Wilson 95 %),
mean_return, std_return, mean_length, lengths, per_episode [{episode, seed, success, return,
length}], videos, seconds, greedy, temperature, seed.

With --suite / --envs (several tasks): a per-task table on stdout and eval.json in the suite layout
(format "vla-rl-suite-eval"; docs/formats.md, "Suite evaluation").
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

from tqdm import tqdm

from vla_rl.base.atomic_io import atomic_write_json
from vla_rl.config import EvalConfig, save_config

SUITE_EVAL_FORMAT, SUITE_EVAL_VERSION = "vla-rl-suite-eval", 1


def run(cfg: EvalConfig) -> int:
    from vla_rl.base.outputs import EVAL, clear_output, prepare_output
    from vla_rl.evaluation import (
        check_env_fits,
        evaluate_policy,
        progress_total,
        resolve_env,
    )
    from vla_rl.policy import VLAPolicy

    out = Path(cfg.out)
    replace = prepare_output(out, EVAL, overwrite=cfg.overwrite)
    policy = VLAPolicy.from_pretrained(cfg.policy, device=cfg.device)
    if cfg.suite or cfg.envs:
        return run_suite(cfg, policy, out, replace)
    env_id, options = resolve_env(cfg.env, cfg.env_options, policy, cfg.policy)
    check_env_fits(policy, env_id, options)  # validate everything, then write
    if replace:
        clear_output(out, EVAL)
    save_config(cfg, out / "eval_config.yaml")
    start = time.perf_counter()
    with tqdm(total=progress_total(env_id, cfg.episodes, options), desc=f"eval {env_id}", unit="step", file=sys.stderr,
              dynamic_ncols=True) as bar:
        result = evaluate_policy(policy, env_id, cfg.episodes, cfg.seed, options, cfg.greedy, cfg.temperature,
                                 cfg.num_envs, cfg.videos, out, progress=bar)
    result = {"env": env_id, "policy": str(cfg.policy), **result, "seconds": round(time.perf_counter() - start, 2),
              "greedy": cfg.greedy, "temperature": cfg.temperature, "seed": cfg.seed}
    atomic_write_json(out / "eval.json", result)
    brief = {k: result[k] for k in ("env", "episodes", "success_rate", "success_rate_ci95", "mean_return",
                                     "mean_length", "seconds")}
    brief["eval_json"] = str(out / "eval.json")
    print(json.dumps(brief))
    return 0


def run_suite(cfg: EvalConfig, policy, out: Path, replace: bool) -> int:
    """Every task of --suite and --envs in turn: the table on stdout, eval.json in the suite layout, the brief last."""
    from envs import resolve_env_ids
    from vla_rl.base.outputs import EVAL, clear_output
    from vla_rl.evaluation import training_options
    from vla_rl.suite_evaluation import (
        check_suite_fits,
        evaluate_suite,
        format_suite_table,
        per_env_options,
        suite_progress_total,
    )

    env_ids = resolve_env_ids(cfg.suite, cfg.envs)  # names checked by EvalConfig.validate
    options = per_env_options(env_ids, training_options(cfg.env_options, policy, cfg.policy))
    check_suite_fits(policy, env_ids, options)  # every task, before anything is written or run
    if replace:
        clear_output(out, EVAL)
    save_config(cfg, out / "eval_config.yaml")
    start = time.perf_counter()
    name = cfg.suite or f"{len(env_ids)} tasks"
    with tqdm(total=suite_progress_total(env_ids, cfg.episodes, options), desc=f"eval {name}", unit="step",
              file=sys.stderr, dynamic_ncols=True) as bar:
        summary = evaluate_suite(policy, env_ids, cfg.episodes, cfg.seed, options, cfg.greedy, cfg.temperature,
                                 cfg.num_envs, cfg.videos, out, progress=bar)
    seconds = round(time.perf_counter() - start, 2)
    result = {"format": SUITE_EVAL_FORMAT, "version": SUITE_EVAL_VERSION, "suite": cfg.suite, "envs": env_ids,
              "policy": str(cfg.policy), "episodes_per_task": cfg.episodes, **summary, "seconds": seconds,
              "greedy": cfg.greedy, "temperature": cfg.temperature, "seed": cfg.seed,
              "env_options": dataclasses.asdict(options[env_ids[0]])}  # the same for every task
    atomic_write_json(out / "eval.json", result)
    print(format_suite_table(result, title=f"{name}: {cfg.episodes} episodes per task, seeds {cfg.seed}.."
                                           f"{cfg.seed + cfg.episodes - 1}, {'greedy' if cfg.greedy else 'sampled'}"))
    brief = {"suite": cfg.suite, "tasks": len(env_ids), "episodes": summary["episodes"],
             "success_rate": summary["success_rate"], "success_rate_ci95": summary["success_rate_ci95"],
             "mean_of_groups": summary["mean_of_groups"],
             "groups": {g: r["success_rate"] for g, r in summary["groups"].items()},
             "seconds": seconds, "eval_json": str(out / "eval.json")}
    print(json.dumps(brief))
    return 0
