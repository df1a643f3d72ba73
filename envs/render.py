"""Fast offscreen MuJoCo rendering shared by every env family.

Shadows, reflections and the skybox are turned off: on Mesa llvmpipe this makes a 128 px frame
~4x cheaper (see ../shared notes, machine.md) and the policy does not need them.
"""

from __future__ import annotations

import mujoco
import numpy as np

from vla_rl.base.errors import ConfigError

_SLOW_FLAGS = (
    mujoco.mjtRndFlag.mjRND_SHADOW,
    mujoco.mjtRndFlag.mjRND_REFLECTION,
    mujoco.mjtRndFlag.mjRND_SKYBOX,
)


class FastRenderer:
    """A fixed-camera RGB renderer; call `close()` explicitly (EGL complains at interpreter exit)."""

    def __init__(self, model: mujoco.MjModel, size: int, camera: str, flip_vertical: bool = False):
        if mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, camera) < 0:
            names = [model.camera(i).name for i in range(model.ncam)]
            raise ConfigError(f"env_options.camera={camera!r} is not a camera of this task; choose one of {names}")
        self._renderer = mujoco.Renderer(model, size, size)
        for flag in _SLOW_FLAGS:
            self._renderer.scene.flags[flag] = 0
        self.camera = camera
        self.flip_vertical = flip_vertical

    def render(self, data: mujoco.MjData) -> np.ndarray:
        self._renderer.update_scene(data, camera=self.camera)
        image = self._renderer.render()
        if self.flip_vertical:
            image = image[::-1]
        return np.ascontiguousarray(image, dtype=np.uint8)

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
