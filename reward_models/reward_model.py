"""Bradley–Terry reward models: an ensemble of K image CNNs with instruction conditioning.

Each member is RL-VLM-F's image network (4 conv layers, kernels 5/3/3/3, channels 16/32/64/128,
strides 3/2/2/2, then linear -> 1), with the instruction's byte ids embedded and averaged and added
before the head (so one model can serve several tasks).

The output is linear by default. RL-VLM-F ends in tanh, which bounds a single frame's reward to
[-1, 1] and so P[a ≻ b] to [0.12, 0.88]: the loss then drives every clearly-ordered frame to ±1
and the ranking among saturated frames is lost (measured on drawer-open, 2000 oracle pairs:
held-out accuracy 0.91 with tanh, 0.96 linear; docs/bench_reward.json). `output="tanh"` keeps
RL-VLM-F's head.

`reward(obs)` returns the ensemble mean (minus `std_coef` × std when asked), normalised with
statistics computed on the training frames and saved with the model — frozen between reward-model
updates, as the RL loop needs.

Saved as DIR/reward_model.json (format "vla-rl-reward-model", version 1: config, normalisation,
sha256 of the weights) + DIR/weights.safetensors.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vla_rl.base.atomic_io import atomic_write_json, replace_dir
from vla_rl.base.errors import VLARLError
from vla_rl.base.formats import read_checked_bytes, read_versioned_json

FORMAT = "vla-rl-reward-model"
VERSION = 1
INSTRUCTION_VOCAB = 257  # envs.instruction: UTF-8 bytes + 1, 0 = padding


class RewardModelError(VLARLError):
    """Bad observations or a reward-model directory that cannot load; names the file and field."""


def _output_layer(cfg: RewardModelConfig) -> nn.Module:
    if cfg.output not in ("linear", "tanh"):
        raise RewardModelError(f"output={cfg.output!r}; choose 'linear' or 'tanh'")
    return nn.Tanh() if cfg.output == "tanh" else nn.Identity()


def _policy_digest(policy_dir: str) -> str | None:
    index = Path(policy_dir) / "policy.json"
    return hashlib.sha256(index.read_bytes()).hexdigest() if policy_dir and index.is_file() else None


def _check_config_types(cfg: RewardModelConfig) -> None:
    for name in ("ensemble_size", "embed_dim", "seed"):
        value = getattr(cfg, name)
        if not isinstance(value, int) or isinstance(value, bool) or (name != "seed" and value < 1):
            raise TypeError(f"'{name}'={value!r} must be a positive int")
    if not (len(cfg.image_shape) == 3 and all(isinstance(x, int) and x > 0 for x in cfg.image_shape)):
        raise TypeError(f"'image_shape'={list(cfg.image_shape)!r} must be [height, width, 3]")
    if not isinstance(cfg.instruction_conditioning, bool):
        raise TypeError(f"'instruction_conditioning'={cfg.instruction_conditioning!r} must be true or false")


@dataclass
class RewardModelConfig:
    image_shape: tuple[int, int, int] = (64, 64, 3)
    ensemble_size: int = 3
    instruction_conditioning: bool = True
    embed_dim: int = 128
    seed: int = 0
    # "cnn": RL-VLM-F's CNN per member; "vla": the frozen vision tower of the policy at `vla_policy`
    # (mean-pooled patch features) shared by all members, each member a small head on top.
    encoder: str = "cnn"
    vla_policy: str = ""
    # "linear" (default) or "tanh" (RL-VLM-F's bounded head; see the module docstring).
    output: str = "linear"


class RewardCNN(nn.Module):
    def __init__(self, cfg: RewardModelConfig):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(3, 16, 5, stride=3), nn.LeakyReLU(),
            nn.Conv2d(16, 32, 3, stride=2), nn.LeakyReLU(),
            nn.Conv2d(32, 64, 3, stride=2), nn.LeakyReLU(),
            nn.Conv2d(64, 128, 3, stride=2), nn.LeakyReLU(),
            nn.Flatten(),
        )
        h, w, _ = cfg.image_shape
        if min(h, w) < 45:
            raise RewardModelError(f"image_shape={tuple(cfg.image_shape)}: the RL-VLM-F CNN needs images of at least 45 px")
        with torch.no_grad():
            n = self.conv(torch.zeros(1, 3, h, w)).shape[1]
        self.proj = nn.Linear(n, cfg.embed_dim)
        self.instruction = nn.EmbeddingBag(INSTRUCTION_VOCAB, cfg.embed_dim, mode="mean", padding_idx=0) \
            if cfg.instruction_conditioning else None
        self.head = nn.Sequential(nn.LeakyReLU(), nn.Linear(cfg.embed_dim, 1), _output_layer(cfg))

    def forward(self, images: torch.Tensor, instruction: torch.Tensor | None) -> torch.Tensor:
        x = self.proj(self.conv(images))
        if self.instruction is not None and instruction is not None:
            x = x + self.instruction(instruction)
        return self.head(x).squeeze(-1)


class RewardHead(nn.Module):
    """A member on top of shared frozen features: linear -> (+ instruction) -> linear -> tanh."""

    def __init__(self, in_dim: int, cfg: RewardModelConfig):
        super().__init__()
        self.proj = nn.Linear(in_dim, cfg.embed_dim)
        self.instruction = nn.EmbeddingBag(INSTRUCTION_VOCAB, cfg.embed_dim, mode="mean", padding_idx=0) \
            if cfg.instruction_conditioning else None
        self.head = nn.Sequential(nn.LeakyReLU(), nn.Linear(cfg.embed_dim, 1), _output_layer(cfg))

    def forward(self, features: torch.Tensor, instruction: torch.Tensor | None) -> torch.Tensor:
        x = self.proj(features)
        if self.instruction is not None and instruction is not None:
            x = x + self.instruction(instruction)
        return self.head(x).squeeze(-1)


class FrozenVisionTower:
    """The vision tower of a saved VLA policy, frozen: images -> mean-pooled patch features.

    Deliberately not an nn.Module attribute of the ensemble, so its weights are neither trained nor
    saved with the reward model (the reward model records the policy path and its checksum).
    """

    def __init__(self, policy_dir: str):
        from vla_rl.policy import VLAPolicy

        policy = VLAPolicy.from_pretrained(policy_dir)
        self.family, self.config = policy.family, policy.base_model.config
        self.tower = self.family.vision_module(policy.base_model.model).eval().requires_grad_(False)  # only the tower
        self.size = policy.vision_image_size
        ip = policy.processor.image_processor
        self.mean, self.std = ip.image_mean, ip.image_std
        self.dim = self.family.vision_feature_dim(self.config)

    @torch.no_grad()
    def __call__(self, images01: torch.Tensor) -> torch.Tensor:
        from vla_rl.policy.images import normalize_unit_images

        x = normalize_unit_images(images01, self.size, self.mean, self.std, next(self.tower.parameters()).dtype)
        return self.family.vision_features(self.tower, x, self.config).float()


class RewardEnsemble(nn.Module):
    def __init__(self, cfg: RewardModelConfig):
        super().__init__()
        self.cfg = cfg
        torch.manual_seed(cfg.seed)
        if cfg.encoder == "vla":
            if not cfg.vla_policy:
                raise RewardModelError("encoder='vla' needs vla_policy (a saved policy directory)")
            self._tower = FrozenVisionTower(cfg.vla_policy)
            torch.manual_seed(cfg.seed)
            self.members = nn.ModuleList([RewardHead(self._tower.dim, cfg) for _ in range(cfg.ensemble_size)])
        elif cfg.encoder == "cnn":
            self._tower = None
            self.members = nn.ModuleList([RewardCNN(cfg) for _ in range(cfg.ensemble_size)])
        else:
            raise RewardModelError(f"encoder={cfg.encoder!r}; choose 'cnn' or 'vla'")
        self.register_buffer("norm_mean", torch.zeros(()))
        self.register_buffer("norm_std", torch.ones(()))

    # --- inputs -------------------------------------------------------------------------------
    def _images(self, images) -> torch.Tensor:
        x = torch.as_tensor(np.asarray(images))
        want = tuple(self.cfg.image_shape)
        if x.dtype != torch.uint8 or x.ndim != 4 or tuple(x.shape[1:]) != want:
            raise RewardModelError(f"images are {x.dtype} {tuple(x.shape)}; this reward model takes uint8 (N, {want[0]}, "
                                   f"{want[1]}, {want[2]})")
        return x.permute(0, 3, 1, 2).float().div(255.0).to(self.norm_mean.device)

    def _instruction(self, instruction, n: int) -> torch.Tensor | None:
        if instruction is None:
            if self.cfg.instruction_conditioning:
                raise RewardModelError("this reward model is instruction-conditioned: pass obs['instruction']")
            return None
        ids = torch.as_tensor(np.asarray(instruction), dtype=torch.long, device=self.norm_mean.device)
        if ids.ndim == 1:
            ids = ids[None].expand(n, -1)
        if ids.shape[0] != n:
            raise RewardModelError(f"instruction has {ids.shape[0]} rows for {n} images")
        return ids

    # --- outputs ------------------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Member input: the images themselves (CNN) or the frozen tower's features (computed once)."""
        return x if self._tower is None else self._tower(x)

    def member_rewards(self, images, instruction=None) -> torch.Tensor:
        """(K, N) raw rewards (in [-1, 1] with output='tanh'; differentiable)."""
        x = self._images(images)
        ids = self._instruction(instruction, x.shape[0])
        features = self.encode(x)
        return torch.stack([m(features, ids) for m in self.members])

    @torch.no_grad()
    def reward(self, obs: Mapping[str, Any], std_coef: float = 0.0, batch_size: int = 256) -> np.ndarray:
        """Normalised per-frame reward (N,) for obs {'image': (N,h,w,3) uint8, 'instruction': (N, L)}."""
        images, instr = np.asarray(obs["image"]), obs.get("instruction")
        out = []
        for i in range(0, len(images), batch_size):
            part = None if instr is None else np.asarray(instr)[i:i + batch_size]
            r = self.member_rewards(images[i:i + batch_size], part)
            out.append((r.mean(0) - std_coef * r.std(0, unbiased=False) - self.norm_mean) / self.norm_std)
        return torch.cat(out).cpu().numpy() if out else np.zeros(0, np.float32)

    @torch.no_grad()
    def set_normalization(self, images, instruction) -> None:
        r = self.member_rewards(images, instruction).mean(0)
        self.norm_mean.fill_(float(r.mean()))
        self.norm_std.fill_(max(float(r.std(unbiased=False)), 1e-6))

    # --- persistence --------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        from safetensors.torch import save_file

        from vla_rl.base.outputs import REWARD_MODEL, check_replaceable

        path = Path(path)
        check_replaceable(path, REWARD_MODEL)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".{path.name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        save_file({k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}, str(tmp / "weights.safetensors"))
        digest = hashlib.sha256((tmp / "weights.safetensors").read_bytes()).hexdigest()
        cfg = asdict(self.cfg)
        cfg["image_shape"] = list(self.cfg.image_shape)
        if self.cfg.encoder == "vla":
            cfg["vla_policy_sha256"] = _policy_digest(self.cfg.vla_policy)
        atomic_write_json(tmp / "reward_model.json", {"format": FORMAT, "version": VERSION, "config": cfg,
                                                      "normalization": {"mean": float(self.norm_mean), "std": float(self.norm_std)},
                                                      "weights_sha256": digest})
        replace_dir(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> RewardEnsemble:
        from safetensors.torch import load

        path = Path(path)
        index_path, weights = path / "reward_model.json", path / "weights.safetensors"
        index = read_versioned_json(index_path, FORMAT, VERSION, RewardModelError, f"is {path} a vla-rl reward model?",
                                    {"config": dict})
        try:
            cfg_d = dict(index["config"])
            cfg_d["image_shape"] = tuple(cfg_d["image_shape"])
            cfg_d.setdefault("output", "tanh")  # files written before the field existed had RL-VLM-F's tanh
            digest = cfg_d.pop("vla_policy_sha256", None)
            if cfg_d.get("encoder") == "vla" and digest != _policy_digest(cfg_d.get("vla_policy", "")):
                raise RewardModelError(f"{index_path}: field 'config.vla_policy' = {cfg_d.get('vla_policy')!r} is missing or "
                                       "changed since the reward model was trained (its policy.json checksum differs)")
            cfg = RewardModelConfig(**cfg_d)
            _check_config_types(cfg)
        except (KeyError, TypeError) as e:
            raise RewardModelError(f"{index_path}: field 'config' is invalid ({e})") from e
        data = read_checked_bytes(weights, index.get("weights_sha256"), RewardModelError, str(index_path))
        try:
            model = cls(cfg)
            tensors = load(data)
        except RewardModelError as e:
            raise RewardModelError(f"{index_path}: {e}") from None
        except Exception as e:  # noqa: BLE001 - safetensors raises its own types on a malformed header
            raise RewardModelError(f"{weights}: cannot be read as safetensors ({e})") from None
        own = model.state_dict()
        missing, extra = sorted(set(own) - set(tensors)), sorted(set(tensors) - set(own))
        shapes = [k for k in own.keys() & tensors.keys() if own[k].shape != tensors[k].shape]
        if missing or extra or shapes:
            raise RewardModelError(
                f"{weights}: tensors do not match the config in {index_path} (ensemble_size={cfg.ensemble_size}, "
                f"encoder={cfg.encoder!r}): missing {missing[:2]}, unexpected {extra[:2]}, wrong shape {shapes[:2]} — "
                "the two files do not belong together; train the reward model again")
        model.load_state_dict({k: v.clone() for k, v in tensors.items()})
        return model.eval()
