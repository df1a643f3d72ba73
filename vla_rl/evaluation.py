"""Policy evaluation: fixed-seed episodes, run several at a time, success with a 95 % interval.

Episode i starts from env seed `seed + i`, and the policy is batch-invariant (fixed-length
prompts), so the same policy and seed give the same results however many run in parallel.
Action chunks (K > 1) execute step by step; the episode ends at the first terminal step inside
a chunk, and a success reached inside a chunk counts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from envs import EnvOptions, make_env
from vla_rl.policy.vla_policy import PolicyError


def wilson_interval(successes: int, n: int) -> tuple[float, float]:
    """95 % Wilson score interval for a binomial rate (sane at 0 % and 100 %, unlike Wald), from scipy."""
    from scipy.stats import binomtest

    if n == 0:
        return 0.0, 1.0
    ci = binomtest(int(successes), int(n)).proportion_ci(confidence_level=0.95, method="wilson")
    return float(ci.low), float(ci.high)


def check_env_fits(policy, env_id: str, options: EnvOptions) -> None:
    """Refuse an env whose images, actions or state do not fit the policy — from the task spec, no env built."""
    from envs.registry import get_spec

    try:
        spec = get_spec(env_id)
    except KeyError as e:
        raise PolicyError(f"env: {e.args[0]}") from None
    want = tuple(policy.spec.image_size)
    if (options.image_size, options.image_size) != want:
        raise PolicyError(f"env {env_id} renders {options.image_size}x{options.image_size} images; the policy was "
                          f"trained on {want[0]}x{want[1]} (set --env_options.image_size {want[0]})")
    if spec.action_dim != policy.spec.action_dim:
        raise PolicyError(f"env {env_id} takes {spec.action_dim}-D actions; the policy emits "
                          f"{policy.spec.action_dim}-D actions — evaluate it on a task of its own action space")
    if policy.spec.use_state and spec.state_dim != policy.spec.state_dim:
        raise PolicyError(f"env {env_id} has a {spec.state_dim}-D state; the policy reads a {policy.spec.state_dim}-D "
                          "state — evaluate it on a task of its own observation space")


def resolve_env(env: str, env_options: EnvOptions, policy, policy_path) -> tuple[str, EnvOptions]:
    """The env id and options to run a policy in: the given ones, or — with no --env and default
    options — the env and options of the policy's training demos."""
    from vla_rl.base.errors import ConfigError

    env_id = env or policy.spec.train_env
    if not env_id:
        raise ConfigError("env='' and the policy does not record its training env: pass --env ID")
    return env_id, env_options if env else training_options(env_options, policy, policy_path)


def training_options(env_options: EnvOptions, policy, policy_path) -> EnvOptions:
    """The given options, or — when they are all defaults — the env options of the policy's training demos."""
    from vla_rl.base.errors import ConfigError

    if not policy.spec.train_env_options or env_options != EnvOptions():
        return env_options
    try:
        options = EnvOptions(**policy.spec.train_env_options)
        options.validate()
    except (TypeError, ConfigError) as e:
        raise ConfigError(f"{Path(policy_path) / 'policy.json'}: field 'spec.train_env_options' is invalid ({e}) — "
                          "pass --env and --env_options explicitly") from None
    return options


@dataclass
class _Slot:
    env: Any
    episode: int = -1
    obs: dict | None = None
    ret: float = 0.0
    length: int = 0
    success: bool = False
    frames: list = field(default_factory=list)


def run_episodes(policy, env_id: str, episodes: int, seed: int = 0, options: EnvOptions | None = None,
                 greedy: bool = True, temperature: float = 1.0, num_envs: int = 8, record: int = 0,
                 progress=None, sample_seed: int | None = None) -> tuple[list[dict], dict[int, list[np.ndarray]]]:
    """Run `episodes` episodes; returns per-episode records and annotated frames of the first `record`.

    Episode i starts from seed + i in whichever of `num_envs` envs is free; each decision acts on a batch of the
    running envs. `progress` (a tqdm bar) counts env steps out of episodes × max_episode_steps: an episode that
    ends early adds its unused steps, so the bar moves with every decision and ends at 100 %. The sampler's generator
    starts from `sample_seed` (default: `seed`): repeated sampled runs over the same env seeds give each a new draw.
    """
    options = options or EnvOptions()
    check_env_fits(policy, env_id, options)
    runner = _EpisodeRunner(policy, episodes, seed, greedy, temperature, record, progress,
                            seed if sample_seed is None else sample_seed)
    slots = [_Slot(make_env(env_id, options)) for _ in range(max(1, min(num_envs, episodes)))]
    try:
        for s in slots:
            runner.start(s)
        while any(s.episode >= 0 for s in slots):
            runner.decide([s for s in slots if s.episode >= 0])
    finally:
        for s in slots:
            s.env.close()
    return runner.records, runner.videos


class _EpisodeRunner:
    """The state of one `run_episodes` call: which episode starts next, the records and videos so far."""

    def __init__(self, policy, episodes: int, seed: int, greedy: bool, temperature: float, record: int, progress,
                 sample_seed: int):
        self.policy, self.episodes, self.seed, self.record, self.progress = policy, episodes, seed, record, progress
        self.greedy, self.temperature = greedy, temperature
        self.generator = torch.Generator().manual_seed(sample_seed)
        self.records: list[dict] = [{} for _ in range(episodes)]
        self.videos: dict[int, list[np.ndarray]] = {}
        self.next_episode = 0

    def start(self, slot: _Slot) -> None:
        """The slot's env starts the next episode (or retires when none is left)."""
        from vla_rl.video import annotate

        if self.next_episode >= self.episodes:
            slot.episode = -1
            return
        slot.episode, self.next_episode = self.next_episode, self.next_episode + 1
        slot.obs, _ = slot.env.reset(seed=self.seed + slot.episode)
        slot.ret, slot.length, slot.success, slot.frames = 0.0, 0, False, []
        if slot.episode < self.record:
            slot.frames.append(annotate(slot.obs["image"], [f"episode {slot.episode} seed {self.seed + slot.episode}"]))

    def decide(self, active: list[_Slot]) -> None:
        """One decision for every running env: act on the batch, step each env through its chunk."""
        batch = {k: np.stack([s.obs[k] for s in active]) for k in ("image", "state", "instruction")}
        out = self.policy.act(batch, temperature=self.temperature, greedy=self.greedy, generator=self.generator)
        for j, s in enumerate(active):
            if self._step_chunk(s, out, j):
                self._finish(s)
                self.start(s)

    def _step_chunk(self, s: _Slot, out, j: int) -> bool:
        """Step the slot's env through decision j's chunk; True when its episode ended inside it."""
        from vla_rl.video import annotate

        chunk, d = self.policy.spec.chunk_size, self.policy.spec.action_dim
        try:
            for k in range(chunk):
                action = out.actions[j, k]
                # Render only the frames a decision (or a video) sees: the chunk's last step; an episode that ends
                # inside the chunk is reset next, so its last frame is never used (see envs.chunking).
                s.env.render_observations = s.episode < self.record or k == chunk - 1
                s.obs, reward, term, trunc, info = s.env.step(action)
                s.ret += float(reward)
                s.length += 1
                if self.progress is not None:
                    self.progress.update(1)
                s.success = s.success or bool(info["success"])
                if s.episode < self.record:
                    prob = out.bin_prob[j, k * d:(k + 1) * d].mean().item()
                    s.frames.append(annotate(s.obs["image"], [
                        f"step {s.length}  value {out.value[j].item():+.2f}",
                        "a=" + " ".join(f"{x:+.2f}" for x in action),
                        f"p(token) {prob:.2f}  {'SUCCESS' if s.success else ''}"]))
                if term or trunc:
                    return True
            return False
        finally:
            s.env.render_observations = True

    def _finish(self, s: _Slot) -> None:
        self.records[s.episode] = {"episode": s.episode, "seed": self.seed + s.episode, "success": s.success,
                                   "return": s.ret, "length": s.length}
        if s.episode < self.record:
            self.videos[s.episode] = s.frames
        if self.progress is not None:
            self.progress.update(max(0, s.env.max_episode_steps - s.length))
            done = [r for r in self.records if r]
            self.progress.set_postfix(episodes=len(done), success=f"{sum(r['success'] for r in done) / len(done):.2f}")


def summarize(records: list[dict]) -> dict[str, Any]:
    n = len(records)
    succ = sum(r["success"] for r in records)
    lo, hi = wilson_interval(succ, n)
    returns = np.array([r["return"] for r in records], dtype=np.float64)
    lengths = np.array([r["length"] for r in records], dtype=np.float64)
    return {"episodes": n, "successes": int(succ), "success_rate": succ / n if n else 0.0,
            "success_rate_ci95": [lo, hi], "mean_return": float(returns.mean()) if n else 0.0,
            "std_return": float(returns.std()) if n else 0.0, "mean_length": float(lengths.mean()) if n else 0.0,
            "lengths": [int(x) for x in lengths]}


def progress_total(env_id: str, episodes: int, options: EnvOptions | None = None) -> int:
    """The step count a `run_episodes` progress bar runs to (episodes × max_episode_steps)."""
    from envs.registry import get_spec

    options = options or EnvOptions()
    return episodes * (options.max_episode_steps or get_spec(env_id).max_episode_steps)


def evaluate_policy(policy, env_id: str, episodes: int, seed: int = 0, options: EnvOptions | None = None,
                    greedy: bool = True, temperature: float = 1.0, num_envs: int = 8, videos: int = 0,
                    out: str | Path | None = None, progress=None, video_subdir: str = "") -> dict[str, Any]:
    """Summary dict (success_rate, CI, returns, lengths, per-episode records); videos to `out/videos[/video_subdir]`."""
    was_training = policy.training
    policy.eval()
    try:
        records, frames = run_episodes(policy, env_id, episodes, seed, options, greedy, temperature, num_envs,
                                       videos if out else 0, progress)
    finally:
        policy.train(was_training)
    summary = summarize(records)
    summary["per_episode"] = records
    if out is not None and frames:
        from vla_rl.video import write_mp4

        summary["videos"] = [str(write_mp4(Path(out) / "videos" / video_subdir / f"episode_{i:03d}.mp4", f)) for i, f in
                             sorted(frames.items())]
    return summary
