"""`vla-rl pretrain`: behaviour cloning of a VLA on demo datasets (vla_rl/pretrain_run.py: the run itself, its loss
and its metrics)."""

from __future__ import annotations

import json

from vla_rl.config import PretrainConfig
from vla_rl.pretrain_run import PretrainRun


def run(cfg: PretrainConfig) -> int:
    print(json.dumps(PretrainRun(cfg).run()))
    return 0
