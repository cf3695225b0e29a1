"""A float RGB canvas with a part-label side channel, photometric finishing and seeding."""

from __future__ import annotations

import zlib
from collections.abc import Callable

import numpy as np

from ad_pipeline.data.synthetic.shapes import Grid, coverage, rim_shading, smooth_noise

RGB = tuple[float, float, float]
Bounds = tuple[float, float, float, float]
Window = tuple[slice, slice]


def image_rng(seed: int, *names: str | int) -> np.random.Generator:
    """Generator for one image, keyed by (seed, names…) so images are independent of order.

    Names are hashed with CRC32 (stable across processes, unlike ``hash``).
    """
    keys = [n if isinstance(n, int) else zlib.crc32(n.encode()) for n in names]
    return np.random.default_rng([seed % 2**63, *keys])


class Canvas:
    """RGB float image ``rgb`` [H,W,3] in [0,1] and part labels ``labels`` [H,W] uint8.

    ``background`` keeps the pixels painted before :meth:`freeze_background`, so damage can
    punch holes through components (:meth:`erase`).
    """

    def __init__(self, height: int, width: int, background: np.ndarray):
        self.grid = Grid.of(height, width)
        self.rgb = np.broadcast_to(np.asarray(background, dtype=np.float32), (height, width, 3)).copy()
        self.labels = np.zeros((height, width), dtype=np.uint8)
        self.background = self.rgb.copy()

    def freeze_background(self) -> None:
        self.background = self.rgb.copy()

    def window(self, bounds: Bounds | None) -> Window:
        """Slices of the pixels inside ``bounds`` (x0, y0, x1, y1), clipped to the image; all if None."""
        if bounds is None:
            return np.s_[:, :]
        h, w = self.labels.shape
        x0, y0, x1, y1 = bounds
        return np.s_[max(int(y0), 0): min(int(np.ceil(y1)) + 1, h), max(int(x0), 0): min(int(np.ceil(x1)) + 1, w)]

    def paint(self, alpha: np.ndarray, colour: RGB | np.ndarray, label: int | None = None,
              win: Window = np.s_[:, :]) -> None:
        """Blend ``colour`` (RGB or an array shaped like the window) in with opacity ``alpha``
        over window ``win``; set ``label`` where alpha > 0.5."""
        rgb = self.rgb[win]
        rgb += alpha[..., None] * (np.asarray(colour, dtype=np.float32) - rgb)
        if label is not None:
            self.labels[win][alpha > 0.5] = label

    def paint_solid(self, sdf: Callable[[Grid], np.ndarray], colour: RGB, texture: np.ndarray,
                    label: int | None = None, bounds: Bounds | None = None) -> None:
        """Paint shape ``sdf`` with darkened rims and a multiplicative ``texture`` [H,W] (≈1).

        Only the window of ``bounds`` is computed, which keeps small parts cheap.
        """
        win = self.window(bounds)
        sd = sdf(self.grid.crop(win))
        shade = (rim_shading(sd) * texture[win])[..., None]
        self.paint(coverage(sd), shade * np.asarray(colour, dtype=np.float32), label, win)

    def erase(self, alpha: np.ndarray) -> None:
        """Restore the frozen background where ``alpha`` > 0 (blended) and clear labels there."""
        self.paint(alpha, self.background)
        self.labels[alpha > 0.5] = 0

    def finish(self, rng: np.random.Generator, *, lighting: float = 0.06, noise: float = 0.012) -> np.ndarray:
        """Apply per-image gain, colour cast, smooth illumination and pixel noise → uint8 [H,W,3]."""
        h, w = self.labels.shape
        gain = rng.normal(1.0, 0.04) * rng.normal(1.0, 0.02, 3).astype(np.float32)
        light = 1.0 + lighting * smooth_noise(rng, h, w, cell=max(h, w) / 2)
        out = self.rgb * gain * light[..., None] + rng.normal(0.0, noise, (h, w, 3)).astype(np.float32)
        return to_uint8(out)


def to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)
