"""Typed configs of `vla-rl reward label | train | eval` (draccus, like vla_rl.config)."""

from __future__ import annotations

from dataclasses import dataclass, field

from vla_rl.base.errors import ConfigError
from vla_rl.base.validation import check_choice, check_range

SELECTIONS = ("uniform", "disagreement", "entropy")


@dataclass
class LabelerOptions:
    """Which labeler answers preference queries and how (shared by `reward label` and `train --reward preference`)."""

    # Labeler backend: "scripted" (B-Pref teacher over privileged progress), "hf" (a local HF VLM) or
    # "openai" (an OpenAI-compatible chat-completions server: vLLM, SGLang, hosted APIs), or a labeler added with
    # reward_models.labelers.register_labeler or an installed package's `vla_rl.labelers` entry point.
    labeler: str = "scripted"
    # Scripted teacher: oracle | noisy | mistake | skip | myopic | equal (B-Pref's named teachers).
    teacher: str = "oracle"
    # hf / openai: model directory or hub id (hf), model name (openai).
    vlm_model: str = ""
    # hf: allow the checkpoint's own code (off unless you trust it).
    trust_remote_code: bool = False
    # hf: pairs per batched generate() call.
    vlm_batch_size: int = 8
    # hf: torch device of the VLM: cpu, cuda, cuda:N or mps.
    vlm_device: str = "cpu"
    # hf: weight dtype of the VLM: float32 (CPU), bfloat16 or float16 (GPU).
    vlm_dtype: str = "float32"
    # Ask again with the images swapped; keep only consistent answers.
    swap_check: bool = True
    # openai: server URL, e.g. http://localhost:8000/v1 for `vllm serve`.
    base_url: str = "https://api.openai.com/v1"
    # openai: name of the environment variable holding the API key (the key itself is never stored).
    api_key_env: str = "OPENAI_API_KEY"
    # openai: concurrent requests.
    concurrency: int = 4
    # openai: seconds to wait for one reply before the request counts as failed (and is retried).
    timeout: float = 60.0
    # openai: attempts per request; 429, 5xx and timeouts are retried with exponential backoff.
    max_attempts: int = 5
    # hf / openai: most tokens per reply. A reply cut at this limit is never used: its pair stays "unlabeled"
    # with the cause (512 fits RL-VLM-F's two-stage analysis; reasoning models need more).
    max_tokens: int = 512

    def validate_labeler(self, prefix: str = "", other_processes: bool = False) -> None:
        """`other_processes`: the labeler will be built in another process (the online loop's Ray actor), where only
        built-in and entry-point labelers exist."""
        p = prefix
        from reward_models.labelers import labeler_names

        names = labeler_names(other_processes)
        if other_processes and self.labeler not in names and self.labeler in labeler_names():
            raise ConfigError(f"{p}labeler={self.labeler!r} is registered in this process only; the online loop's "
                              "labeler runs in a Ray actor — install it under the vla_rl.labelers entry point "
                              "(docs/preferences.md, 'Adding a labeler')")
        check_choice(f"{p}labeler", self.labeler, names)
        if self.labeler in ("hf", "openai") and not self.vlm_model:
            raise ConfigError(f"{p}labeler={self.labeler!r} needs --{p}vlm_model (a model directory / hub id / served name)")
        check_range(f"{p}concurrency", self.concurrency, 1, 1024)
        check_range(f"{p}vlm_batch_size", self.vlm_batch_size, 1, 4096)
        check_choice(f"{p}vlm_dtype", self.vlm_dtype, ("float32", "bfloat16", "float16"))
        if self.labeler == "hf":
            from vla_rl.base.validation import check_device

            check_device(f"{p}vlm_device", self.vlm_device)
        check_range(f"{p}timeout", self.timeout, 0.01, 3600)
        check_range(f"{p}max_attempts", self.max_attempts, 1, 100)
        check_range(f"{p}max_tokens", self.max_tokens, 1, 1_000_000)
        from reward_models.teachers import TEACHERS

        check_choice(f"{p}teacher", self.teacher, sorted(TEACHERS))


@dataclass
class RewardLabelConfig(LabelerOptions):
    """Sample pairs of segments from demo/rollout datasets, label them, append them to a pair dataset."""

    # Demo or rollout dataset directories (vla-rl-demos format), e.g. --data '[outputs/demos]'.
    data: list[str] = field(default_factory=lambda: ["outputs/demos"])
    # Number of pairs to query.
    pairs: int = 500
    # Frames per segment (1 = single frames, as RL-VLM-F).
    segment_length: int = 1
    # Query selection: uniform | disagreement | entropy (the last two need --model).
    selection: str = "uniform"
    # Candidate pool = pool_factor x pairs (PEBBLE uses 10).
    pool_factor: int = 10
    # Reward model used by disagreement/entropy selection.
    model: str = ""
    # Output pair dataset (appended to if it exists).
    out: str = "outputs/pairs"
    # Seed of the candidate sampling, the selection and the scripted teacher's noise.
    seed: int = 0
    # Instead of sampling new pairs, label the pairs of --out still "unlabeled" (e.g. after failed calls).
    retry_unlabeled: bool = False
    # openai: answer cache directory (empty = OUT/vlm_cache).
    cache_dir: str = ""

    def validate(self) -> None:
        self.validate_labeler()
        check_choice("selection", self.selection, ("uniform", "disagreement", "entropy"))
        check_range("pairs", self.pairs, 1, 10**7)
        check_range("segment_length", self.segment_length, 1, 1000)
        check_range("pool_factor", self.pool_factor, 1, 1000)
        if self.selection != "uniform" and not self.model:
            raise ConfigError(f"selection={self.selection!r} needs --model DIR (a trained reward model)")
        if not self.data:
            raise ConfigError("data=[] : give at least one dataset directory")


@dataclass
class PreferenceOptions(LabelerOptions):
    """The online preference loop of `vla-rl train --reward preference` (defaults: RL-VLM-F / PEBBLE, named)."""

    # Query a round every N iterations (RL-VLM-F: every 4000 env steps; one 1600-step iteration here).
    query_every: int = 1
    # Pairs per round (RL-VLM-F's reward_batch: 40).
    queries_per_round: int = 40
    # Total query budget of the run (RL-VLM-F: 20 000 over 1 M steps; this scales it to ~100 k steps).
    max_queries: int = 2000
    # Query selection: uniform (RL-VLM-F) | disagreement | entropy (PEBBLE; need a model, uniform until one exists).
    selection: str = "uniform"
    # Candidate pool = pool_factor x queries_per_round (PEBBLE: 10).
    pool_factor: int = 10
    # Frames per segment (1 = single frames, as RL-VLM-F).
    segment_length: int = 1
    # Answers are consumed N iterations after they are asked (1: labelling overlaps the next iteration).
    label_lag: int = 1
    # Seconds the driver waits at the due iteration for late answers before going on with the last model.
    label_wait_s: float = 600.0
    # Start from this reward model (a `vla-rl reward train` directory) instead of none (RL-VLM-F starts from none,
    # the default: the first round's answers are awaited and train the first model before the first update).
    init_reward_model: str = ""
    # Also train on the labelled pairs of this pair dataset (e.g. demo pairs from `vla-rl reward label`); they are
    # copied into the run's pair dataset (same image size required) and count toward no query budget.
    init_pairs: str = ""
    # Reward-model ensemble members (RL-VLM-F and PEBBLE: 3).
    ensemble_size: int = 3
    # Max epochs per reward-model update. Each update starts from the last model (warm start), so a few epochs
    # over all pairs so far suffice (PEBBLE: <= 50 per update, stopping at 97 percent train accuracy).
    epochs: int = 10
    # Epochs without held-out improvement before a member stops, per update.
    patience: int = 5
    # Adam learning rate of the reward model (RL-VLM-F: 3e-4).
    rm_lr: float = 3e-4
    # Pairs per reward-model Adam step (RL-VLM-F: 64).
    rm_batch_size: int = 64
    # Share of the run's labelled pairs held out for early stopping and reward_model/heldout_accuracy.
    holdout: float = 0.1

    def validate(self) -> None:
        self.validate_labeler("preference.", other_processes=True)
        check_choice("preference.selection", self.selection, SELECTIONS)
        check_range("preference.query_every", self.query_every, 1, 10**6)
        check_range("preference.queries_per_round", self.queries_per_round, 1, 10**6)
        check_range("preference.max_queries", self.max_queries, 1, 10**8)
        check_range("preference.pool_factor", self.pool_factor, 1, 1000)
        check_range("preference.segment_length", self.segment_length, 1, 1000)
        check_range("preference.label_lag", self.label_lag, 0, 1000)
        check_range("preference.label_wait_s", self.label_wait_s, 0, 10**6)
        check_range("preference.ensemble_size", self.ensemble_size, 1, 64)
        check_range("preference.epochs", self.epochs, 1, 10**5)
        check_range("preference.patience", self.patience, 1, 10**5)
        check_range("preference.rm_lr", self.rm_lr, 1e-9, 1.0)
        check_range("preference.rm_batch_size", self.rm_batch_size, 1, 10**6)
        check_range("preference.holdout", self.holdout, 0.0, 0.9)
        if self.labeler == "hf" and self.vlm_device != "cpu":
            raise ConfigError("preference.vlm_device: the labeler actor runs on CPU in this version (hf on GPU is "
                              "available in `vla-rl reward label`)")


@dataclass
class RewardTrainConfig:
    """Train a Bradley–Terry reward-model ensemble on labelled pairs."""

    # Pair dataset directories (written by `vla-rl reward label`).
    pairs: list[str] = field(default_factory=lambda: ["outputs/pairs"])
    # Output reward-model directory.
    out: str = "outputs/reward_model"
    # Ensemble members (RL-VLM-F and PEBBLE use 3).
    ensemble_size: int = 3
    # Condition on the instruction (multi-task reward models).
    instruction_conditioning: bool = True
    # Image encoder: "cnn" (RL-VLM-F's CNN per member) or "vla" (the frozen vision tower of --vla_policy).
    encoder: str = "cnn"
    # Policy directory whose vision tower encodes the images (encoder=vla).
    vla_policy: str = ""
    # Reward head: "linear" (default) or "tanh" (RL-VLM-F's, bounds a frame's reward to [-1, 1],
    # which measured 0.91 vs 0.96 held-out accuracy on drawer-open; see reward_models/reward_model.py).
    output: str = "linear"
    # Maximum epochs per member (early stopping on held-out accuracy ends most runs sooner).
    epochs: int = 50
    # Epochs without held-out improvement before a member stops. 10, as with 5 the noisy accuracy
    # of a 50-pair held-out set stopped members after 1-2 epochs (drawer-open, 500 pairs: 0.86
    # held-out accuracy with patience 5, 0.94 with 10).
    patience: int = 10
    # Pairs per Adam step.
    batch_size: int = 64
    # Adam learning rate (RL-VLM-F: 3e-4).
    lr: float = 3e-4
    # Fraction of pairs held out for early stopping and the reported accuracy.
    holdout: float = 0.1
    # Seed of the member initialisations, the held-out split and the batch order.
    seed: int = 0
    # Replace an earlier reward model in `out` (only a reward model; anything else there is refused).
    overwrite: bool = False

    def validate(self) -> None:
        if not self.pairs:
            raise ConfigError("pairs=[] : give at least one pair dataset directory")
        check_range("ensemble_size", self.ensemble_size, 1, 64)
        check_choice("encoder", self.encoder, ("cnn", "vla"))
        check_choice("output", self.output, ("linear", "tanh"))
        if self.encoder == "vla" and not self.vla_policy:
            raise ConfigError("encoder='vla' needs --vla_policy DIR (a saved policy, e.g. .../pretrained_model)")
        check_range("epochs", self.epochs, 1, 100_000)
        check_range("patience", self.patience, 1, 100_000)
        check_range("batch_size", self.batch_size, 1, 1_000_000)
        check_range("lr", self.lr, 1e-9, 1.0)
        check_range("holdout", self.holdout, 0.0, 0.9)


@dataclass
class RewardEvalConfig:
    """Evaluate a reward model on labelled pairs and (optionally) along episodes against progress."""

    # Reward-model directory.
    model: str = "outputs/reward_model"
    # Labelled pair datasets to score (pairwise accuracy, NLL, ECE, teacher accuracy).
    pairs: list[str] = field(default_factory=list)
    # Demo/rollout datasets: Spearman correlation of reward with privileged progress along episodes.
    episodes: list[str] = field(default_factory=list)
    # Also write the JSON to this file (refused if it exists, unless --overwrite true).
    out: str = ""
    # Replace an existing `out` file.
    overwrite: bool = False

    def validate(self) -> None:
        if not self.pairs and not self.episodes:
            raise ConfigError("give --pairs and/or --episodes to evaluate on")
