"""`vla-rl export`: a train checkpoint's policy as a standalone directory (safetensors + JSON only).

Without --merge: the policy directory as trained — `base/` (a transformers model), `adapter/` (the
LoRA adapter in PEFT format, loadable with `PeftModel.from_pretrained(base, adapter)`), the value
head and the action tokenizer. With --merge: the LoRA weights folded into the base model
(`merge_and_unload`), so `base/` alone is the fine-tuned model — `transformers` loads it without
peft, and `vla-rl eval --policy OUT` runs it. With --format openvla (a policy loaded from an OpenVLA checkpoint):
OpenVLA's own layout, LoRA merged (`vla_rl.policy.openvla_export.export_openvla`).
"""

from __future__ import annotations

import json
from pathlib import Path

from vla_rl.train_config import ExportConfig


def policy_dir_of(checkpoint: str | Path) -> Path:
    """A train checkpoint (`checkpoints/<n>` or `checkpoints/last`) or a policy directory itself."""
    path = Path(checkpoint)
    return path / "pretrained_model" if (path / "pretrained_model").is_dir() else path


def run(cfg: ExportConfig) -> int:
    from vla_rl.base.outputs import POLICY, prepare_output
    from vla_rl.policy import PolicyError, VLAPolicy

    out = Path(cfg.out)
    src = policy_dir_of(cfg.checkpoint)
    if not (src / "policy.json").is_file():
        raise PolicyError(f"{cfg.checkpoint}: neither a train checkpoint (no pretrained_model/) nor a policy "
                          "directory (no policy.json) — give e.g. outputs/train/checkpoints/last")
    if out.resolve() == src.resolve():
        raise PolicyError(f"out={cfg.out} is the checkpoint itself — give another directory")
    if cfg.format == "openvla":
        from vla_rl.policy.openvla_export import export_openvla

        export_openvla(VLAPolicy.from_pretrained(src), out, cfg.stats_key or None)
        print(json.dumps({"policy": str(out), "source": str(src), "format": "openvla", "merged": True,
                          "stats_key": cfg.stats_key or None}))
        return 0
    prepare_output(out, POLICY, overwrite=cfg.overwrite)
    policy = VLAPolicy.from_pretrained(src)
    merged = False
    if cfg.merge and policy.has_lora:
        policy.model = policy.model.merge_and_unload()
        policy.spec.lora = {}
        merged = True
    policy.save_pretrained(out)
    print(json.dumps({"policy": str(out), "source": str(src), "merged": merged,
                      "adapter": (out / "adapter").is_dir()}))
    return 0
