"""Composed scenes: components as parametric parts, a rigid camera jitter, and rendering."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ad_pipeline.data.synthetic.canvas import RGB, Canvas
from ad_pipeline.data.synthetic.shapes import Grid, box, disc, polyline, ring, smooth_noise

SHAPES: dict[str, Callable[..., np.ndarray]] = {"disc": disc, "ring": ring, "box": box, "line": polyline}


@dataclass(frozen=True)
class Part:
    """One drawable component. ``geom`` holds the keyword arguments of ``SHAPES[shape]``
    (``cx``/``cy``/``angle`` or ``points`` [N,2] are moved by :meth:`moved`).

    ``role`` names the slot for the scene's rules (e.g. ``"disc"``, ``"top_block"``);
    ``label`` is the part class written to the label map (0 = not a part, e.g. the tray).
    """

    role: str
    label: int
    colour: RGB
    shape: str
    geom: dict[str, Any]

    def sd(self, g: Grid) -> np.ndarray:
        return SHAPES[self.shape](g, **self.geom)

    def bounds(self, margin: float = 2.0) -> tuple[float, float, float, float]:
        """Conservative (x0, y0, x1, y1) pixel box around the part."""
        g = self.geom
        if self.shape == "line":
            lo, hi = np.min(g["points"], axis=0), np.max(g["points"], axis=0)
            pad = g["width"] / 2 + margin
            return lo[0] - pad, lo[1] - pad, hi[0] + pad, hi[1] + pad
        reach = (g["r"] if "r" in g else np.hypot(g["w"], g["h"]) / 2) + margin
        return g["cx"] - reach, g["cy"] - reach, g["cx"] + reach, g["cy"] + reach

    def with_geom(self, **changes: Any) -> Part:
        return dataclasses.replace(self, geom=self.geom | changes)

    def moved(self, angle: float, pivot: np.ndarray, shift: np.ndarray) -> Part:
        """Rotate by ``angle`` degrees about ``pivot`` (x, y), then translate by ``shift``."""
        c, s = np.cos(np.deg2rad(angle)), np.sin(np.deg2rad(angle))
        rot = np.array([[c, -s], [s, c]], dtype=np.float32)

        def move(p: np.ndarray) -> np.ndarray:
            return ((np.asarray(p, dtype=np.float32) - pivot) @ rot.T + pivot + shift).astype(np.float32)

        changes: dict[str, Any] = {}
        if "points" in self.geom:
            changes["points"] = move(self.geom["points"])
        if "cx" in self.geom:
            changes["cx"], changes["cy"] = (float(v) for v in move(np.array([self.geom["cx"], self.geom["cy"]])))
        if "angle" in self.geom:
            changes["angle"] = self.geom["angle"] + angle
        return self.with_geom(**changes)


@dataclass(frozen=True)
class Layout:
    """``base``: label-0 parts painted before the background is frozen (tray, walls);
    ``parts``: the components, painted in order."""

    base: tuple[Part, ...]
    parts: tuple[Part, ...]

    def with_parts(self, parts: Sequence[Part]) -> Layout:
        return Layout(self.base, tuple(parts))

    def find(self, role: str) -> list[int]:
        return [i for i, p in enumerate(self.parts) if p.role == role]


@dataclass(frozen=True)
class CameraJitter:
    """Rigid whole-scene motion: rotation ±``angle``°, translation ±``shift`` px."""

    angle: float = 3.0
    shift: float = 4.0

    def sample(self, rng: np.random.Generator, width: int, height: int) -> Callable[[Part], Part]:
        angle = rng.uniform(-self.angle, self.angle)
        shift = rng.uniform(-self.shift, self.shift, 2).astype(np.float32)
        pivot = np.array([width / 2, height / 2], dtype=np.float32)
        return lambda part: part.moved(angle, pivot, shift)


LogicalAnomaly = Callable[[np.random.Generator, str | None], tuple[Layout, list[Part]]]
"""(rng, variant) -> (anomalous layout, parts whose footprints form the ground-truth mask)."""
StructuralAnomaly = Callable[[np.random.Generator, Canvas, Layout], np.ndarray]
"""(rng, rendered canvas, its layout) -> bool mask [H,W] of the damage painted onto the canvas."""


def union_mask(g: Grid, parts: Sequence[Part], margin: float = 1.0) -> np.ndarray:
    """bool [H,W]: pixels within ``margin`` px of any of ``parts``."""
    mask = np.zeros(g.shape, dtype=bool)
    for p in parts:
        mask |= p.sd(g) < margin
    return mask


def render(rng: np.random.Generator, layout: Layout, backdrop: np.ndarray) -> Canvas:
    """Paint ``backdrop`` [H,W,3], the base parts, freeze, then the components with a fine texture."""
    h, w = backdrop.shape[:2]
    canvas = Canvas(h, w, backdrop)
    texture = 1.0 + 0.05 * smooth_noise(rng, h, w, cell=6)
    for part in layout.base:
        canvas.paint_solid(part.sd, part.colour, texture, bounds=part.bounds())
    canvas.freeze_background()
    for part in layout.parts:
        canvas.paint_solid(part.sd, part.colour, texture, label=part.label, bounds=part.bounds())
    return canvas


def jittered(rng: np.random.Generator, colour: RGB, amount: float = 0.03) -> RGB:
    """Colour with independent ±``amount`` per channel (normal lot-to-lot variation)."""
    return tuple(float(np.clip(c + rng.uniform(-amount, amount), 0, 1)) for c in colour)  # type: ignore[return-value]
