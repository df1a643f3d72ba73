"""Typed configs of `vla-rl train` (RL fine-tuning) and `vla-rl export` (same machinery as vla_rl.config)."""

from __future__ import annotations

from dataclasses import dataclass, field

from envs.options import EnvOptions
from reward_models.config import PreferenceOptions
from vla_rl.base.errors import ConfigError
from vla_rl.base.validation import check_choice, check_range, seeds_overlap

# What a learned reward pays for (see TrainConfig.learned_reward; vla_rl.rl.episodes.learned_rewards).
LEARNED_REWARD_FORMS = ("score", "delta", "gain")


@dataclass
class WandbOptions:
    """Weights & Biases logging (metrics.jsonl is always written; wandb mirrors it)."""

    # "offline" (default: files under OUT/wandb, sync later with `wandb sync`), "online" (needs WANDB_API_KEY in
    # the environment) or "disabled".
    mode: str = "offline"
    # wandb project name.
    project: str = "vla-rl"
    # Run name; empty = the name of the --out directory.
    name: str = ""
    # Tags attached to the run, e.g. --wandb.tags '[drawer,beta0.05]'.
    tags: list[str] = field(default_factory=list)

    def validate(self) -> None:
        check_choice("wandb.mode", self.mode, ("online", "offline", "disabled"))


@dataclass
class TrainConfig:
    """RL fine-tuning: PPO on LoRA adapters + a value head, β·KL to the reference policy, RLlib env runners.

    Defaults start from the reference single-process run of the RL issue (itself CleanRL / RL4VLA-like:
    LoRA r 16 on the LM projections, lr 1e-4, value-head lr 1e-3, clip 0.2, γ 0.99, λ 0.95).
    """

    # Policy to fine-tune: a `pretrained_model` directory written by `vla-rl pretrain` (or by `vla-rl train`).
    policy: str = ""
    # Environment id; empty = the env of the policy's training demos (with their env options), or the tasks of
    # --suite / --envs.
    env: str = ""
    # Several tasks, one language-conditioned policy: a named suite (metaworld/mt10, metaworld/mt50, libero/<suite>;
    # `vla-rl envs` lists them). The envs of the runners are spread over the tasks round-robin (docs/commands.md,
    # "vla-rl train"); rollout and evaluation metrics are also reported per task.
    suite: str = ""
    # Env ids to train on together (after the suite's, if both are given), e.g. --envs '[metaworld/reach,metaworld/push]'.
    envs: list[str] = field(default_factory=list)
    env_options: EnvOptions = field(default_factory=EnvOptions)
    # Reward source: "env" (the env's reward, see env_reward), "model" (a saved reward model, see reward_model) or
    # "preference" (learned online from a labeler's answers about this run's rollouts, see preference.*).
    reward: str = "env"
    # The env's reward for RL: "shaped" (dense / max + 1 at success: every success outreturns every failure),
    # "sparse" (1 at success) or "dense" (the raw shaped reward; on Meta-World with terminate_on_success it
    # rewards hovering near the goal over succeeding).
    env_reward: str = "shaped"
    # At the episode's time limit: false = the limit ends the task, no value bootstrap there (CleanRL's
    # done = terminated or truncated; a finite-horizon task whose observation does not show the time left — and
    # with gamma 1 a bootstrap there has no anchor: the value drifts up until timing out beats succeeding);
    # true = bootstrap V(s_T) as for an endless task cut by a time limit (Pardo et al. 2018).
    bootstrap_time_limit: bool = False
    # A reward-model directory written by `vla-rl reward train` (with --reward model).
    reward_model: str = ""
    # Learned rewards (--reward model | preference) are the reward model's normalised per-frame score (mean 0, std 1
    # over its training frames) times this, before GAE. 1 keeps them as scored; 1/horizon (0.025 for 40 decisions)
    # puts them on the scale of the env's shaped reward (dense/horizon), whose returns the value head's init and
    # vf_lr suit: at 1 the returns of 40 scored frames reach +-20 and the critic needs ~half a 10-iteration run to
    # fit them (docs/learning.md section 13).
    reward_scale: float = 1.0
    # What a learned reward pays each action for: "score" = the reward model's score of the frame it led to (RL-VLM-F,
    # PEBBLE); "delta" = gamma * score(next frame) - score(frame), potential-based shaping (Ng et al. 1999) of a zero
    # reward: an episode's return is then its last frame's score minus its first's, so the policy is paid for where it
    # ends up, not for the frames it passes, and the critic predicts the end instead of a sum over the time left
    # (docs/learning.md section 14); "gain" = score(next frame) - score(the episode's first frame): the score with its
    # offset removed, 0 at the reset as the tasks' own progress is, so a critic that cannot see the time left is not
    # asked to predict offset x steps to go (needs episodes that start each rollout: rollout_length a multiple of the
    # episode length, terminate_on_success false; docs/learning.md section 15).
    learned_reward: str = "score"
    # Training iterations (each: sample, learn, sync weights).
    iterations: int = 50
    # Stop after this many env steps in total instead (0 = use iterations only).
    env_steps: int = 0
    # Ray env-runner actors (0 = sample in the driver process).
    env_runners: int = 1
    # Environments stepped in lockstep by each runner (one batched act() per step).
    envs_per_runner: int = 8
    # Decisions sampled per env per iteration; each iteration starts from fresh episodes, so make it at least
    # the episode length (in decisions) for whole episodes to finish.
    rollout_length: int = 64
    # Decisions per PPO minibatch (must not exceed the batch: env_runners x envs_per_runner x rollout_length).
    minibatch_size: int = 64
    # Passes over each iteration's batch.
    epochs: int = 2
    # Discount γ per decision (0.99: CleanRL / RL4VLA; the drawer-open recipe uses 1, Monte-Carlo returns).
    gamma: float = 0.99
    # GAE λ (0.95: CleanRL / RL4VLA; 1 = Monte-Carlo advantages, no bias from a fresh value head).
    gae_lambda: float = 0.95
    # Group-relative advantages (GRPO; SimpleVLA-RL and RLinf for VLAs): each runner starts its envs in groups of
    # this many from one initial state per iteration, and a decision's advantage is its episode's return minus its
    # group's mean return (scaled by the batch std) instead of GAE's. Episodes cut at the rollout boundary weigh 0,
    # so rollout_length should cover an episode. Must divide envs_per_runner. 1 = GAE with the value head.
    group_size: int = 1
    # A control for benchmarks, not a training setting: permute the advantages over each batch (same values, no
    # credit). If a run gains as much with it, the gain was not learned from the reward (docs/benchmarks.md, RL fine-tuning).
    shuffle_advantages: bool = False
    # PPO clip ε of the probability ratio.
    clip: float = 0.2
    # The PPO ratio: "decision" = one per decision (π_new/π_old of its K·D tokens together); "token" = one per action
    # token with the decision's advantage, averaged over the decision (SimpleVLA-RL, torchrl vla_grpo). Use "token"
    # when a decision has many tokens (action chunks: K·D = 20 at K = 5 on Meta-World), where the product of many
    # per-token ratios clips most decisions after the first minibatch. "sequence" = one per decision, length-normalised
    # (exp of the mean token log-ratio; GSPO, Zheng et al. 2025): one ratio whose scale does not grow with K·D — use it
    # with a much smaller --clip (GSPO: 3e-4 to 4e-4).
    ratio: str = "decision"
    # KL-to-reference coefficient β (nats per decision, summed over its K·D tokens); 0 = no KL penalty.
    beta: float = 0.05
    # Adapt β toward this KL per token (nats) — 0 = keep β fixed.
    kl_target: float = 0.0
    # Early stop of the policy's update (SB3 `target_kl`, CleanRL `--target-kl`): once a minibatch's approximate KL to
    # the sampling policy (k3 on the sampled tokens, nats per token) exceeds 1.5 x this, the update's remaining
    # minibatch steps leave LoRA alone (the critic keeps training). Bounds how far one noisy batch moves the policy,
    # whatever lr and epochs are. 0 = off.
    target_kl: float = 0.0
    # Learning rate of the LoRA adapters (AdamW).
    lr: float = 1e-4
    # Learning rate of the value head (its own AdamW).
    vf_lr: float = 1e-3
    # Weight of the value loss in the total loss (it also trains the LoRA backbone).
    vf_coef: float = 0.5
    # The value head reads detached backbone features: the value loss trains the head only, never LoRA (the
    # head reads the hidden state that also emits the first action token). false = shared, as RL4VLA.
    value_detach: bool = False
    # Recompute each transformer layer's activations in the learner's backward instead of keeping them (transformers'
    # activation checkpointing): less memory for a large VLA's forward over K·D tokens, ~one more forward per
    # minibatch step; the same log-probs and gradients (tests/policy/test_activation_checkpointing.py).
    activation_checkpointing: bool = False
    # The critic: "vla" = the value head on the VLA's features (RL4VLA); "privileged" = an asymmetric critic, a small
    # MLP on the simulator's full state (Meta-World's 39-d observation; the tabletop tasks' object positions and
    # target), which the policy never sees (Pinto et al. 2018; vla_rl/rl/critic.py). Use it with gae_lambda < 1 for
    # per-decision credit; it trains at vf_lr and is not part of the exported policy.
    critic: str = "vla"
    # The critic feeds advantages only while it predicts: when its explained variance on the fresh batch (before it
    # trains on it) is <= 0, that batch's advantages are Monte-Carlo returns-to-go with the batch-mean baseline
    # instead (issue 22: a critic with EV < 0 must not feed advantages). GAE only; logged as value/critic_gated.
    critic_gate: bool = False
    # First N iterations train only the value head's loss (critic warm-up): a fresh value head's advantages are
    # noise that would first degrade a good BC policy. 0 = off.
    critic_warmup: int = 0
    # Entropy bonus per token (0 = none).
    entropy_coef: float = 0.0
    # Global gradient-norm clip per optimizer (0 = off).
    grad_clip: float = 1.0
    # Sampling temperature of exploration (and of the training log-probs; the two are the same by construction).
    temperature: float = 1.0
    # LoRA rank (r 16, alpha 32: the reference run's and OpenVLA-OFT's LoRA shape).
    lora_r: int = 16
    # LoRA scale numerator (the update is scaled by alpha / r).
    lora_alpha: int = 32
    # Dropout on the LoRA input: only 0 is accepted — the backbone runs in eval mode in sampling and training, so
    # dropout would never act, and PPO's first ratio must be exactly 1. The field stays so that saved configs with 0
    # still load; a saved run with another value is refused on resume too (none of this project's runs had one).
    lora_dropout: float = 0.0
    # Regex of module names that get LoRA: by default the LM's attention query and value projections (PEFT's default
    # targets for Llama): the weight sync is 1.4 percent of the small policy vs 6.8 with every projection, and drawer-open
    # learned within the spread of every-projection seeds (one seed; docs/benchmarks.md, RL fine-tuning). "" = every LM attention
    # and MLP projection.
    lora_target_modules: str = r".*(language_model|text_model)\..*\.(q_proj|v_proj)"
    # Greedy evaluation every N iterations and at the end (0 = only at the end; -1 = never).
    eval_every: int = 10
    # Also evaluate the sampled policy (temperature, as in the rollouts: what PPO maximises) on the same seeds at each
    # evaluation: eval/sampled_success_rate beside the greedy eval/success_rate.
    eval_sampled: bool = True
    # Episodes per evaluation, on fixed seeds eval_seed, eval_seed + 1, ... (unseen in training).
    eval_episodes: int = 30
    # Also evaluate the starting policy (row "iteration": 0): the run then reports its before and after.
    eval_before: bool = False
    # First evaluation seed (training episodes draw theirs from [0, 2^31) with --seed's RNG: a clash is ~1e-5 per run).
    eval_seed: int = 10_000
    # Videos of the first N episodes of each evaluation (OUT/eval/<iteration>/videos).
    eval_videos: int = 0
    # Validation episodes at every evaluation, greedy on seeds val_seed, val_seed + 1, ... (disjoint from the
    # evaluation seeds): the checkpoint with the best validation success becomes checkpoints/best (ties: the later
    # one), so a run picks its policy without looking at the seeds it reports. 0 = off.
    val_episodes: int = 0
    # First validation seed.
    val_seed: int = 20_000
    # Save a checkpoint every N iterations (and always at the end).
    save_every: int = 10
    # Seed of sampling, env episodes and minibatch order.
    seed: int = 0
    # Torch threads of the learner (driver); each env runner uses one thread per CPU it holds.
    learner_threads: int = 1
    # CPUs per env-runner actor (Ray sets the actor's torch/OMP threads to this).
    cpus_per_runner: int = 1
    # GPUs per env-runner actor (fractions share a GPU, e.g. 0.25 = four runners per GPU); 0 = sample on CPU.
    gpus_per_runner: float = 0.0
    # Custom Ray resources each env runner needs, e.g. '{sim: 1}' to place runners only on nodes started with
    # `ray start --resources '{"sim": 8}'` (simulator nodes). {} = anywhere.
    runner_resources: dict[str, float] = field(default_factory=dict)
    # Learner actors: 0 = the learner runs in the driver process (one machine); N >= 1 = N Ray learner actors,
    # N > 1 trains data-parallel (torch DDP: gloo on CPU, NCCL on GPU; each learner gets 1/N of the batch).
    num_learners: int = 0
    # CPUs per learner actor (with num_learners >= 1).
    cpus_per_learner: int = 1
    # GPUs per learner actor (with num_learners >= 1; 0 = CPU learners).
    gpus_per_learner: float = 0.0
    # dtype of the frozen base weights, one for every copy of the policy in the run (runners and learner score
    # log-probs in the same precision, so PPO's first ratio is 1): "auto" = bfloat16 when the runners and the
    # learner actors all hold a GPU (env_runners >= 1, gpus_per_runner > 0, num_learners >= 1, gpus_per_learner > 0),
    # else float32; "float32" or "bfloat16" explicitly. LoRA, the value head and the optimizer state are float32.
    base_dtype: str = "auto"
    # A runner that has not returned its rollouts this many seconds after an iteration's sampling started (a hung
    # env step, a stuck simulator) is killed and replaced; the iteration trains on the other runners' rollouts.
    # 0 = wait forever.
    sample_timeout_s: float = 0.0
    # How often a crashed (or timed-out) env runner is restarted in a run before the run fails.
    max_runner_restarts: int = 1000
    # Seconds to wait for restarted runners (their model load included) when no runner is left to sample.
    runner_restore_timeout_s: float = 600.0
    # Ray cluster address ("" = start a local Ray; "auto" or host:port = join a running cluster).
    ray_address: str = ""
    wandb: WandbOptions = field(default_factory=WandbOptions)
    # The online preference loop (with --reward preference): labeler, query schedule, reward-model updates.
    preference: PreferenceOptions = field(default_factory=PreferenceOptions)
    # Run directory: checkpoints/<iteration>/, metrics.jsonl, train_config.yaml, eval/.
    out: str = "outputs/train"
    # Continue the run in `out` from checkpoints/last (same options required).
    resume: bool = False
    # Stop after this many iterations in this invocation (0 = run to the end); resume later with --resume true.
    stop_after: int = 0
    # Replace an earlier train run in `out` (only a train run; anything else there is refused).
    overwrite: bool = False

    def validate(self) -> None:
        """Every option checked before anything is written; the first problem is one ConfigError naming the field."""
        self._check_inputs()
        self._check_sizes_and_cluster()
        self._check_ppo()
        self._check_evaluation()
        self._check_batch()

    def _check_inputs(self) -> None:
        """The policy, the env and the reward."""
        if not self.policy:
            raise ConfigError("policy='' : give a pretrained policy directory, e.g. "
                              "--policy outputs/quickstart/pretrain/checkpoints/last/pretrained_model")
        if self.env:
            from envs.registry import get_spec

            try:
                get_spec(self.env)
            except KeyError as e:
                raise ConfigError(f"env: {e.args[0]}") from None
        from vla_rl.config import check_env_or_tasks, check_tasks

        check_env_or_tasks(self.env, self.suite, self.envs)
        check_tasks(self.suite, self.envs)
        self.env_options.validate()
        check_choice("reward", self.reward, ("env", "model", "preference"))
        if self.reward == "preference":
            self.preference.validate()
        check_choice("env_reward", self.env_reward, ("shaped", "sparse", "dense"))
        if self.reward == "model" and not self.reward_model:
            raise ConfigError("reward=model needs --reward_model DIR (a directory written by `vla-rl reward train`)")
        check_range("reward_scale", self.reward_scale, 1e-6, 1e6)
        if self.reward == "env" and self.reward_scale != 1.0:
            raise ConfigError(f"reward_scale={self.reward_scale:g} scales learned rewards only; with reward=env choose "
                              "the env's reward with --env_reward, or use --reward model|preference")
        check_choice("learned_reward", self.learned_reward, LEARNED_REWARD_FORMS)
        if self.reward == "env" and self.learned_reward != "score":
            raise ConfigError(f"learned_reward={self.learned_reward!r} shapes learned rewards only; with reward=env use "
                              "--reward model|preference, or drop --learned_reward")

    def _check_sizes_and_cluster(self) -> None:
        """Sizes, runners, learners and their resources, fault tolerance."""
        for name, lo in (("iterations", 1), ("envs_per_runner", 1), ("rollout_length", 1), ("minibatch_size", 1),
                         ("epochs", 1), ("eval_episodes", 1), ("save_every", 1), ("lora_r", 1), ("lora_alpha", 1),
                         ("learner_threads", 1), ("cpus_per_runner", 1)):
            check_range(name, getattr(self, name), lo, 10**9)
        check_range("env_steps", self.env_steps, 0, 10**12)
        check_range("env_runners", self.env_runners, 0, 10_000)
        check_range("num_learners", self.num_learners, 0, 10_000)
        check_range("cpus_per_learner", self.cpus_per_learner, 0, 10_000)
        check_range("gpus_per_runner", self.gpus_per_runner, 0.0, 1_000.0)
        check_range("gpus_per_learner", self.gpus_per_learner, 0.0, 1_000.0)
        if self.gpus_per_learner and not self.num_learners:
            raise ConfigError(f"gpus_per_learner={self.gpus_per_learner} needs num_learners >= 1 (the driver's "
                              "learner is CPU-only) — set --num_learners 1")
        for name, amount in self.runner_resources.items():
            if not isinstance(amount, (int, float)) or isinstance(amount, bool) or amount <= 0:
                raise ConfigError(f"runner_resources.{name}={amount!r}: a resource amount must be a number > 0")
            if name in ("CPU", "GPU", "memory"):
                raise ConfigError(f"runner_resources.{name}: use cpus_per_runner / gpus_per_runner for {name}")
        check_choice("base_dtype", self.base_dtype, ("auto", "float32", "bfloat16"))
        check_range("sample_timeout_s", self.sample_timeout_s, 0.0, 1e7)
        check_range("max_runner_restarts", self.max_runner_restarts, 0, 10**9)
        check_range("runner_restore_timeout_s", self.runner_restore_timeout_s, 1.0, 1e7)

    def _check_ppo(self) -> None:
        """PPO, the KL penalty, the optimiser, sampling and LoRA."""
        check_range("gamma", self.gamma, 0.0, 1.0)
        check_range("gae_lambda", self.gae_lambda, 0.0, 1.0)
        check_range("clip", self.clip, 1e-6, 10.0)
        check_choice("ratio", self.ratio, ("decision", "token", "sequence"))
        check_choice("critic", self.critic, ("vla", "privileged"))
        if isinstance(self.beta, (int, float)) and not isinstance(self.beta, bool) and self.beta < 0:
            raise ConfigError(f"beta={self.beta} is negative: the KL penalty coefficient must be >= 0 (0 = no penalty)")
        check_range("beta", self.beta, 0.0, 1e6)
        check_range("kl_target", self.kl_target, 0.0, 1e6)
        check_range("target_kl", self.target_kl, 0.0, 1e6)
        check_range("lr", self.lr, 1e-9, 1.0)
        check_range("vf_lr", self.vf_lr, 1e-9, 1.0)
        check_range("vf_coef", self.vf_coef, 0.0, 1e6)
        check_range("entropy_coef", self.entropy_coef, 0.0, 1e6)
        check_range("critic_warmup", self.critic_warmup, 0, 10**9)
        check_range("grad_clip", self.grad_clip, 0.0, 1e6)
        check_range("temperature", self.temperature, 1e-4, 100.0)
        if self.lora_dropout != 0:
            raise ConfigError(f"lora_dropout={self.lora_dropout!r} has no effect: the policy runs in eval mode in sampling "
                              "and training (PPO's ratio must be 1 on its own samples) — leave it 0")

    def _check_evaluation(self) -> None:
        """Evaluation and validation seeds, the run's seed and stop."""
        check_range("eval_every", self.eval_every, -1, 10**9)
        check_range("eval_videos", self.eval_videos, 0, 1000)
        check_range("eval_seed", self.eval_seed, 0, 2**31 - 1)
        check_range("val_episodes", self.val_episodes, 0, 10**6)
        check_range("val_seed", self.val_seed, 0, 2**31 - 1)
        if self.val_episodes:
            if self.eval_every < 0:
                raise ConfigError(f"val_episodes={self.val_episodes} with eval_every=-1: validation runs at the "
                                  "evaluations — set --eval_every 0 or more, or --val_episodes 0")
            if seeds_overlap(self.val_seed, self.val_episodes, self.eval_seed, self.eval_episodes):
                raise ConfigError(f"val_seed={self.val_seed}: validation seeds {self.val_seed}-"
                                  f"{self.val_seed + self.val_episodes - 1} overlap the evaluation seeds "
                                  f"{self.eval_seed}-{self.eval_seed + self.eval_episodes - 1} — move --val_seed, "
                                  "or the reported success would be measured on the seeds that picked the checkpoint")
        check_range("seed", self.seed, 0, 2**31 - 1)
        check_range("stop_after", self.stop_after, 0, 10**9)

    def _check_batch(self) -> None:
        """Groups and the minibatch against the batch, learner constraints; wandb; the run directory."""
        check_range("group_size", self.group_size, 1, self.envs_per_runner)
        if self.envs_per_runner % self.group_size:
            raise ConfigError(f"group_size={self.group_size} does not divide envs_per_runner={self.envs_per_runner}: "
                              "each runner's envs split into whole groups — pick a divisor")
        if self.critic_gate and self.group_size > 1:
            raise ConfigError(f"critic_gate=true with group_size={self.group_size}: group advantages use no critic, so "
                              "there is nothing to gate — drop --critic_gate or set --group_size 1")
        if self.target_kl and self.num_learners > 1:
            raise ConfigError(f"target_kl={self.target_kl} with num_learners={self.num_learners}: each data-parallel "
                              "learner would stop on its own shard's KL and the replicas' LoRA weights would part — "
                              "use --num_learners 1 or --target_kl 0")
        if self.suite or self.envs:
            from envs import resolve_env_ids
            from vla_rl.rl.multitask import check_runs_every_task

            check_runs_every_task(resolve_env_ids(self.suite, self.envs), self.env_runners, self.envs_per_runner,
                                  self.group_size)
        batch = max(1, self.env_runners) * self.envs_per_runner * self.rollout_length
        if self.minibatch_size > batch:
            raise ConfigError(f"minibatch_size={self.minibatch_size} exceeds the batch of {batch} decisions per "
                              f"iteration (env_runners x envs_per_runner x rollout_length = {max(1, self.env_runners)}"
                              f" x {self.envs_per_runner} x {self.rollout_length}) — lower it or sample more")
        self.wandb.validate()
        if not self.out:
            raise ConfigError("out='' : give a run directory, e.g. --out outputs/train/drawer")

    def run_base_dtype(self) -> str:
        """The one base dtype of every policy copy in the run ("auto" resolved; see `base_dtype`)."""
        if self.base_dtype != "auto":
            return self.base_dtype
        all_on_gpu = (self.env_runners >= 1 and self.gpus_per_runner > 0
                      and self.num_learners >= 1 and self.gpus_per_learner > 0)
        return "bfloat16" if all_on_gpu else "float32"


@dataclass
class ExportConfig:
    """Export a policy from a train checkpoint: the LoRA adapter (PEFT format) or a merged plain model."""

    # A checkpoint directory of `vla-rl train` (e.g. outputs/train/checkpoints/last) or its pretrained_model.
    checkpoint: str = ""
    # Output directory (a new policy directory).
    out: str = "outputs/export"
    # Fold the LoRA weights into the base model: a plain transformers model + action tokenizer (no peft needed).
    merge: bool = False
    # Replace an earlier export in `out` (only a policy directory; anything else there is refused).
    overwrite: bool = False
    # "vla-rl" (a policy directory) or "openvla" (OpenVLA's checkpoint layout, LoRA merged: for a policy loaded from an
    # OpenVLA checkpoint without <state>; OpenVLA's own code and `policy_from_hf` read it; `out` must not exist).
    format: str = "vla-rl"
    # With --format openvla: also record the policy's action statistics under this norm_stats key (its unnorm_key).
    stats_key: str = ""

    def validate(self) -> None:
        if not self.checkpoint:
            raise ConfigError("checkpoint='' : give a train checkpoint, e.g. --checkpoint outputs/train/checkpoints/last")
        if not self.out:
            raise ConfigError("out='' : give an output directory")
        check_choice("format", self.format, ("vla-rl", "openvla"))
        if self.stats_key and self.format != "openvla":
            raise ConfigError(f"stats_key={self.stats_key!r} names OpenVLA norm_stats; use it with --format openvla")
        if self.format == "openvla" and (self.merge or self.overwrite):
            raise ConfigError("--format openvla always merges LoRA and writes a new directory: drop --merge/--overwrite")
