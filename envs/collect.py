"""Record scripted-expert episodes into a `DemoWriter`."""

from __future__ import annotations

import numpy as np

from envs.demos import Episode
from envs.experts import ScriptedExpert
from envs.wrapper import VLAEnv


def rollout_expert(env: VLAEnv, expert: ScriptedExpert, seed: int) -> Episode:
    """One seeded episode of the expert; observations include the final one (T + 1 rows)."""
    obs, info = env.reset(seed=seed)
    expert.reset(seed=seed)
    images, states = [obs["image"]], [obs["state"]]
    actions, rewards, successes, progress = [], [], [info["success"]], [info["progress"]]
    done = False
    while not done:
        action = expert.act()
        obs, reward, terminated, truncated, info = env.step(action)
        images.append(obs["image"])
        states.append(obs["state"])
        actions.append(action)
        rewards.append(reward)
        successes.append(info["success"])
        progress.append(info["progress"])
        done = terminated or truncated
    return Episode(
        image=np.stack(images).astype(np.uint8),
        state=np.stack(states).astype(np.float32),
        instruction=obs["instruction"].astype(np.int64),
        action=np.stack(actions).astype(np.float32),
        reward=np.asarray(rewards, dtype=np.float32),
        success=np.asarray(successes, dtype=bool),
        progress=np.asarray(progress, dtype=np.float32),
        instruction_text=info["instruction"],
        seed=int(seed),
    )

