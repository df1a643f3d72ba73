"""`vla-rl reward train`: fit a Bradley–Terry ensemble on labelled pairs; print held-out metrics as JSON."""

from __future__ import annotations

import json

from reward_models.config import RewardTrainConfig


def run(cfg: RewardTrainConfig) -> int:
    from reward_models.pairs import PairDataError, PairDataset
    from reward_models.reward_model import RewardModelConfig
    from reward_models.training import train_ensemble
    from vla_rl.base.outputs import REWARD_MODEL, prepare_output

    prepare_output(cfg.out, REWARD_MODEL, overwrite=cfg.overwrite)
    pairs, shape = [], None
    for path in cfg.pairs:
        ds = PairDataset(path)
        if ds.index["image_shape"] is None:
            continue
        if shape is not None and ds.index["image_shape"] != shape:
            raise PairDataError(f"{path}: image_shape {ds.index['image_shape']} differs from {cfg.pairs[0]}'s {shape}")
        shape = ds.index["image_shape"]
        pairs.extend(ds)
    if shape is None or not any(p.status == "labeled" for p in pairs):
        raise PairDataError(f"{cfg.pairs}: no labelled pairs (run `vla-rl reward label` first)")
    model_cfg = RewardModelConfig(image_shape=tuple(shape), ensemble_size=cfg.ensemble_size,
                                  instruction_conditioning=cfg.instruction_conditioning, seed=cfg.seed,
                                  encoder=cfg.encoder, vla_policy=cfg.vla_policy, output=cfg.output)
    model, report = train_ensemble(pairs, model_cfg, cfg.epochs, cfg.batch_size, cfg.lr, cfg.holdout, cfg.patience,
                                   cfg.seed)
    model.save(cfg.out)
    print(json.dumps({**report, "out": cfg.out}))
    return 0
