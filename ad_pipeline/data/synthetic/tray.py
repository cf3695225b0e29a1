"""``tray``: a breakfast-box-like tray, 256×192 (W×H), with three compartments.

Rules of a normal image (what the logical anomalies break):
* left compartment: exactly 2 discs, both of one colour (orange or red);
* top-right compartment: exactly 3 vertical bars (brown);
* bottom-right compartment: exactly 1 ring whose colour pairs with the discs
  (orange ↔ teal, red ↔ violet); the right half of this compartment stays empty.

A logical anomaly's mask is the footprint of the missing / extra / resized / recoloured part;
for a misplaced disc it is one channel covering both its new and its expected place.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ad_pipeline.data.synthetic import damage
from ad_pipeline.data.synthetic.canvas import RGB, Canvas
from ad_pipeline.data.synthetic.scene import Layout, LogicalAnomaly, Part, jittered
from ad_pipeline.data.synthetic.shapes import smooth_noise

WIDTH, HEIGHT = 256, 192
CLASS_NAMES = ("background", "disc", "bar", "ring")
DISC, BAR, RING = 1, 2, 3
PAIRINGS: dict[str, tuple[RGB, RGB]] = {  # disc colour -> ring colour
    "orange": ((0.95, 0.55, 0.12), (0.12, 0.62, 0.62)),
    "red": ((0.78, 0.12, 0.14), (0.55, 0.28, 0.78)),
}
DISC_SLOTS = ((60.0, 54.0), (60.0, 138.0))
BAR_SLOTS = ((146.0, 51.0), (180.0, 51.0), (214.0, 51.0))
RING_SLOT = (150.0, 141.0)
FREE_SLOT = (214.0, 141.0)  # empty in normal images
TRAY_BOX = (128.0, 96.0, 240.0, 176.0)  # cx, cy, w, h

TRAY = Part("tray", 0, (0.86, 0.83, 0.76), "box", dict(cx=128.0, cy=96.0, w=240.0, h=176.0, angle=0.0, radius=10.0))
WALLS = (
    Part("wall", 0, (0.70, 0.66, 0.58), "box", dict(cx=114.0, cy=96.0, w=4.0, h=168.0, angle=0.0, radius=1.0)),
    Part("wall", 0, (0.70, 0.66, 0.58), "box", dict(cx=180.0, cy=96.0, w=128.0, h=4.0, angle=0.0, radius=1.0)),
)


def _jitter(rng: np.random.Generator, slot: tuple[float, float], px: float) -> tuple[float, float]:
    return float(slot[0] + rng.uniform(-px, px)), float(slot[1] + rng.uniform(-px, px))


def make_disc(rng: np.random.Generator, slot: tuple[float, float], colour: RGB) -> Part:
    cx, cy = _jitter(rng, slot, 4)
    return Part("disc", DISC, jittered(rng, colour), "disc", dict(cx=cx, cy=cy, r=22.0 + rng.uniform(-1, 1)))


def make_bar(rng: np.random.Generator, slot: tuple[float, float]) -> Part:
    cx, cy = _jitter(rng, slot, 3)
    geom = dict(cx=cx, cy=cy, w=58.0 + rng.uniform(-2, 2), h=13.0, angle=90.0 + rng.uniform(-6, 6), radius=5.0)
    return Part("bar", BAR, jittered(rng, (0.55, 0.36, 0.20)), "box", geom)


def make_ring(rng: np.random.Generator, slot: tuple[float, float], colour: RGB) -> Part:
    cx, cy = _jitter(rng, slot, 4)
    return Part("ring", RING, jittered(rng, colour), "ring", dict(cx=cx, cy=cy, r=26.0 + rng.uniform(-1, 1), r_inner=12.0))


def layout(rng: np.random.Generator, variant: str | None) -> Layout:
    """A normal tray; the colour pairing is drawn per image (``variant`` is unused here)."""
    disc_colour, ring_colour = PAIRINGS[("orange", "red")[rng.integers(2)]]
    parts = [make_disc(rng, s, disc_colour) for s in DISC_SLOTS]
    parts += [make_bar(rng, s) for s in BAR_SLOTS]
    parts.append(make_ring(rng, RING_SLOT, ring_colour))
    return Layout((TRAY, *WALLS), tuple(parts))


def backdrop(rng: np.random.Generator) -> np.ndarray:
    """Dark table surface [H,W,3]."""
    table = 0.22 * (1.0 + 0.10 * smooth_noise(rng, HEIGHT, WIDTH, cell=24))
    return table[..., None] * np.float32([1.0, 0.97, 0.92])


# ---- logical anomalies: a normal layout changed; returns (layout, parts whose footprint is the mask) ----

def missing_component(rng: np.random.Generator, lay: Layout) -> tuple[Layout, list[Part]]:
    i = int(rng.integers(len(lay.parts)))
    return lay.with_parts(lay.parts[:i] + lay.parts[i + 1:]), [lay.parts[i]]


def extra_component(rng: np.random.Generator, lay: Layout) -> tuple[Layout, list[Part]]:
    if rng.random() < 0.5:
        extra = make_disc(rng, FREE_SLOT, lay.parts[lay.find("disc")[0]].colour)
    else:
        extra = make_bar(rng, FREE_SLOT)
    return lay.with_parts([*lay.parts, extra]), [extra]


def misplaced_component(rng: np.random.Generator, lay: Layout) -> tuple[Layout, list[Part]]:
    """A disc moved from the left compartment into the free bottom-right space."""
    i = lay.find("disc")[int(rng.integers(2))]
    cx, cy = _jitter(rng, FREE_SLOT, 3)
    moved = lay.parts[i].with_geom(cx=cx, cy=cy)
    parts = list(lay.parts)
    parts[i] = moved
    return lay.with_parts(parts), [lay.parts[i], moved]


def swapped_pairing(rng: np.random.Generator, lay: Layout) -> tuple[Layout, list[Part]]:
    """The ring takes the colour belonging to the other disc colour."""
    disc_colour = lay.parts[lay.find("disc")[0]].colour
    name = min(PAIRINGS, key=lambda k: sum(abs(a - b) for a, b in zip(PAIRINGS[k][0], disc_colour)))
    other = next(k for k in PAIRINGS if k != name)
    i = lay.find("ring")[0]
    parts = list(lay.parts)
    parts[i] = Part("ring", RING, jittered(rng, PAIRINGS[other][1]), "ring", lay.parts[i].geom)
    return lay.with_parts(parts), [parts[i]]


def wrong_size(rng: np.random.Generator, lay: Layout) -> tuple[Layout, list[Part]]:
    """A disc shrunk to ~60 %, or a bar shortened to ~55 %."""
    role = ("disc", "bar")[rng.integers(2)]
    i = lay.find(role)[int(rng.integers(len(lay.find(role))))]
    old = lay.parts[i]
    new = old.with_geom(r=old.geom["r"] * 0.6) if role == "disc" else old.with_geom(w=old.geom["w"] * 0.55)
    parts = list(lay.parts)
    parts[i] = new
    return lay.with_parts(parts), [old, new]


def _on_normal(change: Callable[[np.random.Generator, Layout], tuple[Layout, list[Part]]]) -> LogicalAnomaly:
    """Apply ``change`` to a freshly drawn normal tray."""
    return lambda rng, variant: change(rng, layout(rng, variant))


LOGICAL: dict[str, LogicalAnomaly] = {
    name: _on_normal(fn)
    for name, fn in [
        ("missing_component", missing_component),
        ("extra_component", extra_component),
        ("misplaced_component", misplaced_component),
        ("swapped_pairing", swapped_pairing),
        ("wrong_size", wrong_size),
    ]
}


# ---- structural anomalies: (rng, canvas, layout) -> mask ----

def _damage_site(rng: np.random.Generator, lay: Layout) -> np.ndarray:
    """Centre (x, y) on a random component (60 %) or anywhere on the tray floor."""
    if rng.random() < 0.6:
        p = lay.parts[int(rng.integers(len(lay.parts)))]
        return np.array([p.geom["cx"], p.geom["cy"]], dtype=np.float32) + rng.uniform(-6, 6, 2).astype(np.float32)
    cx, cy, w, h = TRAY_BOX
    return np.array([cx + rng.uniform(-0.4, 0.4) * w, cy + rng.uniform(-0.4, 0.4) * h], dtype=np.float32)


def scratch(rng: np.random.Generator, canvas: Canvas, lay: Layout) -> np.ndarray:
    return damage.scratch(canvas, rng, _damage_site(rng, lay), rng.uniform(25, 45))


def hole(rng: np.random.Generator, canvas: Canvas, lay: Layout) -> np.ndarray:
    return damage.hole(canvas, rng, _damage_site(rng, lay), rng.uniform(5, 8))


def contamination(rng: np.random.Generator, canvas: Canvas, lay: Layout) -> np.ndarray:
    return damage.stain(canvas, rng, _damage_site(rng, lay), rng.uniform(7, 12))


STRUCTURAL = {"scratch": scratch, "hole": hole, "contamination": contamination}
