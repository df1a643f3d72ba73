"""Scripted teacher labeler: B-Pref noise models over each frame's privileged task progress."""

from __future__ import annotations

import numpy as np

from reward_models.labelers.base import LabelResult
from reward_models.pairs import Pair
from reward_models.teachers import ABSTAIN, TEACHERS, TeacherConfig, teacher_labels


class ScriptedLabeler:
    def __init__(self, teacher: str | TeacherConfig = "oracle", seed: int = 0):
        if isinstance(teacher, str):
            if teacher not in TEACHERS:
                raise ValueError(f"teacher {teacher!r} is unknown; choose one of {sorted(TEACHERS)}")
            self.teacher_name, self.cfg = teacher, TEACHERS[teacher]
        else:
            self.teacher_name, self.cfg = "custom", teacher
        self.name = f"scripted:{self.teacher_name}"
        self.rng = np.random.default_rng(seed)

    def label(self, pairs: list[Pair]) -> list[LabelResult]:
        if not pairs:
            return []
        missing = [p.id[:12] for p in pairs if p.progress is None]
        if missing:
            raise ValueError(f"pairs {missing[:3]} carry no privileged progress: a scripted teacher cannot label them")
        gt0 = np.array([p.progress[0] for p in pairs], dtype=np.float64)
        gt1 = np.array([p.progress[1] for p in pairs], dtype=np.float64)
        labels = teacher_labels(gt0, gt1, self.cfg, self.rng)
        prov = {"teacher": self.teacher_name, **self.cfg.as_dict()}
        return [LabelResult("abstain", None, self.name, prov) if lab == ABSTAIN else
                LabelResult("labeled", float(lab), self.name, prov) for lab in labels]
