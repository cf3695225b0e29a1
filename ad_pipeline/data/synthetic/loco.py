"""MVTec-LOCO-like categories (``tray``, ``connectors``) with part-label side channels.

Layout written per category::

    <category>/{train,validation,test}/good/000.png …
    <category>/test/{logical,structural}_anomalies/000.png …
    <category>/ground_truth/<type>/<stem>/000.png [001.png]   0 outside, pixel_value inside
    <category>/defects_config.json
    <category>/aux/part_labels/<split>/<type>/<stem>.png       uint8 class id, 0 = background
    <category>/aux/parts.json                                  num_classes, class_names[, variants]
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ad_pipeline.data.synthetic import connectors, tray
from ad_pipeline.data.synthetic.canvas import image_rng
from ad_pipeline.data.synthetic.layout import Row, save_image
from ad_pipeline.data.synthetic.scene import CameraJitter, Layout, LogicalAnomaly, StructuralAnomaly, render, union_mask

LOGICAL, STRUCTURAL = "logical_anomalies", "structural_anomalies"


@dataclass(frozen=True)
class LocoCategory:
    """A scene module bundled with its rules. ``saturation``: defect name → (threshold, relative)."""

    name: str
    width: int
    height: int
    class_names: tuple[str, ...]
    layout: Callable[[np.random.Generator, str | None], Layout]
    backdrop: Callable[[np.random.Generator], np.ndarray]
    logical: Mapping[str, LogicalAnomaly]
    structural: Mapping[str, StructuralAnomaly]
    saturation: Mapping[str, tuple[float, bool]]
    variants: tuple[str, ...] = ()

    def defects_config(self) -> list[dict]:
        """One entry per defect type; pixel values 255, 244, 233, … in logical-then-structural order."""
        names = [*self.logical, *self.structural]
        return [
            {"defect_name": n, "pixel_value": 255 - 11 * k,
             "saturation_threshold": self.saturation[n][0], "relative_saturation": self.saturation[n][1]}
            for k, n in enumerate(names)
        ]


CATEGORIES = (
    LocoCategory(
        "tray", tray.WIDTH, tray.HEIGHT, tray.CLASS_NAMES, tray.layout, tray.backdrop, tray.LOGICAL, tray.STRUCTURAL,
        saturation={"missing_component": (900, False), "extra_component": (1.0, True),
                    "misplaced_component": (0.5, True), "swapped_pairing": (1.0, True), "wrong_size": (1.0, True),
                    "scratch": (1.0, True), "hole": (1.0, True), "contamination": (150, False)},
    ),
    LocoCategory(
        "connectors", connectors.WIDTH, connectors.HEIGHT, connectors.CLASS_NAMES, connectors.layout,
        connectors.backdrop, connectors.LOGICAL, connectors.STRUCTURAL,
        saturation={"wrong_pin_count": (1.0, True), "wrong_cable_colour": (0.5, True), "missing_cable": (800, False),
                    "short_cable": (0.5, True), "broken_block": (1.0, True), "damaged_cable": (1.0, True),
                    "contamination": (150, False)},
        variants=tuple(connectors.VARIANTS),
    ),
)


@dataclass(frozen=True)
class LocoCounts:
    train: int = 48
    validation: int = 12
    test_good: int = 16
    logical: int = 12
    structural: int = 12

    def jobs(self) -> list[tuple[str, str, int]]:
        return [("train", "good", self.train), ("validation", "good", self.validation), ("test", "good", self.test_good),
                ("test", LOGICAL, self.logical), ("test", STRUCTURAL, self.structural)]


def render_image(cat: LocoCategory, rng: np.random.Generator, kind: str, index: int, variant: str | None
                 ) -> tuple[np.ndarray, np.ndarray, list[tuple[str, np.ndarray]]]:
    """→ (uint8 [H,W,3] image, uint8 [H,W] part labels, [(defect name, bool mask [H,W]), …]).

    Logical anomaly types cycle with ``index``; every 4th structural image gets a second damage.
    """
    camera = CameraJitter().sample(rng, cat.width, cat.height)
    mask_parts = []
    if kind == LOGICAL:
        rule = list(cat.logical)[index % len(cat.logical)]
        lay, mask_parts = cat.logical[rule](rng, variant)
    else:
        lay = cat.layout(rng, variant)
    lay = Layout(tuple(map(camera, lay.base)), tuple(map(camera, lay.parts)))
    canvas = render(rng, lay, cat.backdrop(rng))
    channels = []
    if kind == LOGICAL:
        channels.append((rule, union_mask(canvas.grid, [camera(p) for p in mask_parts])))
    elif kind == STRUCTURAL:
        names = list(cat.structural)
        picked = [names[index % len(names)]] + ([names[(index + 1) % len(names)]] if index % 4 == 3 else [])
        channels += [(n, cat.structural[n](rng, canvas, lay)) for n in picked]
    return canvas.finish(rng), canvas.labels, channels


def balanced_variants(rng: np.random.Generator, variants: tuple[str, ...], n: int) -> list[str | None]:
    """Each variant ⌊n/V⌋ or ⌈n/V⌉ times, in a seeded random order; ``[None]*n`` without variants."""
    if not variants:
        return [None] * n
    return [variants[k % len(variants)] for k in rng.permutation(n)]


def write_category(root: Path, seed: int, cat: LocoCategory, counts: LocoCounts = LocoCounts()) -> list[Row]:
    """Render and save one category under ``root/<name>``; return its manifest rows."""
    base = root / cat.name
    pixel_value = {d["defect_name"]: d["pixel_value"] for d in cat.defects_config()}
    rows, variant_of = [], {}
    for split, kind, n in counts.jobs():
        variants = balanced_variants(image_rng(seed, "synthetic_loco", cat.name, split, kind, "variants"), cat.variants, n)
        for i, variant in enumerate(variants):
            image, labels, channels = render_image(cat, image_rng(seed, "synthetic_loco", cat.name, split, kind, i),
                                                   kind, i, variant)
            rel = f"{split}/{kind}/{i:03d}.png"
            save_image(base / rel, image)
            save_image(base / "aux" / "part_labels" / split / kind / f"{i:03d}.png", labels)
            mask_paths = tuple(f"{cat.name}/ground_truth/{kind}/{i:03d}/{k:03d}.png" for k in range(len(channels)))
            for path, (name, mask) in zip(mask_paths, channels):
                save_image(root / path, mask.astype(np.uint8) * np.uint8(pixel_value[name]))
            if variant is not None:
                variant_of[rel] = variant
            rows.append(Row(cat.name, split, kind, f"{cat.name}/{rel}", mask_paths, ";".join(n for n, _ in channels)))
    (base / "defects_config.json").write_text(json.dumps(cat.defects_config(), indent=2) + "\n")
    parts = {"num_classes": len(cat.class_names), "class_names": list(cat.class_names)}
    if variant_of:
        parts["variants"] = variant_of
    (base / "aux" / "parts.json").write_text(json.dumps(parts, indent=2) + "\n")
    return rows
