"""RLlib episodes → `EpisodeFrames`, the framework-free frames the preference loop reads.

The RLlib glue of the preference loop lives here, so that `reward_models` never touches RLlib's episode API.
"""

from __future__ import annotations

import numpy as np

from envs.instruction import decode_instruction
from reward_models.segments import EpisodeFrames


def episode_frames(episodes, source: str) -> EpisodeFrames:
    """Frames, instructions and privileged progress of RLlib `SingleAgentEpisode`s (every observation, reset frame
    included); `source` goes into the provenance of pairs drawn from them."""
    out = EpisodeFrames(source, [], [], [], [], [])
    for e in episodes:
        obs = e.get_observations()
        infos = e.get_infos()
        images = np.asarray(obs["image"], dtype=np.uint8)
        instr = np.asarray(obs["instruction"], dtype=np.int64)
        progress = np.array([float(i.get("progress", np.nan)) for i in infos], dtype=np.float64)
        if len(progress) != len(images):  # infos are aligned with observations in RLlib's episodes
            progress = np.full(len(images), np.nan)
        out.image.append(images)
        out.instruction.append(instr[0])
        out.text.append(decode_instruction(instr[0]))
        out.gt.append(progress)
        out.progress.append(progress)
    return out
