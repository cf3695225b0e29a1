"""Small helpers shared by several test modules."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def write_random_images(folder: Path, n: int, size: int | tuple[int, int] = 64, seed: int = 0) -> list[Path]:
    """``n`` seeded random-noise RGB PNGs ``img<i>.png`` in ``folder``, ``size``² or (H, W)."""
    h, w = (size, size) if isinstance(size, int) else size
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        p = folder / f"img{i}.png"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    return paths
