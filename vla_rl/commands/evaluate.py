"""`vla-rl eval`: fixed-seed episodes of a saved policy -> OUT/eval.json (+ OUT/videos/*.mp4).

eval.json fields: env, policy, episodes, successes, success_rate, success_rate_ci95 (Wilson 95 %),
mean_return, std_return, mean_length, lengths, per_episode [{episode, seed, success, return,
length}], videos, seconds, greedy, temperature, seed.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from tqdm import tqdm

from vla_rl.base.atomic_io import atomic_write_json
from vla_rl.config import EvalConfig, save_config


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
