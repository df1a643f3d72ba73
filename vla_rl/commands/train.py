"""`vla-rl train`: PPO fine-tuning of a pretrained VLA's LoRA adapters on RLlib env runners.

Each iteration: every env runner resets its envs and samples `rollout_length` decisions per env
with the current adapters (temperature sampling), the learner runs `epochs` passes of minibatch
PPO with β·KL to the reference, and the new LoRA weights go to the runners. Every `eval_every`
iterations the learner's policy is evaluated greedily on fixed unseen seeds through the same code
as `vla-rl eval` (with `val_episodes`, also on separate validation seeds, whose best checkpoint becomes
`checkpoints/best`). One JSON row per iteration goes to OUT/metrics.jsonl (and to wandb): the
metric names and their healthy ranges are listed in docs/training.md ("Training metrics").
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path

from tqdm import tqdm

from vla_rl.config import save_config
from vla_rl.train_config import TrainConfig

CONFIG_FILE = "train_config.yaml"
# Options that may differ between a run and its resumption.
RESUMABLE_CHANGES = ("resume", "stop_after", "iterations", "env_steps", "eval_every", "eval_episodes", "eval_videos",
                     "eval_sampled", "save_every", "learner_threads", "ray_address", "wandb", "overwrite", "out", "eval_before",
                     # where things run, not what they compute
                     "cpus_per_runner", "gpus_per_runner", "runner_resources", "cpus_per_learner", "gpus_per_learner",
                     "sample_timeout_s", "max_runner_restarts", "runner_restore_timeout_s")


def _check_resumable(cfg: TrainConfig, out: Path) -> None:
    from vla_rl.checkpoints import check_same_options

    check_same_options(TrainConfig, cfg, out / CONFIG_FILE, RESUMABLE_CHANGES, "a train run")


def flatten_result(result: dict) -> dict[str, float]:
    """The metrics of one `algo.train()` result under the namespaces of docs/training.md."""
    row: dict[str, float] = {}
    for key, value in (result.get("vla") or {}).items():
        row[key] = float(value)
    learner = (result.get("learners") or {}).get("default_policy", {})
    for key, value in learner.items():
        if "/" in key:
            row[key] = float(value)
    skipped = (result.get("learners") or {}).get("losses/skipped_steps")
    if skipped is None:
        skipped = (result.get("learners") or {}).get("__all_modules__", {}).get("losses/skipped_steps")
    if skipped is not None:
        row["losses/skipped_steps"] = float(skipped)
    return row


def _round(row: dict) -> dict:
    """6 decimals; a metric with no value this iteration (NaN: e.g. no episode finished) is left out, so every
    row is strict JSON."""
    return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in row.items()
            if not (isinstance(v, float) and not math.isfinite(v))}


def _start_wandb(cfg: TrainConfig, out: Path, resume: bool):
    if cfg.wandb.mode == "disabled":
        return None
    import wandb

    id_file = out / "wandb" / "run_id.txt"
    run_id = id_file.read_text().strip() if resume and id_file.is_file() else None
    (out / "wandb").mkdir(parents=True, exist_ok=True)
    run = wandb.init(mode=cfg.wandb.mode, project=cfg.wandb.project, name=cfg.wandb.name or out.name,
                     tags=list(cfg.wandb.tags), dir=str(out), id=run_id, resume="allow" if run_id else None,
                     config=dataclasses.asdict(cfg))
    id_file.write_text(run.id)
    return run


def _sync_fraction(module) -> tuple[int, int]:
    """(bytes sent to runners per sync, bytes of the full policy state)."""
    sent = sum(t.numel() * t.element_size() for t in module.get_state(inference_only=True).values())
    full = sum(t.numel() * t.element_size() for t in module.policy.state_dict().values())
    return sent, full


def resource_demand(cfg: TrainConfig) -> dict[str, float]:
    """Ray resources the run's actors ask for: runners (CPU, GPU, custom) and remote learners (CPU, GPU)."""
    runners, learners = cfg.env_runners, cfg.num_learners
    need: dict[str, float] = {"CPU": runners * cfg.cpus_per_runner + learners * cfg.cpus_per_learner,
                              "GPU": runners * cfg.gpus_per_runner + learners * cfg.gpus_per_learner}
    for name, amount in cfg.runner_resources.items():
        need[name] = need.get(name, 0.0) + runners * float(amount)
    return {k: v for k, v in need.items() if v > 0}


def check_cluster_fits(cfg: TrainConfig, available: dict[str, float]) -> None:
    """A one-line error (instead of actors pending forever) when the cluster lacks what the run asks for."""
    from envs.errors import ConfigError

    for name, amount in resource_demand(cfg).items():
        have = float(available.get(name, 0.0))
        if have + 1e-9 < amount:
            what = {"CPU": "cpus_per_runner / cpus_per_learner", "GPU": "gpus_per_runner / gpus_per_learner"}.get(
                name, f"runner_resources.{name}")
            raise ConfigError(f"the Ray cluster has {have:g} {name} in all, the run asks for {amount:g} "
                              f"(env_runners={cfg.env_runners}, num_learners={cfg.num_learners}, {what}) — "
                              "lower them or add nodes that offer it")


def _truncate_metrics(path: Path, iteration: int) -> None:
    """Resuming from checkpoint N: the rows the interrupted run wrote after N are redone, so they go."""
    if not path.is_file():
        return
    from vla_rl.atomic_io import atomic_write_text

    def keep(line: str) -> bool:
        try:
            return json.loads(line).get("iteration", 0) <= iteration
        except json.JSONDecodeError:  # a row cut by the kill
            return False

    lines = path.read_text().splitlines()
    kept = [line for line in lines if line.strip() and keep(line)]
    if len(kept) != len(lines):
        atomic_write_text(path, "".join(f"{line}\n" for line in kept))


def run(cfg: TrainConfig) -> int:
    import ray
    import torch

    from reward_models.reward_model import RewardEnsemble
    from vla_rl.checkpoints import CheckpointError
    from vla_rl.evaluation import (
        check_env_fits,
        evaluate_policy,
        progress_total,
        resolve_env,
    )
    from vla_rl.outputs import TRAIN_RUN, clear_output, existing_output, prepare_output
    from vla_rl.policy import VLAPolicy
    from vla_rl.rl.algorithm import build_config, module_config
    from vla_rl.rl.checkpoint import (
        is_better,
        latest,
        learner_module,
        load_train_state,
        point_best,
        save_rl_checkpoint,
    )

    out = Path(cfg.out)
    root = out / "checkpoints"
    if cfg.resume:
        if not existing_output(out, TRAIN_RUN):
            raise CheckpointError(f"{out / CONFIG_FILE}: missing — {out} is not a train run to resume "
                                  "(drop --resume to start one)")
        _check_resumable(cfg, out)
    replace = not cfg.resume and prepare_output(out, TRAIN_RUN, overwrite=cfg.overwrite,
                                                alternative="--resume true to continue it")
    # Every input is checked before anything is written.
    from vla_rl.ray_address import check_ray_address

    check_ray_address(cfg.ray_address)
    policy = VLAPolicy.from_pretrained(cfg.policy)
    env_id, options = resolve_env(cfg.env, cfg.env_options, policy, cfg.policy)
    check_env_fits(policy, env_id, options)
    if cfg.reward == "model":
        RewardEnsemble.load(cfg.reward_model)
    init_model = None
    if cfg.reward == "preference" and not cfg.resume:
        if cfg.preference.init_reward_model:
            init_model = RewardEnsemble.load(cfg.preference.init_reward_model)
        if cfg.preference.init_pairs:
            from reward_models.pairs import PairDataset

            PairDataset(cfg.preference.init_pairs).verify()
    ckpt = None
    if cfg.resume:
        ckpt = latest(root)
        if ckpt is None:
            raise CheckpointError(f"{root / 'last'}: no checkpoint to resume from (the run stopped before its first "
                                  "save) — start again with --overwrite true")
        saved_state = load_train_state(ckpt)
        if cfg.reward == "preference":
            from reward_models.online import PreferenceLoop

            pref_state, init_model = PreferenceLoop.load_state(ckpt / "preference")

    env_config = {"env_id": env_id, "env_options": dataclasses.asdict(options),
                  "action_tokenizer": policy.action_tokenizer.to_dict(), "chunk_size": policy.spec.chunk_size,
                  "reward": cfg.env_reward, "seed": cfg.seed,
                  "bootstrap_time_limit": cfg.bootstrap_time_limit, "privileged_obs": cfg.critic == "privileged"}
    del policy
    torch.set_num_threads(cfg.learner_threads)
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    started_ray = not ray.is_initialized()
    if started_ray:
        if cfg.ray_address:
            ray.init(address=cfg.ray_address, logging_level="ERROR", log_to_driver=True)
        else:  # a local Ray: enough logical CPUs for the runners and learners, and the runners' custom resources
            need = resource_demand(cfg)
            ray.init(num_cpus=max(os.cpu_count() or 1, int(math.ceil(need.get("CPU", 0)))), include_dashboard=False,
                     logging_level="ERROR", resources={k: v for k, v in need.items() if k not in ("CPU", "GPU")} or None)
    try:
        check_cluster_fits(cfg, ray.cluster_resources())
    except Exception:
        if started_ray:
            ray.shutdown()
        raise
    # Everything is checked: now the run directory is (re)written.
    if not cfg.resume:
        if replace:
            clear_output(out, TRAIN_RUN)
        save_config(dataclasses.replace(cfg, stop_after=0, resume=False, overwrite=False), out / CONFIG_FILE)
    algo = build_config(cfg, env_config, module_config(str(Path(cfg.policy).resolve()), cfg)).build_algo()
    iteration, env_steps, wall = 0, 0, 0.0
    best: dict | None = None  # {"iteration", "success_rate" (validation), "test_success_rate", ...} with --val_episodes
    if ckpt is not None:
        algo.restore_from_path(str((ckpt / "rllib").resolve()))
        algo.push_weights()
        algo.set_rng_state(saved_state["rng"])
        iteration, env_steps, wall = int(saved_state["iteration"]), int(saved_state["env_steps"]), float(saved_state["wall_s"])
        faults = saved_state.get("faults", {})
        algo.runner_restarts, algo.runner_timeouts = int(faults.get("runner_restarts", 0)), int(faults.get("runner_timeouts", 0))
        _truncate_metrics(out / "metrics.jsonl", iteration)
        best = saved_state.get("best")
        if best is not None:  # a kill between a save and its `best` link leaves the link one behind
            point_best(root, int(best["iteration"]))
    labelers = None
    if cfg.reward == "preference":
        from reward_models.labeler_actor import RayLabelers
        from reward_models.online import PreferenceLoop

        labelers = RayLabelers(cfg.preference, out / "pairs" / "vlm_cache")
        algo.attach_preference(PreferenceLoop(cfg.preference, out / "pairs", cfg.seed, labelers, model=init_model,
                                              state=pref_state if ckpt is not None else None))
    module = learner_module(algo)
    sent, full = _sync_fraction(module)
    end = cfg.iterations if not cfg.stop_after else min(cfg.iterations, iteration + cfg.stop_after)
    reward = {"model": f"model {cfg.reward_model}", "env": f"env {cfg.env_reward}",
              "preference": f"preference ({labelers.name if labelers else ''})"}[cfg.reward]
    print(f"train: {env_id} from {cfg.policy}; reward {reward}; "
          f"{cfg.env_runners} runner(s) x {cfg.envs_per_runner} envs x {cfg.rollout_length} decisions per iteration; "
          f"weight sync {sent / 1e6:.2f} MB = {100 * sent / full:.1f} % of the policy; iterations {iteration} -> {end}",
          file=sys.stderr)
    run_wandb = _start_wandb(cfg, out, cfg.resume)
    metrics_path = out / "metrics.jsonl"
    last_eval: dict = {}
    bar = tqdm(total=cfg.iterations, initial=iteration, desc="train", unit="it", file=sys.stderr, dynamic_ncols=True)

    def evaluate(at: int, validation: bool = False) -> tuple[dict, dict]:
        """Greedy success of the learner's policy on the fixed evaluation seeds (or the validation seeds), as
        `vla-rl eval` measures it."""
        t_eval = time.perf_counter()
        episodes, seed, ns = (cfg.val_episodes, cfg.val_seed, "val") if validation else \
            (cfg.eval_episodes, cfg.eval_seed, "eval")
        videos = 0 if validation else cfg.eval_videos
        with tqdm(total=progress_total(env_id, episodes, options), desc=f"{ns} at iteration {at}",
                  unit="step", file=sys.stderr, dynamic_ncols=True, leave=False) as eval_bar:
            result = evaluate_policy(learner_module(algo).policy, env_id, episodes, seed=seed, options=options,
                                     videos=videos, out=out / "eval" / f"{at:06d}" if videos else None,
                                     progress=eval_bar)
        result.pop("per_episode")
        row = {f"{ns}/success_rate": result["success_rate"], f"{ns}/success_ci_low": result["success_rate_ci95"][0],
               f"{ns}/success_ci_high": result["success_rate_ci95"][1], f"{ns}/return": result["mean_return"],
               f"{ns}/length": result["mean_length"]}
        sampled = ""
        if cfg.eval_sampled and not validation:  # the policy PPO optimises, on the same seeds
            gen = evaluate_policy(learner_module(algo).policy, env_id, episodes, seed=seed, options=options, greedy=False,
                                  temperature=cfg.temperature)
            row.update({f"{ns}/sampled_success_rate": gen["success_rate"],
                        f"{ns}/sampled_success_ci_low": gen["success_rate_ci95"][0],
                        f"{ns}/sampled_success_ci_high": gen["success_rate_ci95"][1]})
            sampled = f", sampled {gen['success_rate']:.2f}"
        bar.write(f"iteration {at}: greedy success {result['success_rate']:.2f} (95% CI "
                  f"{result['success_rate_ci95'][0]:.2f}-{result['success_rate_ci95'][1]:.2f}){sampled}"
                  f"{' on the validation seeds' if validation else ''}")
        return result, {**row, f"perf/{ns}_s": time.perf_counter() - t_eval}

    before: dict = {}
    try:
        if cfg.eval_before and iteration == 0:
            before, eval_row = evaluate(0)
            if cfg.val_episodes:  # the start's validation success, for reference (the start is no checkpoint)
                eval_row.update(evaluate(0, validation=True)[1])
            with open(metrics_path, "a") as f:
                f.write(json.dumps(_round({"iteration": 0, "env_steps": 0, "time_s": 0.0, **eval_row})) + "\n")
        while iteration < end and not (cfg.env_steps and env_steps >= cfg.env_steps):
            t0 = time.perf_counter()
            result = algo.train()
            iteration += 1
            row = flatten_result(result)
            env_steps += int(row.get("rollout/env_steps", 0))
            row.update({"perf/sync_bytes": float(sent), "perf/sync_fraction": sent / full})
            last = iteration == end or (cfg.env_steps and env_steps >= cfg.env_steps)
            evaluated = cfg.eval_every >= 0 and (last or (cfg.eval_every and iteration % cfg.eval_every == 0))
            improved = False
            if evaluated:
                if cfg.val_episodes:
                    val, val_row = evaluate(iteration, validation=True)
                    row.update(val_row)
                last_eval, eval_row = evaluate(iteration)
                row.update(eval_row)
                if cfg.val_episodes and is_better(val["success_rate"], best):
                    improved = True
                    best = {"iteration": iteration, "success_rate": val["success_rate"],
                            "success_rate_ci95": val["success_rate_ci95"], "test_success_rate": last_eval["success_rate"],
                            "test_success_rate_ci95": last_eval["success_rate_ci95"]}
                if best is not None:
                    row.update({"val/best_iteration": float(best["iteration"]),
                                "val/best_success_rate": best["success_rate"]})
            wall += time.perf_counter() - t0
            row = _round({"iteration": iteration, "env_steps": env_steps, "time_s": wall, **row})
            with open(metrics_path, "a") as f:
                f.write(json.dumps(row) + "\n")
            if run_wandb is not None:
                run_wandb.log(row, step=iteration)
            bar.update(1)
            bar.set_postfix(success=f"{row.get('rollout/success_rate', float('nan')):.2f}",
                            ret=f"{row.get('rollout/return', float('nan')):.2f}",
                            kl=f"{row.get('kl/ref_per_token', float('nan')):.4f}",
                            sps=f"{row.get('perf/env_steps_per_s', 0):.0f}")
            # With validation every evaluated iteration is saved: any of them may become `best`.
            if iteration % cfg.save_every == 0 or last or iteration == end or (evaluated and cfg.val_episodes):
                save_rl_checkpoint(root, iteration, algo, {"env_steps": env_steps, "wall_s": wall, "faults": {
                    "runner_restarts": algo.runner_restarts, "runner_timeouts": algo.runner_timeouts}, "best": best})
                if improved:
                    point_best(root, iteration)
    finally:
        bar.close()
        if run_wandb is not None:
            run_wandb.finish()
        if labelers is not None:
            labelers.close()
        algo.stop()
        if started_ray:
            ray.shutdown()
    summary = {"iteration": iteration, "iterations": cfg.iterations, "env_steps": env_steps, "seconds": round(wall, 1),
               "checkpoint": str(root / "last" / "pretrained_model")}
    if before:
        summary.update({"success_rate_before": before["success_rate"], "success_rate_before_ci95": before["success_rate_ci95"]})
    if last_eval:
        summary.update({"success_rate": last_eval["success_rate"], "success_rate_ci95": last_eval["success_rate_ci95"]})
        if before:
            print(f"greedy success on {cfg.eval_episodes} unseen seeds: {before['success_rate']:.0%} before RL "
                  f"(95% CI {before['success_rate_ci95'][0]:.0%}-{before['success_rate_ci95'][1]:.0%}) -> "
                  f"{last_eval['success_rate']:.0%} after {iteration} iterations "
                  f"(95% CI {last_eval['success_rate_ci95'][0]:.0%}-{last_eval['success_rate_ci95'][1]:.0%})",
                  file=sys.stderr)
    if best is not None:
        summary["best"] = {**best, "checkpoint": str(root / "best" / "pretrained_model")}
        print(f"best on {cfg.val_episodes} validation seeds: iteration {best['iteration']} "
              f"({best['success_rate']:.0%}); its greedy success on the {cfg.eval_episodes} evaluation seeds: "
              f"{best['test_success_rate']:.0%} (95% CI {best['test_success_rate_ci95'][0]:.0%}-"
              f"{best['test_success_rate_ci95'][1]:.0%}) — checkpoints/best", file=sys.stderr)
    print(json.dumps(summary))
    return 0
