"""Preference data, labelers and Bradley–Terry reward models.

Public API::

    from reward_models import Pair, PairDataset, RewardEnsemble, RewardModelConfig, ScriptedLabeler
    from reward_models import TEACHERS, teacher_labels, train_ensemble, sample_candidates, select_pairs
"""

from reward_models.bradley_terry import bt_loss, bt_probability
from reward_models.labelers import Labeler, LabelResult, ScriptedLabeler
from reward_models.pairs import Pair, PairDataError, PairDataset
from reward_models.reward_model import (
    RewardEnsemble,
    RewardModelConfig,
    RewardModelError,
)
from reward_models.segments import load_episodes, sample_candidates, select_pairs
from reward_models.teachers import TEACHERS, TeacherConfig, teacher_labels
from reward_models.training import train_ensemble

__all__ = [
    "TEACHERS",
    "LabelResult",
    "Labeler",
    "Pair",
    "PairDataError",
    "PairDataset",
    "RewardEnsemble",
    "RewardModelConfig",
    "RewardModelError",
    "ScriptedLabeler",
    "TeacherConfig",
    "bt_loss",
    "bt_probability",
    "load_episodes",
    "sample_candidates",
    "select_pairs",
    "teacher_labels",
    "train_ensemble",
]
