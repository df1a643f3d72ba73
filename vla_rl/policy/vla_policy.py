"""VLAPolicy: a Hugging Face image-text-to-text model that emits action tokens.

Prompt layout (fixed length P, left-padded, so a sample's positions never depend on its batch)::

    <pad>...<pad> [image tokens] In: What action should the robot take to {instruction}?\\nOut: [<state>]
    -> a_1 ... a_{K*D}   (each one of the 256 action-bin ids: one bin per action dimension)

`act` decodes the K*D tokens autoregressively with a KV cache; `evaluate` scores given tokens in
one teacher-forced forward. Both use the same fixed-length prompt, positions from the attention
mask, bin-token logits (the other logits masked out), temperature and dtype, so PPO's first
ratio is exactly 1. The value head reads the hidden state of the last prompt token. With LoRA
added, `reference()` disables the adapters: the reference policy costs no memory.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vla_rl.base.errors import VLARLError
from vla_rl.policy.action_tokenizer import ActionTokenizer
from vla_rl.policy.backbones import get_family
from vla_rl.policy.images import normalize_images
from vla_rl.policy.sampling import sample_categorical
from vla_rl.policy.text_tokenizer import STATE_TOKEN
from vla_rl.policy.value_head import ValueHead

OPENVLA_PROMPT = "In: What action should the robot take to {instruction}?\nOut:"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# LoRA targets: the language model's projections (vision tower only when asked).
LM_LORA_TARGETS = r".*(language_model|text_model)\..*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
VISION_LORA_TARGETS = (r".*(vision_tower|vision_model)\..*\.(q_proj|k_proj|v_proj|out_proj|fc1|fc2)"
                       r"|.*visual\.blocks\..*\.(qkv|proj|gate_proj|up_proj|down_proj)")  # Qwen2.5-VL's ViT


class PolicyError(VLARLError):
    """Observations or tokens that do not fit the policy, or a policy directory that cannot load."""


@dataclass
class PolicySpec:
    """What the policy needs besides the weights (saved as policy.json)."""

    action_dim: int
    state_dim: int
    image_size: tuple[int, int]  # (H, W) of the env camera the policy was trained on
    chunk_size: int = 1  # K: future steps predicted per decision
    use_state: bool = True  # append a <state> token carrying the projected proprioception
    max_prompt_tokens: int = 32  # text part of the prompt, left-padded to this length
    prompt_template: str = OPENVLA_PROMPT
    dtype: str = "float32"
    value_hidden: int = 256
    lora: dict[str, Any] = field(default_factory=dict)  # settings of the attached LoRA, {} when none
    train_env: str = ""  # env id of the training demos (the default env of `vla-rl eval`)
    train_env_options: dict[str, Any] = field(default_factory=dict)  # their EnvOptions

    @property
    def n_action_tokens(self) -> int:
        return self.chunk_size * self.action_dim


@dataclass
class ActOutput:
    tokens: torch.Tensor  # (B, K*D) vocabulary ids
    logp: torch.Tensor  # (B, K*D) log-prob of each token under the tempered, bin-masked distribution
    logp_sum: torch.Tensor  # (B,)
    value: torch.Tensor  # (B,)
    actions: np.ndarray  # (B, K, D) float32 bin centres
    bin_prob: torch.Tensor  # (B, K*D) probability of each chosen token (for overlays / logging)


@dataclass
class EvalOutput:
    logp: torch.Tensor  # (B, K*D)
    entropy: torch.Tensor  # (B, K*D) entropy of each token's 256-way distribution
    value: torch.Tensor  # (B,)
    bin_logp: torch.Tensor  # (B, K*D, 256) each token's whole bin distribution (for the exact KL)


class VLAPolicy(nn.Module):
    def __init__(self, model: nn.Module, processor, action_tokenizer: ActionTokenizer, spec: PolicySpec):
        super().__init__()
        self.model = model
        self.processor = processor
        self.action_tokenizer = action_tokenizer
        self.spec = spec
        self.family = get_family(self.base_model.config.model_type)
        n_vocab = self.model.get_output_embeddings().weight.shape[0]
        if action_tokenizer.token_offset + action_tokenizer.n_bins > n_vocab:
            raise PolicyError(f"action tokens {action_tokenizer.token_offset}..{action_tokenizer.token_offset + action_tokenizer.n_bins - 1}"
                              f" exceed the model vocabulary ({n_vocab})")
        off, n_bins = action_tokenizer.token_offset, action_tokenizer.n_bins
        image_id = getattr(self.base_model.config, "image_token_id", None)
        if isinstance(image_id, int) and off <= image_id < off + n_bins:
            raise PolicyError(f"action tokens {off}..{off + n_bins - 1} include the image token id {image_id}: "
                              "transformers finds the image by that id, so an action bin would be taken for image "
                              "features; choose a token_offset whose bins avoid it (policy_from_hf picks one: "
                              "vla_rl.policy.factory.action_token_offset)")
        if action_tokenizer.action_dim != spec.action_dim:
            raise PolicyError(f"action tokenizer has {action_tokenizer.action_dim} dimensions, the spec {spec.action_dim}")
        hidden = self.base_model.config.text_config.hidden_size
        self.value_head = ValueHead(hidden, spec.value_hidden)
        self.state_proj = nn.Linear(spec.state_dim, hidden) if spec.use_state else None
        self.model.to(DTYPES[spec.dtype])
        if self.state_proj is not None:
            self.state_proj.to(DTYPES[spec.dtype])
        self._text_cache: dict[bytes, str] = {}
        self._prompt_cache: dict[str, list[int]] = {}
        # True: the value head trains on detached features, so the value loss cannot move the backbone (or LoRA).
        self.detach_value_features = False
        self.activation_checkpointing = False  # see enable_activation_checkpointing

    def enable_activation_checkpointing(self) -> None:
        """Recompute each transformer layer's activations in the backward of `evaluate` instead of keeping them
        (transformers' activation checkpointing, non-reentrant): memory for the learner's forward over K·D tokens,
        at ~one more forward per step. Same log-probs and gradients. transformers runs it only in a layer whose
        `training` flag is set; the policy stays in eval mode, so `evaluate` sets that flag on the layers alone
        (not on their dropouts or norms) while it runs."""
        self.base_model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        self.activation_checkpointing = True

    @contextmanager
    def _checkpointing_layers(self) -> Iterator[None]:
        from transformers.modeling_layers import GradientCheckpointingLayer

        layers = [m for m in self.model.modules() if isinstance(m, GradientCheckpointingLayer) and not m.training]
        if not (self.activation_checkpointing and torch.is_grad_enabled()):
            layers = []
        for m in layers:
            m.training = True  # the flag alone: submodules keep eval behaviour (no dropout)
        try:
            yield
        finally:
            for m in layers:
                m.training = False

    # --- structure -------------------------------------------------------------------------------
    @property
    def base_model(self) -> nn.Module:
        """The HF model without the PEFT wrapper."""
        return self.model.get_base_model() if self.has_lora else self.model

    @property
    def has_lora(self) -> bool:
        return hasattr(self.model, "disable_adapter")

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def vision_image_size(self) -> int:
        return int(self.base_model.config.vision_config.image_size)

    def add_lora(self, r: int = 16, alpha: int = 32, dropout: float = 0.0, target_modules: str | list[str] | None = None,
                 include_vision: bool = False, init_lora_weights: bool = True) -> None:
        """Wrap the model with LoRA adapters; afterwards only LoRA and the value head train."""
        from peft import LoraConfig, get_peft_model

        if self.has_lora:
            raise PolicyError("this policy already has LoRA adapters")
        if target_modules is None:
            target_modules = LM_LORA_TARGETS if not include_vision else f"({LM_LORA_TARGETS})|({VISION_LORA_TARGETS})"
        config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules,
                            init_lora_weights=init_lora_weights)
        self.model = get_peft_model(self.model, config)
        if not isinstance(self.base_model.get_output_embeddings(), nn.Linear):
            raise PolicyError("LoRA on the LM head is not supported: the bin logits read its weight rows directly")
        if self.state_proj is not None:
            self.state_proj.requires_grad_(False)
        self.spec.lora = {"r": r, "alpha": alpha, "dropout": dropout, "target_modules": target_modules}

    @contextmanager
    def reference(self) -> Iterator[None]:
        """Inside this block the policy is the reference (adapters disabled; no second copy)."""
        with self.model.disable_adapter() if self.has_lora else nullcontext():
            yield

    # --- observation -> model inputs --------------------------------------------------------------
    def _prompt_ids(self, text: str) -> list[int]:
        if text not in self._prompt_cache:
            prompt = self.family.image_placeholder + self.spec.prompt_template.format(instruction=text)
            dummy = np.zeros((self.vision_image_size, self.vision_image_size, 3), np.uint8)
            ids = self.processor(text=[prompt], images=self.family.processor_images(dummy))["input_ids"][0]
            ids = list(ids.tolist() if hasattr(ids, "tolist") else ids)
            if self.spec.use_state:
                ids.append(self.processor.tokenizer.convert_tokens_to_ids(STATE_TOKEN))
            image_id = self.base_model.config.image_token_id
            n_text = sum(i != image_id for i in ids)
            if n_text > self.spec.max_prompt_tokens:
                raise PolicyError(f"instruction {text!r} makes a {n_text}-token prompt; the policy's max_prompt_tokens "
                                  f"is {self.spec.max_prompt_tokens} (raise it when building the policy)")
            self._prompt_cache[text] = ids
        return self._prompt_cache[text]

    def _instruction_text(self, row: np.ndarray) -> str:
        key = row.tobytes()
        if key not in self._text_cache:
            from envs.instruction import decode_instruction

            self._text_cache[key] = decode_instruction(row)
        return self._text_cache[key]

    def check_obs(self, obs: Mapping[str, Any]) -> int:
        for key in ("image", "instruction") + (("state",) if self.spec.use_state else ()):
            if key not in obs:
                raise PolicyError(f"observation batch lacks {key!r} (has {sorted(obs)})")
        image = obs["image"]
        h, w = self.spec.image_size
        if image.ndim != 4 or tuple(image.shape[1:]) != (h, w, 3):
            raise PolicyError(f"obs['image'] has shape {tuple(image.shape)}; this policy takes (B, {h}, {w}, 3) uint8 "
                              f"(trained at {h}x{w}: set env_options.image_size to match)")
        b = image.shape[0]
        if self.spec.use_state and tuple(obs["state"].shape) != (b, self.spec.state_dim):
            raise PolicyError(f"obs['state'] has shape {tuple(obs['state'].shape)}; expected ({b}, {self.spec.state_dim})")
        if obs["instruction"].ndim != 2 or obs["instruction"].shape[0] != b:
            raise PolicyError(f"obs['instruction'] has shape {tuple(obs['instruction'].shape)}; expected ({b}, L)")
        return b

    def prepare(self, obs: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Tensors for the prompt: embeddings (B, P, H), attention mask, positions, pixel kwargs."""
        b = self.check_obs(obs)
        device, dtype = self.device, DTYPES[self.spec.dtype]
        instructions = np.asarray(obs["instruction"])
        prompts = [self._prompt_ids(self._instruction_text(instructions[i])) for i in range(b)]
        n_image = len(prompts[0]) - sum(1 for i in prompts[0] if i != self.base_model.config.image_token_id)
        length = self.spec.max_prompt_tokens + n_image
        pad = self.processor.tokenizer.pad_token_id
        ids = torch.full((b, length), pad, dtype=torch.long)
        mask = torch.zeros((b, length), dtype=torch.long)
        for i, p in enumerate(prompts):
            ids[i, length - len(p):] = torch.tensor(p)
            mask[i, length - len(p):] = 1
        ids, mask = ids.to(device), mask.to(device)
        embeds = self.model.get_input_embeddings()(ids)
        if self.spec.use_state:
            state = torch.as_tensor(np.asarray(obs["state"]), dtype=torch.float32, device=device)
            if not torch.isfinite(state).all():
                raise PolicyError("obs['state'] contains NaN or inf")
            embeds = embeds.clone()
            embeds[:, -1] = self.state_proj(state.to(dtype))
        image = torch.as_tensor(np.asarray(obs["image"]), device=device)
        ip = self.processor.image_processor
        pixels = normalize_images(image, self.vision_image_size, ip.image_mean, ip.image_std, dtype)
        config = self.base_model.config
        pixels = self.family.pixel_kwargs(pixels, config)
        positions = self.family.position_ids((mask.cumsum(-1) - 1).clamp(min=0), ids, pixels, config)
        return {"embeds": embeds, "mask": mask, "positions": positions, "pixels": pixels}

    # --- the two passes ---------------------------------------------------------------------------
    def _forward(self, embeds, mask, positions, pixels=None, past=None, use_cache: bool = False, n_action: int = 0):
        """The transformer without its LM head (LoRA layers inside stay active): last hidden states + cache.

        The last `n_action` input positions are action tokens, the rest prompt: the family marks them where its
        attention differs (PaliGemma: bidirectional within the prompt, causal over the actions)."""
        marks = self.family.sequence_kwargs(embeds.shape[0], embeds.shape[1], n_action, embeds.device)
        return self.base_model.model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions,
                                     past_key_values=past, use_cache=use_cache, **(pixels or {}), **marks)

    def _bin_logp(self, hidden: torch.Tensor, temperature: float) -> torch.Tensor:
        """log-softmax over the 256 action-bin tokens only: the LM head's bin rows on hidden states (..., H).

        Only those rows are computed (the rest of the vocabulary is masked out anyway), on a 2-D
        contiguous copy: `matmul` on a strided 3-D slice picks mm or bmm depending on whether the
        head's weight requires grad, which changed log-probs by ~5e-7 between a trainable and a
        frozen copy of the same weights on some CPUs.
        """
        if temperature <= 0:
            raise PolicyError(f"temperature={temperature} must be > 0 (use greedy=True for argmax)")
        off, n = self.action_tokenizer.token_offset, self.action_tokenizer.n_bins
        head = self.base_model.get_output_embeddings()
        bias = None if head.bias is None else head.bias[off:off + n]
        flat = hidden.reshape(-1, hidden.shape[-1]).contiguous()
        logits = F.linear(flat, head.weight[off:off + n], bias).view(*hidden.shape[:-1], n)
        return F.log_softmax(logits.float() / temperature, dim=-1)

    @torch.no_grad()
    def act(self, obs: Mapping[str, Any], temperature: float = 1.0, greedy: bool = False,
            generator: torch.Generator | None = None) -> ActOutput:
        """Decode K*D action tokens for a batch of observations (KV-cached)."""
        x = self.prepare(obs)
        out = self._forward(x["embeds"], x["mask"], x["positions"], x["pixels"], use_cache=True)
        value = self.value_head(out.last_hidden_state[:, -1])
        mask, position = x["mask"], x["positions"][..., -1:]  # positions: (B, P), or (3, B, P) for M-RoPE
        embed = self.model.get_input_embeddings()
        tokens, logps, probs = [], [], []
        n = self.spec.n_action_tokens
        for i in range(n):
            logp_all = self._bin_logp(out.last_hidden_state[:, -1], temperature)
            if greedy:
                b = logp_all.argmax(-1)
            else:
                b = sample_categorical(logp_all, generator)  # CPU uniforms: the same stream on any device
            chosen = logp_all.gather(-1, b[:, None]).squeeze(-1)
            tokens.append(b + self.action_tokenizer.token_offset)
            logps.append(chosen)
            probs.append(chosen.exp())
            if i == n - 1:
                break
            mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
            position = position + 1
            out = self._forward(embed(tokens[-1][:, None]), mask, position, past=out.past_key_values, use_cache=True,
                                n_action=1)
        tokens_t, logp = torch.stack(tokens, 1), torch.stack(logps, 1)
        chunks = tokens_t.cpu().numpy().reshape(-1, self.spec.chunk_size, self.spec.action_dim)
        actions = self.action_tokenizer.decode(chunks)
        return ActOutput(tokens_t, logp, logp.sum(-1), value, actions, torch.stack(probs, 1))

    def evaluate(self, obs: Mapping[str, Any], tokens: torch.Tensor, temperature: float = 1.0) -> EvalOutput:
        """Teacher-forced log-probs, entropies and values of given action tokens (differentiable)."""
        n = self.spec.n_action_tokens
        tokens = torch.as_tensor(tokens, device=self.device)
        off, nb = self.action_tokenizer.token_offset, self.action_tokenizer.n_bins
        if tokens.ndim != 2 or tokens.shape[1] != n:
            raise PolicyError(f"tokens have shape {tuple(tokens.shape)}; expected (B, {n}) = K*D action tokens")
        if tokens.numel() and (tokens.min() < off or tokens.max() >= off + nb):
            raise PolicyError(f"tokens must be action-bin ids in [{off}, {off + nb})")
        x = self.prepare(obs)
        follow = tokens[:, :-1]
        embeds = torch.cat([x["embeds"], self.model.get_input_embeddings()(follow)], dim=1)
        mask = torch.cat([x["mask"], x["mask"].new_ones(follow.shape)], dim=1)
        steps = torch.arange(1, follow.shape[1] + 1, device=self.device)
        positions = torch.cat([x["positions"], x["positions"][..., -1:] + steps], dim=-1)
        with self._checkpointing_layers():
            out = self._forward(embeds, mask, positions, x["pixels"], n_action=follow.shape[1])
        logp_all = self._bin_logp(out.last_hidden_state[:, -n:], temperature)
        logp = logp_all.gather(-1, (tokens - off)[..., None]).squeeze(-1)
        entropy = -(logp_all.exp() * logp_all).sum(-1)
        prompt_len = x["embeds"].shape[1]
        features = out.last_hidden_state[:, prompt_len - 1]
        value = self.value_head(features.detach() if self.detach_value_features else features)
        return EvalOutput(logp, entropy, value, logp_all)

    def value(self, obs: Mapping[str, Any]) -> torch.Tensor:
        """V(obs) from the prompt alone (one forward, no action tokens): what GAE needs."""
        x = self.prepare(obs)
        out = self._forward(x["embeds"], x["mask"], x["positions"], x["pixels"])
        return self.value_head(out.last_hidden_state[:, -1])

    def tokens_for(self, actions: np.ndarray) -> torch.Tensor:
        """Continuous action chunks `(B, K, D)` -> the (B, K*D) token ids the policy would emit."""
        actions = np.asarray(actions)
        want = (self.spec.chunk_size, self.spec.action_dim)
        if actions.ndim != 3 or actions.shape[1:] != want:
            raise PolicyError(f"actions have shape {actions.shape}; expected (B, {want[0]}, {want[1]})")
        return torch.as_tensor(self.action_tokenizer.encode(actions).reshape(actions.shape[0], -1), device=self.device)

    def spec_dict(self) -> dict[str, Any]:
        d = asdict(self.spec)
        d["image_size"] = list(self.spec.image_size)
        return d

    # --- persistence (vla_rl.policy.policy_io) -------------------------------------------------
    def save_pretrained(self, path, shared_base=None) -> None:
        """Save to `path`; with `shared_base` (a `policy_io.save_shared_base` directory) reference it, not copy it."""
        from vla_rl.policy.policy_io import save_policy

        save_policy(self, path, shared_base=shared_base)

    @classmethod
    def from_pretrained(cls, path, trainable: bool = False, device: str | torch.device = "cpu") -> VLAPolicy:
        from vla_rl.policy.policy_io import load_policy

        return load_policy(path, trainable=trainable, device=device)
