"""``connectors``: a cable joining two connector blocks, 192×256 (W×H), three product variants.

Rules of a normal image: both blocks carry the variant's number of orange pins and the cable
has the variant's colour (``two_pin`` yellow, ``three_pin`` blue, ``five_pin`` red); the blocks
sit ~156 px apart (fixed cable length). The cable's bow varies freely.
"""

from __future__ import annotations

import numpy as np

from ad_pipeline.data.synthetic import damage
from ad_pipeline.data.synthetic.canvas import RGB, Canvas
from ad_pipeline.data.synthetic.scene import Layout, Part, jittered
from ad_pipeline.data.synthetic.shapes import smooth_noise, wavy_path

WIDTH, HEIGHT = 192, 256
CLASS_NAMES = ("background", "connector_block", "pin", "cable")
BLOCK, PIN, CABLE = 1, 2, 3
VARIANTS: dict[str, tuple[int, RGB]] = {  # variant -> (pins per block, cable colour)
    "two_pin": (2, (0.92, 0.80, 0.15)),
    "three_pin": (3, (0.15, 0.38, 0.85)),
    "five_pin": (5, (0.85, 0.18, 0.16)),
}
TOP, BOTTOM = (96.0, 50.0), (96.0, 206.0)
BLOCK_HEIGHT, PIN_PITCH = 38.0, 15.0


def block_width(pins: int) -> float:
    return 18.0 + PIN_PITCH * pins


def block_parts(rng: np.random.Generator, end: str, centre: tuple[float, float], angle: float, pins: int) -> list[Part]:
    """A housing (``<end>_block``) with ``pins`` levers (``<end>_pin``) along its long axis."""
    cx, cy = centre
    housing = Part(f"{end}_block", BLOCK, jittered(rng, (0.93, 0.93, 0.95), 0.02), "box",
                   dict(cx=cx, cy=cy, w=block_width(pins), h=BLOCK_HEIGHT, angle=angle, radius=5.0))
    c, s = np.cos(np.deg2rad(angle)), np.sin(np.deg2rad(angle))
    levers = []
    for k in range(pins):
        off = PIN_PITCH * (k - (pins - 1) / 2)
        levers.append(Part(f"{end}_pin", PIN, jittered(rng, (0.95, 0.58, 0.12)), "box",
                           dict(cx=cx + off * c, cy=cy + off * s, w=9.0, h=18.0, angle=angle, radius=2.0)))
    return [housing, *levers]


def cable_part(rng: np.random.Generator, top: tuple[float, float], bottom: tuple[float, float], colour: RGB) -> Part:
    """A bowed cable whose ends reach 9 px into both housings."""
    start = np.array([top[0], top[1] + BLOCK_HEIGHT / 2 - 9], dtype=np.float32)
    end = np.array([bottom[0], bottom[1] - BLOCK_HEIGHT / 2 + 9], dtype=np.float32)
    return Part("cable", CABLE, jittered(rng, colour), "line", dict(points=wavy_path(rng, start, end, bend=16.0), width=10.0))


def _assemble(rng: np.random.Generator, top: tuple[float, float], bottom: tuple[float, float],
              pins: tuple[int, int], colour: RGB) -> Layout:
    parts = [cable_part(rng, top, bottom, colour)]
    parts += block_parts(rng, "top", top, rng.uniform(-4, 4), pins[0])
    parts += block_parts(rng, "bottom", bottom, rng.uniform(-4, 4), pins[1])
    return Layout((), tuple(parts))


def _ends(rng: np.random.Generator) -> tuple[tuple[float, float], tuple[float, float]]:
    top = (TOP[0] + rng.uniform(-5, 5), TOP[1] + rng.uniform(-3, 3))
    bottom = (BOTTOM[0] + rng.uniform(-5, 5), BOTTOM[1] + rng.uniform(-3, 3))
    return top, bottom


def layout(rng: np.random.Generator, variant: str | None) -> Layout:
    pins, colour = VARIANTS[variant]
    top, bottom = _ends(rng)
    return _assemble(rng, top, bottom, (pins, pins), colour)


def backdrop(rng: np.random.Generator) -> np.ndarray:
    """Blue-grey work surface [H,W,3]."""
    surface = 1.0 + 0.04 * smooth_noise(rng, HEIGHT, WIDTH, cell=20)
    return surface[..., None] * np.float32([0.50, 0.55, 0.60])


def _other_variant(rng: np.random.Generator, variant: str) -> str:
    others = [v for v in VARIANTS if v != variant]
    return others[int(rng.integers(len(others)))]


# ---- logical anomalies: (rng, variant) -> (layout, parts whose footprint is the mask) ----

def wrong_pin_count(rng: np.random.Generator, variant: str) -> tuple[Layout, list[Part]]:
    """One block carries another variant's number of pins."""
    pins = VARIANTS[variant][0]
    wrong = VARIANTS[_other_variant(rng, variant)][0]
    top, bottom = _ends(rng)
    end = ("top", "bottom")[rng.integers(2)]
    lay = _assemble(rng, top, bottom, (wrong, pins) if end == "top" else (pins, wrong), VARIANTS[variant][1])
    housing = lay.parts[lay.find(f"{end}_block")[0]]
    expected = housing.with_geom(w=block_width(pins))
    return lay, [housing, expected]


def wrong_cable_colour(rng: np.random.Generator, variant: str) -> tuple[Layout, list[Part]]:
    top, bottom = _ends(rng)
    pins = VARIANTS[variant][0]
    lay = _assemble(rng, top, bottom, (pins, pins), VARIANTS[_other_variant(rng, variant)][1])
    return lay, [lay.parts[lay.find("cable")[0]]]


def missing_cable(rng: np.random.Generator, variant: str) -> tuple[Layout, list[Part]]:
    lay = layout(rng, variant)
    i = lay.find("cable")[0]
    return lay.with_parts(lay.parts[:i] + lay.parts[i + 1:]), [lay.parts[i]]


def short_cable(rng: np.random.Generator, variant: str) -> tuple[Layout, list[Part]]:
    """The bottom block sits ~45 px too high on a shortened cable; mask = cable and both block positions."""
    pins, colour = VARIANTS[variant]
    top, bottom = _ends(rng)
    lay = _assemble(rng, top, (bottom[0], bottom[1] - rng.uniform(40, 50)), (pins, pins), colour)
    housing = lay.parts[lay.find("bottom_block")[0]]
    return lay, [lay.parts[lay.find("cable")[0]], housing, housing.with_geom(cx=bottom[0], cy=bottom[1])]


LOGICAL = {
    "wrong_pin_count": wrong_pin_count,
    "wrong_cable_colour": wrong_cable_colour,
    "missing_cable": missing_cable,
    "short_cable": short_cable,
}


# ---- structural anomalies: (rng, canvas, layout) -> mask ----

def broken_block(rng: np.random.Generator, canvas: Canvas, lay: Layout) -> np.ndarray:
    """A chunk broken off a corner of one housing."""
    housing = lay.parts[lay.find(("top_block", "bottom_block")[rng.integers(2)])[0]]
    g = housing.geom
    c, s = np.cos(np.deg2rad(g["angle"])), np.sin(np.deg2rad(g["angle"]))
    u, v = rng.choice([-1.0, 1.0], 2) * np.array([g["w"] / 2, g["h"] / 2])
    corner = np.array([g["cx"] + u * c - v * s, g["cy"] + u * s + v * c], dtype=np.float32)
    return damage.break_off(canvas, rng, corner, rng.uniform(12, 15), housing.sd(canvas.grid))


def damaged_cable(rng: np.random.Generator, canvas: Canvas, lay: Layout) -> np.ndarray:
    """Torn insulation showing the copper core, somewhere along the middle of the cable."""
    points = lay.parts[lay.find("cable")[0]].geom["points"]
    site = points[int(rng.integers(3, len(points) - 3))]
    return damage.stain(canvas, rng, site, rng.uniform(5, 7), colour=(0.80, 0.50, 0.25))


def contamination(rng: np.random.Generator, canvas: Canvas, lay: Layout) -> np.ndarray:
    """A foreign-colour smear on a housing or the surface next to the cable."""
    p = lay.parts[int(rng.integers(len(lay.parts)))]
    site = np.array([p.geom["cx"], p.geom["cy"]]) if "cx" in p.geom else p.geom["points"][len(p.geom["points"]) // 2]
    return damage.stain(canvas, rng, np.asarray(site, dtype=np.float32) + rng.uniform(-8, 8, 2), rng.uniform(7, 11))


STRUCTURAL = {"broken_block": broken_block, "damaged_cable": damaged_cable, "contamination": contamination}
