"""Typed dataclass configs for every command; YAML files + dotted CLI overrides via draccus.

draccus (LeRobot's choice) parses `--config_path file.yaml` and overrides such as
`--env_options.image_size 128`, rejects unknown keys by name, and builds `--help` from the field
comments below. `validate()` holds every cross-field and range check; each run writes its resolved
config next to its outputs (`save_config`).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import draccus
import yaml

from envs.options import EnvOptions
from vla_rl.base.atomic_io import atomic_write_text
from vla_rl.base.errors import ConfigError
from vla_rl.base.validation import check_device, check_range, seeds_overlap

T = TypeVar("T")


@dataclass
class EnvsConfig:
    """List every registered environment: id, instruction(s), action size, episode length."""

    # Only list this family ("tabletop", "metaworld" or a family registered by a package); empty = all.
    family: str = ""
    # Only list this suite's tasks, in its order, with their difficulty group (metaworld/mt10, metaworld/mt50,
    # libero/<suite>); empty = all.
    suite: str = ""
    # Print JSON instead of a table.
    json: bool = False

    def validate(self) -> None:
        from envs import family_names

        if self.family and self.family not in family_names():
            raise ConfigError(f"family={self.family!r} is not registered: choose one of {family_names()} or ''")
        check_tasks(self.suite, [])


def check_tasks(suite: str, envs: list[str]) -> None:
    """A suite name and a list of env ids (either may be empty) name registered tasks; errors say which field."""
    from envs.registry import get_spec
    from envs.suites import get_suite

    if suite:
        try:
            get_suite(suite)
        except KeyError as e:
            raise ConfigError(f"suite: {e.args[0]}") from None
    for i, env_id in enumerate(envs):
        try:
            get_spec(env_id)
        except KeyError as e:
            raise ConfigError(f"envs[{i}]: {e.args[0]}") from None


def check_env_or_tasks(env: str, suite: str, envs: list[str], one: str = "task", several: str = "several") -> None:
    """--env (`env`, '' when not given) names one task, --suite / --envs several: not both. `one` / `several` say
    what each gives in the message ("dataset", "one dataset per task" for collect)."""
    if env and (suite or envs):
        raise ConfigError(f"env={env!r} with suite={suite!r} / envs={envs}: give --env for one {one}, or --suite / "
                          f"--envs for {several}")


@dataclass
class CollectConfig:
    """Run a task's scripted expert and write (or append to) a demonstration dataset."""

    # Environment id (run `vla-rl envs` for the list).
    env: str = "tabletop/touch-color"
    # A named suite (metaworld/mt10, metaworld/mt50, libero/<suite>): one dataset per task, OUT/<env id, '/' as '.'>.
    suite: str = ""
    # Env ids to collect one after another (after the suite's), one dataset per task as with --suite.
    envs: list[str] = field(default_factory=list)
    # Environment settings (image size, camera, episode length, ...).
    env_options: EnvOptions = field(default_factory=EnvOptions)
    # Number of episodes to record (per task with --suite / --envs).
    episodes: int = 20
    # Output dataset directory; appended to if it already holds a compatible dataset. With --suite / --envs: the
    # directory that holds the tasks' datasets (`vla-rl pretrain --demos '[OUT]'` reads them all).
    out: str = "outputs/demos"
    # Seed of the first episode; episode i uses seed + i, so runs are reproducible.
    seed: int = 0
    # Std of Gaussian noise added to the expert's actions (before clipping) for diverse demos.
    noise: float = 0.0
    # Keep failed episodes too (they are flagged success=false in the index).
    keep_failures: bool = True

    def validate(self) -> None:
        from envs.registry import get_spec

        try:
            get_spec(self.env)
        except KeyError as e:
            raise ConfigError(f"env: {e.args[0]}") from None
        check_env_or_tasks(self.env if self.env != CollectConfig.env else "", self.suite, self.envs, "dataset",
                           "one dataset per task")
        check_tasks(self.suite, self.envs)
        self.env_options.validate()
        check_range("episodes", self.episodes, 1, 10_000_000)
        check_range("noise", self.noise, 0.0, 2.0)
        check_range("seed", self.seed, 0, 2**31 - 1)
        if not self.out:
            raise ConfigError("out='' : give an output directory, e.g. --out outputs/demos/touch")


def _config_path_arg(args: Sequence[str]) -> str | None:
    for i, a in enumerate(args):
        if a == "--config_path" and i + 1 < len(args):
            return args[i + 1]
        if a.startswith("--config_path="):
            return a.split("=", 1)[1]
    return None


def read_yaml_mapping(path: str | Path) -> dict:
    """A config file's YAML mapping; errors name the file (and line) and say what a config file is."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: config file not found — give a YAML file, e.g. experiments/quickstart.yaml")
    if not path.is_file():
        raise ConfigError(f"{path}: is a directory, not a config file — give a YAML file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: is not a text file — give a YAML config file") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{where}: not valid YAML ({problem}) — fix the file") from None
    if not isinstance(data, dict):
        got = "empty" if data is None else f"a {type(data).__name__}"
        raise ConfigError(f"{path}: is {got}; a config file is a YAML mapping of options (option: value per line)")
    return data


def parse_config(config_class: type[T], args: Sequence[str], prog: str) -> T:
    """Parse CLI args (and an optional --config_path YAML) into a validated config.

    The file is checked on its own first, so an error in it names the file rather than the merge.
    """
    path = _config_path_arg(args)
    if path is not None:
        data = read_yaml_mapping(path)
        try:
            draccus.decode(config_class, data)
        except (draccus.utils.DecodingError, draccus.utils.DraccusException) as e:
            raise ConfigError(f"{path}: {e} — fix the file (`{prog} --help` lists the options)") from None
    try:
        parser = draccus.argparsing.ArgumentParser(config_class=config_class, exit_on_error=False, prog=prog)
        _tidy_help(parser.parser)
        cfg = parser.parse_args(list(args))
    except (draccus.utils.DecodingError, draccus.utils.DraccusException) as e:
        raise ConfigError(f"bad option: {e} (see `{prog} --help`)") from None
    cfg.validate()
    return cfg


def _tidy_help(parser) -> None:
    """draccus 0.11.6 lists `--<nested>` (a YAML file for a nested group) twice in --help; once, and say what it is."""
    for group in parser._action_groups:
        seen: set[tuple[str, ...]] = set()
        kept = []
        for action in group._group_actions:
            if tuple(action.option_strings) not in seen:
                seen.add(tuple(action.option_strings))
                kept.append(action)
        group._group_actions[:] = kept
    for action in {id(a): a for g in parser._action_groups for a in g._group_actions}.values():
        if action.help and action.help.startswith("Config file for "):
            action.help = f"a YAML file of {action.help[len('Config file for '):]} settings (fields below)"
        elif action.dest == "config_path":
            action.help = "a YAML file of options (e.g. experiments/quickstart.yaml); the command line overrides it"


def config_to_yaml(cfg) -> str:
    buf = io.StringIO()
    draccus.dump(cfg, buf)
    return buf.getvalue()


def save_config(cfg, path: str | Path) -> Path:
    """Write the resolved config as YAML (atomically); loadable again with --config_path."""
    path = Path(path)
    atomic_write_text(path, config_to_yaml(cfg))
    return path


def load_config(config_class: type[T], path: str | Path) -> T:
    """A config saved by `save_config` (e.g. a run's resolved options), validated."""
    data = read_yaml_mapping(path)
    try:
        cfg = draccus.decode(config_class, data)
    except (draccus.utils.DecodingError, draccus.utils.DraccusException) as e:
        raise ConfigError(f"{path}: {e}") from None
    cfg.validate()
    return cfg



@dataclass
class PolicyOptions:
    """Which VLA to build (when training from scratch) or load."""

    # Model family of the from-config VLA: "llava" (SigLIP + Llama), "idefics3" (SmolVLM-style), "paligemma"
    # (SigLIP + Gemma, pi0's backbone), "qwen2_5_vl" (Qwen2.5-VL: windowed ViT + Qwen2) or "vla_rl_openvla"
    # (OpenVLA's DINOv2 + SigLIP + Llama).
    family: str = "llava"
    # Size preset of the from-config VLA: "tiny" (tests) or "small" (CPU default, ~4.7 M parameters).
    preset: str = "small"
    # A pretrained HF image-text-to-text checkpoint (local dir or hub id) to start from instead of a preset; an OpenVLA
    # checkpoint is converted without remote code (docs/policy.md, "OpenVLA checkpoints").
    base_model: str = ""
    # Allow the checkpoint's own Python code (needed by some hub models). Off unless you trust the source.
    trust_remote_code: bool = False
    # OpenVLA checkpoints only: the dataset key of its norm_stats whose q01/q99 un-normalise the action tokens (OpenVLA's
    # predict_action(unnorm_key=...), e.g. bridge_orig). Empty: the demos' own q01/q99, for fine-tuning on a new robot.
    unnorm_key: str = ""
    # Action chunk K: future steps predicted per decision (K x D tokens).
    chunk_size: int = 1
    # Feed proprioception as a projected <state> token.
    use_state: bool = True
    # Text part of the prompt is left-padded to this many tokens (longer instructions are an error).
    max_prompt_tokens: int = 32
    # Weights dtype: float32 (CPU) or bfloat16 (GPU).
    dtype: str = "float32"

    def validate(self) -> None:
        from vla_rl.base.validation import check_choice
        from vla_rl.policy.backbones import vla_family_names

        check_choice("policy.family", self.family, tuple(vla_family_names()))
        check_choice("policy.preset", self.preset, ("tiny", "small"))
        check_choice("policy.dtype", self.dtype, ("float32", "bfloat16", "float16"))
        check_range("policy.chunk_size", self.chunk_size, 1, 64)
        check_range("policy.max_prompt_tokens", self.max_prompt_tokens, 8, 4096)
        if self.unnorm_key and not self.base_model:
            raise ConfigError(f"policy.unnorm_key={self.unnorm_key!r} picks an OpenVLA checkpoint's action statistics; "
                              "give the checkpoint with --policy.base_model DIR, or drop --policy.unnorm_key")


PRETRAIN_EVAL_SEED = 10_000  # BC evaluates on seeds 10000, 10001, ...: those `vla-rl eval` and RL's evaluations use


@dataclass
class PretrainConfig:
    """Behaviour cloning: train a VLA's action tokens on demonstrations (cross-entropy, AdamW, cosine)."""

    # Demo dataset directories (written by `vla-rl collect`), e.g. --demos '[outputs/demos/a,outputs/demos/b]'.
    demos: list[str] = field(default_factory=lambda: ["outputs/demos"])
    # Use only the first N successful episodes of each dataset (0 = all).
    max_episodes: int = 0
    policy: PolicyOptions = field(default_factory=PolicyOptions)
    # Run directory: checkpoints/<step>/, metrics.jsonl, pretrain_config.yaml.
    out: str = "outputs/pretrain"
    # Optimizer steps in total (the cosine schedule spans them).
    steps: int = 3000
    # Samples (decisions) per optimizer step, drawn uniformly from all demo steps.
    batch_size: int = 32
    # Peak learning rate (AdamW; 3e-4 suits the from-scratch presets, ~2e-5 a pretrained VLM as OpenVLA).
    lr: float = 3e-4
    # AdamW decoupled weight decay on matrices (biases and norms excluded); 0.01 as LeRobot's default.
    weight_decay: float = 0.01
    # Linear warm-up steps before the cosine decay; must not exceed `steps`.
    warmup_steps: int = 100
    # Clip the gradient norm to this (0 = off).
    grad_clip: float = 1.0
    # Random-shift augmentation of training images by up to N pixels (DrQ uses 4 at 84 px; 0 = off).
    augment_shift: int = 4
    # Exponential moving average of the trained weights (0 = off): evaluation, validation and the saved policy use the
    # average, training continues on the raw weights. The decay ramps as min(d, (1 + t) / (10 + t)) (TensorFlow's
    # ExponentialMovingAverage with num_updates) so early steps do not anchor it to the initialisation. Diffusion
    # Policy and LeRobot average BC weights (up to 0.9999 over ~100 k steps); ~0.999 suits the 1-3 k steps here.
    # float32 weights only. On drawer-open it changed nothing measurable (docs/learning.md, section 18).
    ema_decay: float = 0.0
    # Evaluate in the demos' env every N steps and at the end (0 = only at the end; -1 = never).
    eval_every: int = 0
    # Episodes per evaluation (fixed seeds 10000, 10001, ...; greedy decoding).
    eval_episodes: int = 20
    # Validation episodes at every evaluation, greedy, on seeds val_seed, val_seed + 1, ... (disjoint from the
    # evaluation seeds, which RL reports its start on): the checkpoint with the best validation success becomes
    # checkpoints/best (ties: the later one) — BC's stopping rule, as robomimic picks by rollout success. 0 = off.
    val_episodes: int = 0
    # First validation seed.
    val_seed: int = 20_000
    # Stop after this many validations in a row without a higher validation success than the best (0 = run all
    # `steps`); checkpoints/best is then the start to use.
    val_patience: int = 0
    # Save a checkpoint every N steps (and always at the end).
    save_every: int = 500
    # Print / log metrics every N steps.
    log_every: int = 25
    # Seed of the model initialisation, batch sampling and augmentation.
    seed: int = 0
    # Continue the run in `out` from checkpoints/last (same options required).
    resume: bool = False
    # Stop after this many steps in this invocation (0 = run to `steps`); resume later with --resume true.
    stop_after: int = 0
    # Torch device: cpu, cuda, cuda:N or mps.
    device: str = "cpu"
    # Replace an earlier pretrain run in `out` (only a pretrain run; anything else there is refused).
    overwrite: bool = False

    def validate(self) -> None:
        self.policy.validate()
        if not self.demos:
            raise ConfigError("demos=[] : give at least one dataset directory")
        for name, lo in (("steps", 1), ("batch_size", 1), ("save_every", 1), ("log_every", 1), ("eval_episodes", 1)):
            check_range(name, getattr(self, name), lo, 10**9)
        check_range("max_episodes", self.max_episodes, 0, 10**9)
        check_range("lr", self.lr, 1e-9, 1.0)
        check_range("weight_decay", self.weight_decay, 0.0, 10.0)
        check_range("warmup_steps", self.warmup_steps, 0, 10**9)
        if self.warmup_steps > self.steps:
            raise ConfigError(f"warmup_steps={self.warmup_steps} exceeds steps={self.steps}: the run would never reach "
                              f"its peak lr — lower --warmup_steps (e.g. {max(self.steps // 10, 0)})")
        check_device("device", self.device)
        check_range("grad_clip", self.grad_clip, 0.0, 1e6)
        check_range("augment_shift", self.augment_shift, 0, 64)
        check_range("ema_decay", self.ema_decay, 0.0, 0.99999)
        if self.ema_decay > 0 and self.policy.dtype != "float32":  # a 1e-3 step is below bf16's resolution
            raise ConfigError(f"ema_decay={self.ema_decay} with policy.dtype={self.policy.dtype!r}: the weight average "
                              "would not move in low precision — set --policy.dtype float32 or --ema_decay 0")
        check_range("eval_every", self.eval_every, -1, 10**9)
        check_range("stop_after", self.stop_after, 0, 10**9)
        self._validate_validation()
        if not self.out:
            raise ConfigError("out='' : give a run directory, e.g. --out outputs/pretrain/touch")

    def _validate_validation(self) -> None:
        check_range("val_episodes", self.val_episodes, 0, 10**6)
        check_range("val_seed", self.val_seed, 0, 2**31 - 1)
        check_range("val_patience", self.val_patience, 0, 10**6)
        if self.val_patience and not self.val_episodes:
            raise ConfigError(f"val_patience={self.val_patience} without validation: set --val_episodes (e.g. 30) "
                              "or --val_patience 0")
        if not self.val_episodes:
            return
        if self.eval_every <= 0:
            raise ConfigError(f"val_episodes={self.val_episodes} with eval_every={self.eval_every}: validation runs at "
                              "the evaluations — set --eval_every N (e.g. steps / 10), or --val_episodes 0")
        if seeds_overlap(self.val_seed, self.val_episodes, PRETRAIN_EVAL_SEED, self.eval_episodes):
            raise ConfigError(f"val_seed={self.val_seed}: validation seeds {self.val_seed}-"
                              f"{self.val_seed + self.val_episodes - 1} overlap the evaluation seeds "
                              f"{PRETRAIN_EVAL_SEED}-{PRETRAIN_EVAL_SEED + self.eval_episodes - 1} — move --val_seed")


@dataclass
class EvalConfig:
    """Run a policy on fixed-seed episodes; write eval.json (success rate + 95 % CI) and videos."""

    # Policy directory (a `pretrained_model` dir, e.g. outputs/pretrain/checkpoints/last/pretrained_model).
    policy: str = ""
    # Environment id; empty = the env of the policy's training demos (or the tasks of --suite / --envs).
    env: str = ""
    # A named suite of tasks, evaluated task by task into a per-task table: metaworld/mt10, metaworld/mt50 (with
    # difficulty groups), libero/<suite> (with the [libero] extra); `vla-rl envs` lists them.
    suite: str = ""
    # Env ids to evaluate one after another (after the suite's, if both are given), e.g. --envs '[metaworld/reach,metaworld/push]'.
    envs: list[str] = field(default_factory=list)
    env_options: EnvOptions = field(default_factory=EnvOptions)
    # Number of episodes (per task with --suite / --envs); the success rate's Wilson 95-percent interval narrows as
    # 1/sqrt(episodes).
    episodes: int = 50
    # Output directory for eval.json and videos/.
    out: str = "outputs/eval"
    # Episode i uses env seed `seed + i`.
    seed: int = 1000
    # Argmax decoding (default); false samples at `temperature`.
    greedy: bool = True
    # Softmax temperature over the 256 bins when sampling (greedy false); 1 = the policy's own distribution.
    temperature: float = 1.0
    # Episodes run at once (batched through one act() call).
    num_envs: int = 8
    # Record mp4s of the first N episodes.
    videos: int = 3
    # Torch device: cpu, cuda, cuda:N or mps.
    device: str = "cpu"
    # Replace an earlier evaluation in `out` (only an evaluation; anything else there is refused).
    overwrite: bool = False

    def validate(self) -> None:
        if not self.policy:
            raise ConfigError("policy='' : give a policy directory, e.g. --policy outputs/pretrain/checkpoints/last/pretrained_model")
        if self.env:
            from envs.registry import get_spec

            try:
                get_spec(self.env)
            except KeyError as e:
                raise ConfigError(f"env: {e.args[0]}") from None
            check_env_or_tasks(self.env, self.suite, self.envs)
        check_tasks(self.suite, self.envs)
        self.env_options.validate()
        check_range("episodes", self.episodes, 1, 10**7)
        check_range("num_envs", self.num_envs, 1, 1024)
        check_range("videos", self.videos, 0, 1000)
        check_range("temperature", self.temperature, 1e-4, 100.0)
        check_range("seed", self.seed, 0, 2**31 - 1)
        check_device("device", self.device)
