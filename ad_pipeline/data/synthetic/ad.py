"""MVTec-AD-like categories: ``weave`` (grayscale texture) and ``disc`` (RGB object).

Layout written per category::

    <category>/train/good/000.png …  test/good/…  test/<defect>/…
    <category>/ground_truth/<defect>/<stem>_mask.png   (L, 0/255, image size)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ad_pipeline.data.synthetic import damage
from ad_pipeline.data.synthetic.canvas import RGB, Canvas, image_rng
from ad_pipeline.data.synthetic.layout import Row, save_image
from ad_pipeline.data.synthetic.scene import Layout, Part, render
from ad_pipeline.data.synthetic.shapes import Grid, smooth_noise

SIZE = 160
Render = Callable[[np.random.Generator, str | None], tuple[np.ndarray, np.ndarray | None]]


def weave_canvas(rng: np.random.Generator, height: int, width: int, tint: RGB = (1.0, 1.0, 1.0)) -> Canvas:
    """Basket weave: threads of ~12 px alternately over/under, jittered phase, angle ±3°, fibre noise."""
    g = Grid.of(height, width)
    period = rng.uniform(11.5, 12.5)
    a = np.deg2rad(rng.uniform(-3, 3))
    u = (np.cos(a) * g.x + np.sin(a) * g.y) / period + rng.uniform(0, 2)
    v = (-np.sin(a) * g.x + np.cos(a) * g.y) / period + rng.uniform(0, 2)
    fu, fv = u - np.floor(u), v - np.floor(v)
    horizontal_on_top = (np.floor(u) + np.floor(v)) % 2 == 0
    # A thread is brightest along its centre line and dips where it passes under the next one.
    thread_h = np.sin(np.pi * fv) * (0.6 + 0.4 * np.sin(np.pi * fu))
    thread_v = np.sin(np.pi * fu) * (0.6 + 0.4 * np.sin(np.pi * fv))
    value = 0.30 + 0.45 * np.where(horizontal_on_top, thread_h, thread_v)
    value *= 1.0 + 0.06 * smooth_noise(rng, height, width, cell=8) + 0.04 * rng.standard_normal((height, width))
    return Canvas(height, width, value[..., None] * np.asarray(tint, dtype=np.float32))


def render_weave(rng: np.random.Generator, defect: str | None, *, tint: RGB = (1.0, 1.0, 1.0),
                 height: int = SIZE, width: int = SIZE) -> tuple[np.ndarray, np.ndarray | None]:
    """Weave texture, optionally with a ``scratch`` | ``hole`` | ``stain``; → (uint8 [H,W,3], mask)."""
    canvas = weave_canvas(rng, height, width, tint)
    centre = rng.uniform(0.2, 0.8, 2).astype(np.float32) * np.array([width, height], dtype=np.float32)
    mask = None
    if defect == "scratch":
        mask = damage.scratch(canvas, rng, centre, rng.uniform(35, 60), colour=damage.BRIGHT)
    elif defect == "hole":
        mask = damage.hole(canvas, rng, centre, rng.uniform(6, 10))
    elif defect == "stain":
        mask = damage.stain(canvas, rng, centre, rng.uniform(9, 15), colour=(0.18, 0.16, 0.12))
    elif defect is not None:
        raise ValueError(f"unknown weave defect {defect!r}")
    return canvas.finish(rng), mask


def disc_layout(rng: np.random.Generator) -> Layout:
    """A brushed metal disc (r 54) with a groove, a centre hole, four brass bolts and an
    orientation mark; centre ±2.5 px (clipped at 5), angle ±10°."""
    cx, cy = SIZE / 2 + np.clip(rng.normal(0, 2.5, 2), -5, 5)
    angle = rng.uniform(-10, 10)
    t = np.deg2rad(angle + 45 + 90 * np.arange(4))
    parts = [
        Part("face", 0, (0.74, 0.74, 0.78), "disc", dict(cx=cx, cy=cy, r=54.0)),
        Part("groove", 0, (0.52, 0.52, 0.58), "ring", dict(cx=cx, cy=cy, r=36.0, r_inner=31.0)),
        Part("hole", 0, (0.07, 0.07, 0.09), "disc", dict(cx=cx, cy=cy, r=13.0)),
        *(Part("bolt", 0, (0.80, 0.63, 0.30), "disc", dict(cx=cx + 44 * np.cos(a), cy=cy + 44 * np.sin(a), r=5.0))
          for a in t),
        Part("mark", 0, (0.35, 0.35, 0.40), "box", dict(cx=cx + 24 * np.cos(np.deg2rad(angle)),
                                                        cy=cy + 24 * np.sin(np.deg2rad(angle)), w=10.0, h=4.0, angle=angle)),
    ]
    return Layout((), tuple(parts))


def render_disc(rng: np.random.Generator, defect: str | None) -> tuple[np.ndarray, np.ndarray | None]:
    """The disc object on a slate background; defects ``scratch`` on the face, ``stain`` (rust),
    ``broken`` (chunk missing from the rim). → (uint8 [H,W,3], mask)."""
    backdrop = np.float32([0.18, 0.20, 0.24]) * (1.0 + 0.08 * smooth_noise(rng, SIZE, SIZE, cell=20))[..., None]
    lay = disc_layout(rng)
    canvas = render(rng, lay, backdrop)
    face = lay.parts[0].geom
    t, r = rng.uniform(0, 2 * np.pi), rng.uniform(18, 48)
    on_face = np.array([face["cx"] + r * np.cos(t), face["cy"] + r * np.sin(t)], dtype=np.float32)
    mask = None
    if defect == "scratch":
        mask = damage.scratch(canvas, rng, on_face, rng.uniform(25, 40))
    elif defect == "stain":
        mask = damage.stain(canvas, rng, on_face, rng.uniform(8, 12), colour=(0.55, 0.27, 0.08))
    elif defect == "broken":
        on_rim = np.array([face["cx"] + 54 * np.cos(t), face["cy"] + 54 * np.sin(t)], dtype=np.float32)
        mask = damage.break_off(canvas, rng, on_rim, rng.uniform(12, 16), lay.parts[0].sd(canvas.grid))
    elif defect is not None:
        raise ValueError(f"unknown disc defect {defect!r}")
    return canvas.finish(rng), mask


@dataclass(frozen=True)
class ADCategory:
    name: str
    render: Render
    defects: tuple[str, ...]
    grayscale: bool = False


CATEGORIES = (
    ADCategory("weave", render_weave, ("scratch", "hole", "stain"), grayscale=True),
    ADCategory("disc", render_disc, ("scratch", "stain", "broken")),
)


@dataclass(frozen=True)
class ADCounts:
    train: int = 40
    test_good: int = 12
    per_defect: int = 6


def write_category(root: Path, seed: int, cat: ADCategory, counts: ADCounts = ADCounts()) -> list[Row]:
    """Render and save one category under ``root/<name>``; return its manifest rows."""
    jobs = [("train", "good", counts.train), ("test", "good", counts.test_good)]
    jobs += [("test", d, counts.per_defect) for d in cat.defects]
    rows = []
    for split, kind, n in jobs:
        for i in range(n):
            rng = image_rng(seed, "synthetic_ad", cat.name, split, kind, i)
            pixels, mask = cat.render(rng, None if kind == "good" else kind)
            if cat.grayscale:
                pixels = np.rint(pixels.mean(axis=2)).astype(np.uint8)
            rel = f"{cat.name}/{split}/{kind}/{i:03d}.png"
            save_image(root / rel, pixels)
            mask_paths: tuple[str, ...] = ()
            if mask is not None:
                mask_paths = (f"{cat.name}/ground_truth/{kind}/{i:03d}_mask.png",)
                save_image(root / mask_paths[0], mask.astype(np.uint8) * 255)
            rows.append(Row(cat.name, split, kind, rel, mask_paths, "" if kind == "good" else kind))
    return rows
