"""Structural damage painted onto a :class:`Canvas`; each returns its ground-truth mask.

Masks are bool [H,W] and slightly generous around thin strokes, like human annotations.
"""

from __future__ import annotations

import numpy as np

from ad_pipeline.data.synthetic.canvas import RGB, Canvas
from ad_pipeline.data.synthetic.shapes import blob, coverage, polyline, random_wobble, wavy_path

DARK: RGB = (0.10, 0.09, 0.08)
BRIGHT: RGB = (0.97, 0.96, 0.92)
STAIN_COLOURS: tuple[RGB, ...] = ((0.35, 0.22, 0.08), (0.20, 0.45, 0.20), (0.25, 0.30, 0.70), (0.55, 0.10, 0.45))


def scratch(canvas: Canvas, rng: np.random.Generator, centre: np.ndarray, length: float, colour: RGB = DARK) -> np.ndarray:
    """A thin bowed line (1.5–2.5 px) of ``length`` px through ``centre`` (x, y)."""
    angle = rng.uniform(0, np.pi)
    half = 0.5 * length * np.array([np.cos(angle), np.sin(angle)], dtype=np.float32)
    path = wavy_path(rng, centre - half, centre + half, bend=0.12 * length)
    width = rng.uniform(1.5, 2.5)
    canvas.paint(coverage(polyline(canvas.grid, path, width)), colour)
    return coverage(polyline(canvas.grid, path, width + 2.0)) > 0.5


def hole(canvas: Canvas, rng: np.random.Generator, centre: np.ndarray, radius: float) -> np.ndarray:
    """A dark irregular hole with a shaded rim."""
    sd = blob(canvas.grid, *centre, radius, random_wobble(rng))
    depth = np.clip(-sd / (radius / 2), 0.0, 1.0)[..., None]  # 0 at the rim, 1 in the middle
    canvas.paint(coverage(sd), np.asarray(DARK, dtype=np.float32) * (3.0 - 2.0 * depth))
    return coverage(sd) > 0.5


def stain(canvas: Canvas, rng: np.random.Generator, centre: np.ndarray, radius: float, colour: RGB | None = None) -> np.ndarray:
    """A translucent irregular blob of a foreign colour (contamination)."""
    colour = STAIN_COLOURS[rng.integers(len(STAIN_COLOURS))] if colour is None else colour
    alpha = coverage(blob(canvas.grid, *centre, radius, random_wobble(rng, strength=0.3)))
    canvas.paint(rng.uniform(0.7, 0.85) * alpha, colour)
    return alpha > 0.5


def break_off(canvas: Canvas, rng: np.random.Generator, centre: np.ndarray, radius: float, part_sd: np.ndarray) -> np.ndarray:
    """Remove an irregular chunk of a component (given by its signed distance), showing the background."""
    chunk = np.maximum(blob(canvas.grid, *centre, radius, random_wobble(rng, strength=0.3)), part_sd)
    canvas.erase(coverage(chunk))
    return coverage(chunk) > 0.5
