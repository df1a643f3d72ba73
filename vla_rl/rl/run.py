"""One RL fine-tuning run as an object: check → start → iterate → evaluate → checkpoint → summary.

`vla-rl train` parses its options into a `TrainConfig` and calls `TrainRun(cfg).run()`; the same works from Python:

    from vla_rl.train_config import TrainConfig
    from vla_rl.rl.run import TrainRun

    summary = TrainRun(TrainConfig(policy="outputs/quickstart/pretrain/checkpoints/last/pretrained_model",
                                   out="outputs/my_run", iterations=4)).run()

Every input is checked before anything is written (`check`); the run directory is (re)written only once Ray is up
and the cluster fits (`start`). Each iteration samples, learns and syncs (`iterate`); every `eval_every` iterations
the learner's policy is evaluated greedily — and sampled, with `eval_sampled` — on fixed unseen seeds through the
code of `vla-rl eval` (`evaluate`), optionally on validation seeds whose best checkpoint becomes `checkpoints/best`.
One JSON row per iteration goes to OUT/metrics.jsonl (and to wandb); docs/training.md lists the metrics.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from vla_rl.base.errors import CheckpointError
from vla_rl.rl.metrics_rows import flatten_result, round_row, truncate_metrics
from vla_rl.rl.resources import check_cluster_fits, resource_demand
from vla_rl.run_summary import before_after_fields, before_after_line
from vla_rl.train_config import TrainConfig

CONFIG_FILE = "train_config.yaml"
# Options that may differ between a run and its resumption.
RESUMABLE_CHANGES = ("resume", "stop_after", "iterations", "env_steps", "eval_every", "eval_episodes", "eval_videos",
                     "eval_sampled", "save_every", "learner_threads", "ray_address", "wandb", "overwrite", "out", "eval_before",
                     # where things run, not what they compute
                     "cpus_per_runner", "gpus_per_runner", "runner_resources", "cpus_per_learner", "gpus_per_learner",
                     "sample_timeout_s", "max_runner_restarts", "runner_restore_timeout_s")


def sync_fraction(module) -> tuple[int, int]:
    """(bytes sent to runners per sync, bytes of the full policy state)."""
    sent = sum(t.numel() * t.element_size() for t in module.get_state(inference_only=True).values())
    full = sum(t.numel() * t.element_size() for t in module.policy.state_dict().values())
    return sent, full


class TrainRun:
    """A `vla-rl train` run; `run()` does it all and returns the summary (also printed as one JSON line)."""

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        self.out = Path(cfg.out)
        self.root = self.out / "checkpoints"
        self.metrics_path = self.out / "metrics.jsonl"
        self.iteration, self.env_steps, self.wall = 0, 0, 0.0
        self.best: dict | None = None  # {"iteration", "success_rate" (validation), "test_success_rate", ...}
        self.before: dict = {}
        self.last_eval: dict = {}
        self.ckpt: Path | None = None
        self.algo = self.labelers = self.wandb = self.bar = None
        self.started_ray = False

    # --- the whole run ---------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        self.check()
        self.start()
        try:
            self.build()
            if self.cfg.eval_before and self.iteration == 0:
                self.evaluate_start()
            while not self.done():
                self.iterate()
        finally:
            self.close()
        summary = self.summary()
        print(json.dumps(summary))
        return summary

    # --- before anything is written -------------------------------------------------------------------
    def check(self) -> None:
        """Every input — resume state, output directory, Ray address, policy, env, reward models — is checked
        before anything is written."""
        from reward_models.reward_model import RewardEnsemble
        from vla_rl.base.outputs import TRAIN_RUN, existing_output, prepare_output
        from vla_rl.checkpoints import check_same_options, latest, load_train_state
        from vla_rl.evaluation import check_env_fits, resolve_env
        from vla_rl.policy import VLAPolicy
        from vla_rl.ray_address import check_ray_address

        cfg, out = self.cfg, self.out
        cfg.validate()  # the CLI has; a TrainConfig built in Python may not have been
        if cfg.resume:
            if not existing_output(out, TRAIN_RUN):
                raise CheckpointError(f"{out / CONFIG_FILE}: missing — {out} is not a train run to resume "
                                      "(drop --resume to start one)")
            check_same_options(TrainConfig, cfg, out / CONFIG_FILE, RESUMABLE_CHANGES, "a train run")
        self.replace = not cfg.resume and prepare_output(out, TRAIN_RUN, overwrite=cfg.overwrite,
                                                         alternative="--resume true to continue it")
        check_ray_address(cfg.ray_address)
        policy = VLAPolicy.from_pretrained(cfg.policy)
        if cfg.suite or cfg.envs:  # several tasks: each checked as `vla-rl eval --suite` does, and against each other
            from vla_rl.rl.multitask import resolve_train_tasks

            self.tasks, self.options = resolve_train_tasks(cfg, policy)
            self.env_id = self.tasks[0]
        else:
            self.tasks = []
            self.env_id, self.options = resolve_env(cfg.env, cfg.env_options, policy, cfg.policy)
            check_env_fits(policy, self.env_id, self.options)
        if cfg.reward == "model":
            RewardEnsemble.load(cfg.reward_model)
        self.init_model = self.pref_state = None
        if cfg.reward == "preference" and not cfg.resume:
            if cfg.preference.init_reward_model:
                self.init_model = RewardEnsemble.load(cfg.preference.init_reward_model)
            if cfg.preference.init_pairs:
                from reward_models.pairs import PairDataset

                PairDataset(cfg.preference.init_pairs).verify()
        if cfg.resume:
            self.ckpt = latest(self.root)
            if self.ckpt is None:
                raise CheckpointError(f"{self.root / 'last'}: no checkpoint to resume from (the run stopped before its "
                                      "first save) — start again with --overwrite true")
            self.saved_state = load_train_state(self.ckpt)
            if cfg.reward == "preference":
                from reward_models.online import PreferenceLoop

                self.pref_state, self.init_model = PreferenceLoop.load_state(self.ckpt / "preference")
        from vla_rl.rl.env import RLEnvSettings

        self.env_config = RLEnvSettings(
            env_id=self.env_id, env_options=dataclasses.asdict(self.options),
            action_tokenizer=policy.action_tokenizer.to_dict(), chunk_size=policy.spec.chunk_size, reward=cfg.env_reward,
            seed=cfg.seed, bootstrap_time_limit=cfg.bootstrap_time_limit,
            privileged_obs=cfg.critic == "privileged", envs_per_runner=cfg.envs_per_runner, group_size=cfg.group_size,
            tasks=tuple(self.tasks)).as_dict()

    def start(self) -> None:
        """Ray up (local, sized for the run, or the given cluster), the cluster checked; then the run directory is
        (re)written."""
        import ray
        import torch

        from vla_rl.base.outputs import TRAIN_RUN, clear_output
        from vla_rl.config import save_config

        cfg = self.cfg
        torch.set_num_threads(cfg.learner_threads)
        os.environ.setdefault("RAY_DEDUP_LOGS", "1")
        self.started_ray = not ray.is_initialized()
        if self.started_ray:
            if cfg.ray_address:
                from vla_rl.ray_address import connect_error

                try:
                    ray.init(address=cfg.ray_address, logging_level="ERROR", log_to_driver=True)
                except (ConnectionError, RuntimeError, ray.exceptions.RayError) as e:  # the head answered its port
                    raise connect_error(cfg.ray_address, e) from None
            else:  # a local Ray: enough logical CPUs for the runners and learners, and the runners' custom resources
                need = resource_demand(cfg)
                ray.init(num_cpus=max(os.cpu_count() or 1, int(math.ceil(need.get("CPU", 0)))), include_dashboard=False,
                         logging_level="ERROR", resources={k: v for k, v in need.items() if k not in ("CPU", "GPU")} or None)
        try:
            check_cluster_fits(cfg, ray.cluster_resources())
        except Exception:
            if self.started_ray:
                ray.shutdown()
            raise
        if not cfg.resume:
            if self.replace:
                clear_output(self.out, TRAIN_RUN)
            save_config(dataclasses.replace(cfg, stop_after=0, resume=False, overwrite=False), self.out / CONFIG_FILE)

    # --- the algorithm, restored when resuming ----------------------------------------------------------
    def build(self) -> None:
        from vla_rl.checkpoints import point_best
        from vla_rl.rl.algorithm import build_config
        from vla_rl.rl.episodes import LearnedRewardSettings

        cfg = self.cfg
        self.algo = algo = build_config(cfg, self.env_config, str(Path(cfg.policy).resolve())).build_algo()
        if self.ckpt is not None:
            state = self.saved_state
            algo.restore_from_path(str((self.ckpt / "rllib").resolve()))
            algo.push_weights()
            algo.set_rng_state(state["rng"])
            self.iteration, self.env_steps, self.wall = int(state["iteration"]), int(state["env_steps"]), float(state["wall_s"])
            faults = state.get("faults", {})
            algo.runner_restarts, algo.runner_timeouts = int(faults.get("runner_restarts", 0)), int(faults.get("runner_timeouts", 0))
            truncate_metrics(self.metrics_path, self.iteration)
            self.best = state.get("best")
            if self.best is not None:  # a kill between a save and its `best` link leaves the link one behind
                point_best(self.root, int(self.best["iteration"]))
        if cfg.reward == "model":
            from reward_models.reward_model import RewardEnsemble

            algo.use_reward_model(RewardEnsemble.load(cfg.reward_model), LearnedRewardSettings.from_train_config(cfg))
        if cfg.reward == "preference":
            from reward_models.labeler_actor import RayLabelers
            from reward_models.online import PreferenceLoop

            self.labelers = RayLabelers(cfg.preference, self.out / "pairs" / "vlm_cache")
            algo.attach_preference(PreferenceLoop(cfg.preference, self.out / "pairs", cfg.seed, self.labelers,
                                                  model=self.init_model, state=self.pref_state),
                                   LearnedRewardSettings.from_train_config(cfg))
        self.sent, self.full = sync_fraction(algo.policy_module())
        self.end = cfg.iterations if not cfg.stop_after else min(cfg.iterations, self.iteration + cfg.stop_after)
        self._announce()
        self.wandb = self._start_wandb()
        self.bar = tqdm(total=cfg.iterations, initial=self.iteration, desc="train", unit="it", file=sys.stderr,
                        dynamic_ncols=True)

    def _announce(self) -> None:
        cfg = self.cfg
        reward = {"model": f"model {cfg.reward_model}", "env": f"env {cfg.env_reward}",
                  "preference": f"preference ({self.labelers.name if self.labelers else ''})"}[cfg.reward]
        what = self.env_id
        if self.tasks:  # which task each env runs
            from vla_rl.rl.multitask import assignment_text

            what = (f"{cfg.suite or 'tasks'} (envs per task: "
                    f"{assignment_text(self.tasks, cfg.env_runners, cfg.envs_per_runner, cfg.group_size)})")
        print(f"train: {what} from {cfg.policy}; reward {reward}; "
              f"{cfg.env_runners} runner(s) x {cfg.envs_per_runner} envs x {cfg.rollout_length} decisions per iteration; "
              f"weight sync {self.sent / 1e6:.2f} MB = {100 * self.sent / self.full:.1f} % of the policy; "
              f"iterations {self.iteration} -> {self.end}", file=sys.stderr)

    def _start_wandb(self):
        cfg, out = self.cfg, self.out
        if cfg.wandb.mode == "disabled":
            return None
        import wandb

        id_file = out / "wandb" / "run_id.txt"
        run_id = id_file.read_text().strip() if cfg.resume and id_file.is_file() else None
        (out / "wandb").mkdir(parents=True, exist_ok=True)
        run = wandb.init(mode=cfg.wandb.mode, project=cfg.wandb.project, name=cfg.wandb.name or out.name,
                         tags=list(cfg.wandb.tags), dir=str(out), id=run_id, resume="allow" if run_id else None,
                         config=dataclasses.asdict(cfg))
        id_file.write_text(run.id)
        return run

    # --- evaluation -------------------------------------------------------------------------------------
    def evaluate(self, at: int, validation: bool = False) -> tuple[dict, dict]:
        """Greedy success of the learner's policy on the fixed evaluation seeds (or the validation seeds), as
        `vla-rl eval` measures it (`--suite` / `--envs`: on every task, as `vla-rl eval --suite` does), and the
        metrics row of it."""
        from vla_rl.evaluation import progress_total
        from vla_rl.suite_evaluation import suite_metrics, suite_progress_total

        cfg, t_eval = self.cfg, time.perf_counter()
        episodes, seed, ns = (cfg.val_episodes, cfg.val_seed, "val") if validation else \
            (cfg.eval_episodes, cfg.eval_seed, "eval")
        videos = 0 if validation else cfg.eval_videos
        policy = self.algo.policy_module().policy
        total = (suite_progress_total(self.tasks, episodes, dict.fromkeys(self.tasks, self.options)) if self.tasks
                 else progress_total(self.env_id, episodes, self.options))
        with tqdm(total=total, desc=f"{ns} at iteration {at}",
                  unit="step", file=sys.stderr, dynamic_ncols=True, leave=False) as eval_bar:
            result = self._episodes(policy, episodes, seed, videos=videos,
                                    out=self.out / "eval" / f"{at:06d}" if videos else None, progress=eval_bar)
        row = {f"{ns}/success_rate": result["success_rate"], f"{ns}/success_ci_low": result["success_rate_ci95"][0],
               f"{ns}/success_ci_high": result["success_rate_ci95"][1], f"{ns}/return": result["mean_return"],
               f"{ns}/length": result["mean_length"]}
        if self.tasks:  # per task, per group, mean of groups (the suite evaluation's metrics)
            row.update({f"{ns}/{k}": v for k, v in suite_metrics(result).items()
                        if "/" in k or k == "success_rate_mean_of_groups"})
        sampled = ""
        if cfg.eval_sampled and not validation:  # the policy PPO optimises, on the same seeds
            gen = self._episodes(policy, episodes, seed, greedy=False, temperature=cfg.temperature)
            row.update({f"{ns}/sampled_success_rate": gen["success_rate"],
                        f"{ns}/sampled_success_ci_low": gen["success_rate_ci95"][0],
                        f"{ns}/sampled_success_ci_high": gen["success_rate_ci95"][1]})
            if self.tasks:
                row.update({f"{ns}/sampled_success_rate/{e}": r["success_rate"] for e, r in gen["tasks"].items()})
            sampled = f", sampled {gen['success_rate']:.2f}"
            result.update(sampled_success_rate=gen["success_rate"], sampled_success_rate_ci95=gen["success_rate_ci95"])
        self.bar.write(f"iteration {at}: greedy success {result['success_rate']:.2f} (95% CI "
                       f"{result['success_rate_ci95'][0]:.2f}-{result['success_rate_ci95'][1]:.2f}){sampled}"
                       f"{f' over {len(self.tasks)} tasks' if self.tasks else ''}"
                       f"{' on the validation seeds' if validation else ''}")
        return result, {**row, f"perf/{ns}_s": time.perf_counter() - t_eval}

    def _episodes(self, policy, episodes: int, seed: int, **kwargs) -> dict:
        """`evaluate_policy`'s summary on the run's env (`evaluate_tasks`' on several), without per-episode records."""
        from vla_rl.evaluation import evaluate_policy
        from vla_rl.suite_evaluation import evaluate_tasks

        if self.tasks:
            return evaluate_tasks(policy, self.tasks, episodes, seed=seed, options=self.options, **kwargs)
        result = evaluate_policy(policy, self.env_id, episodes, seed=seed, options=self.options, **kwargs)
        result.pop("per_episode")
        return result

    def evaluate_start(self) -> None:
        """The start policy's evaluation, as iteration 0's row."""
        self.before, row = self.evaluate(0)
        if self.cfg.val_episodes:  # the start's validation success, for reference (the start is no checkpoint)
            row.update(self.evaluate(0, validation=True)[1])
        self._write_row(round_row({"iteration": 0, "env_steps": 0, "time_s": 0.0, **row}))

    # --- one iteration ----------------------------------------------------------------------------------
    def done(self) -> bool:
        return self.iteration >= self.end or bool(self.cfg.env_steps and self.env_steps >= self.cfg.env_steps)

    def iterate(self) -> dict:
        """Sample, learn, sync; evaluate and checkpoint when due; write the iteration's row."""
        cfg, t0 = self.cfg, time.perf_counter()
        result = self.algo.train()
        self.iteration += 1
        row = flatten_result(result)
        self.env_steps += int(row.get("rollout/env_steps", 0))
        row.update({"perf/sync_bytes": float(self.sent), "perf/sync_fraction": self.sent / self.full})
        last = self.done()
        evaluated = cfg.eval_every >= 0 and (last or bool(cfg.eval_every and self.iteration % cfg.eval_every == 0))
        improved = self._evaluate_iteration(row) if evaluated else False
        self.wall += time.perf_counter() - t0
        row = round_row({"iteration": self.iteration, "env_steps": self.env_steps, "time_s": self.wall, **row})
        self._write_row(row)
        self.bar.update(1)
        self.bar.set_postfix(success=f"{row.get('rollout/success_rate', float('nan')):.2f}",
                             ret=f"{row.get('rollout/return', float('nan')):.2f}",
                             kl=f"{row.get('kl/ref_per_token', float('nan')):.4f}",
                             sps=f"{row.get('perf/env_steps_per_s', 0):.0f}")
        # With validation every evaluated iteration is saved: any of them may become `best`.
        if self.iteration % cfg.save_every == 0 or last or (evaluated and cfg.val_episodes):
            self.checkpoint(improved)
        return row

    def _evaluate_iteration(self, row: dict) -> bool:
        """Validation (if asked) then test evaluation into `row`; True when the validation success is a new best."""
        from vla_rl.checkpoints import is_better

        cfg, improved = self.cfg, False
        if cfg.val_episodes:
            val, val_row = self.evaluate(self.iteration, validation=True)
            row.update(val_row)
        self.last_eval, eval_row = self.evaluate(self.iteration)
        row.update(eval_row)
        if cfg.val_episodes and is_better(val["success_rate"], self.best):
            improved = True
            self.best = {"iteration": self.iteration, "success_rate": val["success_rate"],
                         "success_rate_ci95": val["success_rate_ci95"], "test_success_rate": self.last_eval["success_rate"],
                         "test_success_rate_ci95": self.last_eval["success_rate_ci95"]}
        if self.best is not None:
            row.update({"val/best_iteration": float(self.best["iteration"]), "val/best_success_rate": self.best["success_rate"]})
        return improved

    def _write_row(self, row: dict) -> None:
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(row) + "\n")
        if self.wandb is not None and row["iteration"] > 0:
            self.wandb.log(row, step=row["iteration"])

    def checkpoint(self, improved: bool = False) -> Path:
        from vla_rl.checkpoints import point_best, save_rl_checkpoint

        algo = self.algo
        final = save_rl_checkpoint(self.root, self.iteration, algo, {
            "env_steps": self.env_steps, "wall_s": self.wall, "best": self.best,
            "faults": {"runner_restarts": algo.runner_restarts, "runner_timeouts": algo.runner_timeouts}})
        if improved:
            point_best(self.root, self.iteration)
        return final

    # --- the end ----------------------------------------------------------------------------------------
    def close(self) -> None:
        """Progress bar, wandb, labeler actor, algorithm and (if this run started it) Ray, in that order."""
        import ray

        if self.bar is not None:
            self.bar.close()
        if self.wandb is not None:
            self.wandb.finish()
        if self.labelers is not None:
            self.labelers.close()
        if self.algo is not None:
            self.algo.stop()
        if self.started_ray:
            ray.shutdown()
            self.started_ray = False

    def summary(self) -> dict[str, Any]:
        """The run's result (what `vla-rl train` prints as JSON), with the before → after line on stderr."""
        cfg, before, last_eval, best = self.cfg, self.before, self.last_eval, self.best
        summary = {"iteration": self.iteration, "iterations": cfg.iterations, "env_steps": self.env_steps,
                   "seconds": round(self.wall, 1), "checkpoint": str(self.root / "last" / "pretrained_model")}
        summary.update(before_after_fields(before, last_eval))
        per_task = f" per task, {len(self.tasks)} tasks" if self.tasks else ""
        for key, result in (("success_rate_per_task_before", before), ("success_rate_per_task", last_eval)):
            if self.tasks and result:
                summary[key] = {e: r["success_rate"] for e, r in result["tasks"].items()}
        if before and last_eval:
            print(before_after_line(before, last_eval, "success_rate", f"greedy success on {cfg.eval_episodes} unseen "
                                    f"seeds{per_task}", f"after {self.iteration} iterations"), file=sys.stderr)
            if "sampled_success_rate" in before and "sampled_success_rate" in last_eval:
                print(before_after_line(before, last_eval, "sampled_success_rate", f"sampled (temperature "
                                        f"{cfg.temperature:g}, what PPO optimises) on the same seeds"), file=sys.stderr)
        if best is not None:
            summary["best"] = {**best, "checkpoint": str(self.root / "best" / "pretrained_model")}
            print(f"best on {cfg.val_episodes} validation seeds: iteration {best['iteration']} "
                  f"({best['success_rate']:.0%}); its greedy success on the {cfg.eval_episodes} evaluation seeds: "
                  f"{best['test_success_rate']:.0%} (95% CI {best['test_success_rate_ci95'][0]:.0%}-"
                  f"{best['test_success_rate_ci95'][1]:.0%}) — checkpoints/best", file=sys.stderr)
        return summary
