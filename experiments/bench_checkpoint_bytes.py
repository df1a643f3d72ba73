"""Bytes per RL checkpoint with the shared-base layout (issue 25): measured on a run directory, projected for a
7B VLA. JSON on stdout.

Measured: a `vla-rl train` run's checkpoints/ — the shared base once (checkpoints/base_model) and each step's
directory (adapters, heads, RLlib's state: LoRA + value head and both AdamW optimizers). Projected: an OpenVLA-sized
Llama-2-7B language model (transformers' LlamaConfig defaults: hidden 4096, 32 layers, 11008 MLP, vocabulary 32000)
built on the meta device (no memory, no download) with the run's LoRA (`--lora_r`, q/v projections by default),
counted in bytes: the base in bf16 once; per checkpoint the LoRA tensors in fp32 twice (the policy's adapter and
RLlib's module state) plus AdamW's two moments, and the value head. The vision tower (~0.7 B parameters for
OpenVLA's DINOv2 + SigLIP) is added to the base as an estimate.

    python experiments/bench_checkpoint_bytes.py --run outputs/train/quickstart --iterations 50 --save_every 5
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

VISION_PARAMS = 0.73e9  # OpenVLA's fused DINOv2-L + SigLIP-So400m featurizers (published model card), an estimate


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def measured(run: Path) -> dict:
    ckpts = run / "checkpoints"
    steps = sorted(p for p in ckpts.iterdir() if p.name.isdigit())
    base = ckpts / "base_model"
    return {"run": str(run), "shared_base_bytes": dir_bytes(base) if base.is_dir() else 0,
            "checkpoint_bytes": {p.name: dir_bytes(p) for p in steps}}


def projected_7b(lora_r: int, targets: tuple[str, ...]) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    with torch.device("meta"):
        model = LlamaForCausalLM(LlamaConfig())
    base_params = sum(p.numel() for p in model.parameters())
    lora = get_peft_model(model, LoraConfig(r=lora_r, lora_alpha=2 * lora_r, target_modules=list(targets)))
    lora_params = sum(p.numel() for n, p in lora.named_parameters() if "lora_" in n)
    value_head = 4096 * 256 + 256 + 256 + 1  # ValueHead(hidden 4096 -> 256 -> 1)
    trainable = lora_params + value_head
    per_ckpt = trainable * 4 * (2 + 2)  # fp32: adapter + RLlib module state, and AdamW's two moments
    base_bytes = int((base_params + VISION_PARAMS) * 2)  # bf16
    return {"base_params": base_params, "vision_params_estimate": VISION_PARAMS, "lora_r": lora_r,
            "lora_targets": list(targets), "trainable_params": trainable, "base_bytes_once": base_bytes,
            "checkpoint_bytes": per_ckpt, "old_layout_checkpoint_bytes": per_ckpt + base_bytes}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, default=None, help="a vla-rl train run directory to measure (optional)")
    ap.add_argument("--lora_r", type=int, default=16, help="LoRA rank of the projection (the train default)")
    ap.add_argument("--targets", nargs="+", default=["q_proj", "v_proj"], help="LoRA target modules of the projection")
    ap.add_argument("--iterations", type=int, default=50, help="run length for the per-run projection")
    ap.add_argument("--save_every", type=int, default=5, help="checkpoint interval for the per-run projection")
    args = ap.parse_args(argv)
    out: dict = {"benchmark": "checkpoint_bytes"}
    if args.run is not None:
        out["measured"] = measured(args.run)
    p = projected_7b(args.lora_r, tuple(args.targets))
    n = args.iterations // args.save_every
    p.update({"checkpoints_per_run": n, "run_bytes": p["base_bytes_once"] + n * p["checkpoint_bytes"],
              "old_layout_run_bytes": n * p["old_layout_checkpoint_bytes"]})
    out["projected_7b"] = p
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
