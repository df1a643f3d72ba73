"""Episode videos: frames upscaled, an overlay bar with per-step text, written as H.264 mp4.

imageio (with its bundled ffmpeg, imageio-ffmpeg) writes the file; Pillow draws the text.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

BAR = 48  # pixels of text bar under the frame (frame + bar stay multiples of 16 for H.264)


def annotate(frame: np.ndarray, lines: Sequence[str], scale: int = 4) -> np.ndarray:
    """Upscale `frame` (nearest) by `scale` and add a black bar with up to 3 lines of text."""
    from PIL import Image, ImageDraw

    big = np.repeat(np.repeat(frame, scale, axis=0), scale, axis=1)
    canvas = Image.new("RGB", (big.shape[1], big.shape[0] + BAR))
    canvas.paste(Image.fromarray(big), (0, 0))
    draw = ImageDraw.Draw(canvas)
    for i, line in enumerate(list(lines)[:3]):
        draw.text((4, big.shape[0] + 2 + 15 * i), line, fill=(255, 255, 255))
    return np.asarray(canvas)


def write_mp4(path: str | Path, frames: Sequence[np.ndarray], fps: int = 10) -> Path:
    """Write frames atomically (a temporary file renamed into place)."""
    import imageio.v2 as imageio

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.stem}.tmp.mp4"
    with imageio.get_writer(tmp, fps=fps, codec="libx264", quality=7, macro_block_size=16) as writer:
        for frame in frames:
            writer.append_data(frame)
    os.replace(tmp, path)
    return path
