"""A tiny OpenVLA checkpoint directory written from random tensors in OpenVLA's own layout (no download), and a
reference of its vision towers written from timm's ViT semantics on those tensors (a plain module: test helpers).

The layout is what openvla/openvla-7b holds, shrunk: config.json (model_type "openvla", the dinosiglip-224px timm ids,
a Llama `text_config`, `norm_stats`, `n_action_bins`, `pad_to_multiple_of`), preprocessor_config.json (OpenVLA's
PrismaticImageProcessor fields), a Llama tokenizer with `<PAD>` added, and model.safetensors keyed
`vision_backbone.featurizer.*` / `vision_backbone.fused_featurizer.*` (timm ViTs, LayerScale renamed `scale_factor`),
`projector.fc{1,2,3}.*`, `language_model.model.*`, `language_model.lm_head.weight`. Sizes: DINOv2 32 wide x 3 blocks
(16 heads, as timm's ViT-L/14 has, 4 registers), SigLIP 48 x 3 (16 heads), patch 8 on 32 px images (16 patches), Llama
64 x 2, a 512-token BPE vocabulary (+ `<PAD>`, embeddings padded to 576 rows)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F

DINO, SIGLIP = "vision_backbone.featurizer.", "vision_backbone.fused_featurizer."
HEADS, PATCH, IMAGE, REGISTERS = 16, 8, 32, 4
DINO_WIDTH, SIGLIP_WIDTH, SIGLIP_MLP, DEPTH = 32, 48, 96, 3
BASE_VOCAB, PAD_TO = 512, 64
TEXT = dict(model_type="llama", vocab_size=BASE_VOCAB + PAD_TO, hidden_size=64, intermediate_size=128,
            num_hidden_layers=2, num_attention_heads=4, pad_token_id=BASE_VOCAB, torch_dtype="float32")
NORM_STATS = {  # two datasets, as openvla-7b's config holds many; the gripper (last dim) is unmasked
    "bridge_orig": {"action": {"q01": [-0.03, -0.02, 0.0], "q99": [0.03, 0.04, 1.0], "mask": [True, True, False]},
                    "num_transitions": 10},
    "toy": {"action": {"q01": [-1.0, 0.0], "q99": [1.0, 2.0], "mask": [True, True]}},
}
MEANS = [[0.484375, 0.455078125, 0.40625], [0.5, 0.5, 0.5]]  # openvla-7b's saved (bf16-rounded) DINOv2 mean
STDS = [[0.228515625, 0.2236328125, 0.224609375], [0.5, 0.5, 0.5]]


def llama_tokenizer():
    """A Llama tokenizer (BPE over Metaspace "▁" pieces, BOS added) trained on the project's prompts, padded to
    BASE_VOCAB entries, with OpenVLA's `<PAD>` added after them."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaTokenizer

    from vla_rl.policy.text_tokenizer import default_corpus
    from vla_rl.policy.vla_policy import OPENVLA_PROMPT

    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    bpe.train_from_iterator(default_corpus(OPENVLA_PROMPT), trainers.BpeTrainer(
        vocab_size=BASE_VOCAB, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False))
    model = json.loads(bpe.to_str())["model"]
    vocab = dict(model["vocab"])
    vocab.update({f"<extra_{i}>": i for i in range(len(vocab), BASE_VOCAB)})
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    tok = LlamaTokenizer(vocab=vocab, merges=merges, add_bos_token=True)
    tok.add_special_tokens({"pad_token": "<PAD>"})
    return tok


def _vit(prefix: str, width: int, mlp: int, dino: bool, g: torch.Generator) -> dict[str, torch.Tensor]:
    def r(*shape, scale=0.2):
        return torch.randn(*shape, generator=g) * scale

    t = {prefix + "patch_embed.proj.weight": r(width, 3, PATCH, PATCH, scale=0.1), prefix + "patch_embed.proj.bias":
         r(width), prefix + "pos_embed": r(1, (IMAGE // PATCH) ** 2, width)}
    if dino:
        t.update({prefix + "cls_token": r(1, 1, width), prefix + "reg_token": r(1, REGISTERS, width)})
    norms = ["norm1", "norm2"]
    for i in range(DEPTH):
        b = f"{prefix}blocks.{i}."
        for n in norms:
            t.update({f"{b}{n}.weight": 1 + r(width), f"{b}{n}.bias": r(width)})
        t.update({b + "attn.qkv.weight": r(3 * width, width), b + "attn.qkv.bias": r(3 * width),
                  b + "attn.proj.weight": r(width, width), b + "attn.proj.bias": r(width),
                  b + "mlp.fc1.weight": r(mlp, width), b + "mlp.fc1.bias": r(mlp),
                  b + "mlp.fc2.weight": r(width, mlp), b + "mlp.fc2.bias": r(width)})
        if dino:
            t.update({b + "ls1.scale_factor": 1 + r(width), b + "ls2.scale_factor": 1 + r(width)})
    t.update({prefix + "norm.weight": 1 + r(width), prefix + "norm.bias": r(width)})
    if not dino:  # SigLIP's attention-pooling head (timm AttentionPoolLatent): in the checkpoint, unused by OpenVLA
        p = prefix + "attn_pool."
        t.update({p + "latent": r(1, 1, width), p + "q.weight": r(width, width), p + "q.bias": r(width),
                  p + "kv.weight": r(2 * width, width), p + "kv.bias": r(2 * width), p + "proj.weight": r(width, width),
                  p + "proj.bias": r(width), p + "norm.weight": 1 + r(width), p + "norm.bias": r(width),
                  p + "mlp.fc1.weight": r(mlp, width), p + "mlp.fc1.bias": r(mlp), p + "mlp.fc2.weight": r(width, mlp),
                  p + "mlp.fc2.bias": r(width)})
    return t


def openvla_tensors(seed: int = 0) -> dict[str, torch.Tensor]:
    """Every tensor of the tiny checkpoint, under OpenVLA's names."""
    from transformers import LlamaConfig, LlamaForCausalLM

    g = torch.Generator().manual_seed(seed)
    t = {**_vit(DINO, DINO_WIDTH, 4 * DINO_WIDTH, True, g), **_vit(SIGLIP, SIGLIP_WIDTH, SIGLIP_MLP, False, g)}
    vision, text = DINO_WIDTH + SIGLIP_WIDTH, TEXT["hidden_size"]
    for j, (out, inp) in enumerate([(4 * vision, vision), (text, 4 * vision), (text, text)], start=1):
        t[f"projector.fc{j}.weight"] = torch.randn(out, inp, generator=g) / inp ** 0.5
        t[f"projector.fc{j}.bias"] = torch.randn(out, generator=g) * 0.1
    torch.manual_seed(seed)
    llama = LlamaForCausalLM(LlamaConfig(**{k: v for k, v in TEXT.items() if k not in ("model_type", "torch_dtype")}))
    for k, v in llama.state_dict().items():
        t[f"language_model.{k}"] = v + torch.randn(v.shape, generator=g) * 0.05  # norms off 1, lm_head untied
    return t


def openvla_config() -> dict:
    return {"model_type": "openvla", "architectures": ["OpenVLAForActionPrediction"],
            "auto_map": {"AutoConfig": "configuration_prismatic.OpenVLAConfig",
                         "AutoModelForVision2Seq": "modeling_prismatic.OpenVLAForActionPrediction"},
            "vision_backbone_id": "dinosiglip-vit-so-224px", "llm_backbone_id": "llama2-7b-pure",
            "arch_specifier": "no-align+fused-gelu-mlp", "use_fused_vision_backbone": True,
            "image_resize_strategy": "resize-naive", "text_config": dict(TEXT), "llm_max_length": 2048,
            "pad_token_id": BASE_VOCAB, "pad_to_multiple_of": PAD_TO, "output_projector_states": False,
            "timm_model_ids": ["vit_large_patch14_reg4_dinov2.lvd142m", "vit_so400m_patch14_siglip_224"],
            "timm_override_act_layers": [None, None], "image_sizes": [IMAGE, IMAGE],
            "hf_llm_id": "meta-llama/Llama-2-7b-hf", "norm_stats": NORM_STATS, "n_action_bins": 256,
            "torch_dtype": "float32", "transformers_version": "4.40.1"}


def preprocessor_config() -> dict:
    return {"auto_map": {"AutoImageProcessor": "processing_prismatic.PrismaticImageProcessor",
                         "AutoProcessor": "processing_prismatic.PrismaticProcessor"},
            "image_processor_type": "PrismaticImageProcessor", "processor_class": "PrismaticProcessor",
            "use_fused_vision_backbone": True, "image_resize_strategy": "resize-naive",
            "input_sizes": [[3, IMAGE, IMAGE]] * 2, "interpolations": ["bicubic", "bicubic"],
            "means": [[0.485, 0.456, 0.406], [0.5, 0.5, 0.5]], "stds": [[0.229, 0.224, 0.225], [0.5, 0.5, 0.5]],
            "tvf_normalize_params": [{"mean": m, "std": s, "inplace": False} for m, s in zip(MEANS, STDS)],
            "tvf_do_letterbox": False, "tvf_letterbox_fill": None}


def write_checkpoint(path: Path, tensors: dict[str, torch.Tensor] | None = None, seed: int = 0) -> Path:
    from safetensors.torch import save_file

    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps(openvla_config(), indent=2))
    (path / "preprocessor_config.json").write_text(json.dumps(preprocessor_config(), indent=2))
    llama_tokenizer().save_pretrained(path)
    save_file(openvla_tensors(seed) if tensors is None else tensors, str(path / "model.safetensors"),
              metadata={"format": "pt"})
    return path


def timm_vit_features(t: dict[str, torch.Tensor], prefix: str, pixels: torch.Tensor, dino: bool) -> torch.Tensor:
    """timm's `VisionTransformer.get_intermediate_layers(x, n={depth - 2})[0]` written out on OpenVLA's tensors:
    patch conv, position table (DINOv2: class-free — added before CLS and registers are prepended), pre-norm blocks
    (fused qkv, LayerScale on DINOv2), stopped after the second-to-last block, no final norm, prefix tokens dropped."""
    w = t[prefix + "patch_embed.proj.weight"]
    width = w.shape[0]
    x = F.conv2d(pixels, w, t[prefix + "patch_embed.proj.bias"], stride=w.shape[-1]).flatten(2).transpose(1, 2)
    x = x + t[prefix + "pos_embed"]
    if dino:
        b = x.shape[0]
        x = torch.cat([t[prefix + "cls_token"].expand(b, -1, -1), t[prefix + "reg_token"].expand(b, -1, -1), x], 1)
    for i in range(DEPTH - 1):
        p = f"{prefix}blocks.{i}."
        h = F.layer_norm(x, (width,), t[p + "norm1.weight"], t[p + "norm1.bias"], eps=1e-6)
        qkv = F.linear(h, t[p + "attn.qkv.weight"], t[p + "attn.qkv.bias"])
        q, k, v = qkv.reshape(*x.shape[:2], 3, HEADS, width // HEADS).permute(2, 0, 3, 1, 4)
        attn = torch.softmax(q @ k.transpose(-2, -1) * (width // HEADS) ** -0.5, dim=-1) @ v
        a = F.linear(attn.transpose(1, 2).reshape(x.shape), t[p + "attn.proj.weight"], t[p + "attn.proj.bias"])
        x = x + (a * t[p + "ls1.scale_factor"] if dino else a)
        h = F.layer_norm(x, (width,), t[p + "norm2.weight"], t[p + "norm2.bias"], eps=1e-6)
        m = F.linear(F.gelu(F.linear(h, t[p + "mlp.fc1.weight"], t[p + "mlp.fc1.bias"])), t[p + "mlp.fc2.weight"],
                     t[p + "mlp.fc2.bias"])
        x = x + (m * t[p + "ls2.scale_factor"] if dino else m)
    return x[:, 1 + REGISTERS:] if dino else x


def projector(t: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """OpenVLA's fused projector on its tensors: fc1 -> GELU -> fc2 -> GELU -> fc3."""
    for j in (1, 2):
        x = F.gelu(F.linear(x, t[f"projector.fc{j}.weight"], t[f"projector.fc{j}.bias"]))
    return F.linear(x, t["projector.fc3.weight"], t["projector.fc3.bias"])
