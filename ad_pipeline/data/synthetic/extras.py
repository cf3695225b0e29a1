"""Small stand-ins for the other formats: a VisA raw tree, a BTAD product, generic images.

* ``visa_raw/pcb/Data/{Images/Normal,Images/Anomaly,Masks/Anomaly}``, ``pcb/image_anno.csv``,
  ``split_csv/1cls.csv`` — masks hold region ids 1, 2 (not 255), images are ``.JPG``, 224×176.
* ``btad_like/01/{train/ok,test/ok,test/ko}`` with ``.bmp`` (and some ``.png``) images and
  ``ground_truth/ko/<stem>.png`` 0/255 masks.
* ``generic_images/<class>/NNN.png`` — 8 classes × 8 random textures/shapes, 128×128 (ImageFolder).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from ad_pipeline.data.synthetic import damage
from ad_pipeline.data.synthetic.ad import render_weave
from ad_pipeline.data.synthetic.canvas import image_rng, to_uint8
from ad_pipeline.data.synthetic.layout import save_image, write_csv
from ad_pipeline.data.synthetic.scene import CameraJitter, Layout, Part, render
from ad_pipeline.data.synthetic.shapes import Grid, blob, box, coverage, disc, random_wobble, ring, smooth_noise

VISA_OBJECT, VISA_W, VISA_H = "pcb", 224, 176


def pcb_layout(rng: np.random.Generator) -> Layout:
    """A green board with two chips, four gold pads and a white header strip."""
    board = Part("board", 0, (0.10, 0.45, 0.22), "box", dict(cx=112.0, cy=88.0, w=200.0, h=150.0, angle=0.0, radius=8.0))
    parts = [Part("chip", 1, (0.10, 0.10, 0.12), "box",
                  dict(cx=x + rng.uniform(-2, 2), cy=70.0 + rng.uniform(-2, 2), w=44.0, h=30.0, angle=rng.uniform(-2, 2),
                       radius=2.0)) for x in (70.0, 150.0)]
    parts += [Part("pad", 2, (0.85, 0.70, 0.30), "disc", dict(cx=x, cy=128.0, r=7.0)) for x in (50.0, 90.0, 130.0, 170.0)]
    parts.append(Part("header", 3, (0.92, 0.92, 0.90), "box", dict(cx=112.0, cy=24.0, w=120.0, h=12.0, angle=0.0, radius=2.0)))
    return Layout((board,), tuple(parts))


def render_pcb(rng: np.random.Generator, regions: int) -> tuple[np.ndarray, np.ndarray]:
    """→ (uint8 [H,W,3], uint8 [H,W] mask with region ids 1..``regions``)."""
    camera = CameraJitter(angle=2.0, shift=3.0).sample(rng, VISA_W, VISA_H)
    lay = pcb_layout(rng)
    lay = Layout(tuple(map(camera, lay.base)), tuple(map(camera, lay.parts)))
    canvas = render(rng, lay, np.full((VISA_H, VISA_W, 3), 0.15, dtype=np.float32))
    ids = np.zeros((VISA_H, VISA_W), dtype=np.uint8)
    for k in range(regions):
        site = np.array([rng.uniform(40, 184), rng.uniform(40, 140)], dtype=np.float32)
        mask = damage.scratch(canvas, rng, site, rng.uniform(25, 40), colour=damage.BRIGHT) if k % 2 == 0 else \
            damage.stain(canvas, rng, site, rng.uniform(6, 9))
        ids[mask] = k + 1
    return canvas.finish(rng), ids


def write_visa(root: Path, seed: int, train: int = 12, test_normal: int = 4, anomalies: int = 4) -> dict:
    obj = root / VISA_OBJECT
    split_rows, anno_rows = [], []
    for i in range(train + test_normal):
        image, _ = render_pcb(image_rng(seed, "visa", "normal", i), 0)
        rel = f"{VISA_OBJECT}/Data/Images/Normal/{i:04d}.JPG"
        save_image(root / rel, image)
        split_rows.append([VISA_OBJECT, "train" if i < train else "test", "normal", rel, ""])
        anno_rows.append([rel, "normal", ""])
    for i in range(anomalies):
        image, ids = render_pcb(image_rng(seed, "visa", "anomaly", i), regions=2 if i % 2 == 0 else 1)
        rel, mask_rel = f"{VISA_OBJECT}/Data/Images/Anomaly/{i:03d}.JPG", f"{VISA_OBJECT}/Data/Masks/Anomaly/{i:03d}.png"
        save_image(root / rel, image)
        save_image(root / mask_rel, ids)
        split_rows.append([VISA_OBJECT, "test", "anomaly", rel, mask_rel])
        anno_rows.append([rel, "scratch,stain" if i % 2 == 0 else "scratch", mask_rel])
    write_csv(obj / "image_anno.csv", ["image", "label", "mask"], anno_rows)
    write_csv(root / "split_csv" / "1cls.csv", ["object", "split", "label", "image", "mask"], split_rows)
    return {VISA_OBJECT: {"train/normal": train, "test/normal": test_normal, "test/anomaly": anomalies}}


def write_btad(root: Path, seed: int, train: int = 10, test_ok: int = 3, test_ko: int = 4) -> dict:
    """Product ``01``: a tinted weave; ``ko`` images alternate .bmp / .png, masks are .png."""
    product, tint = root / "01", (0.95, 0.78, 0.55)
    for split, label, n in (("train", "ok", train), ("test", "ok", test_ok), ("test", "ko", test_ko)):
        for i in range(n):
            defect = ("scratch", "hole", "stain")[i % 3] if label == "ko" else None
            image, mask = render_weave(image_rng(seed, "btad", split, label, i), defect, tint=tint)
            ext = ".png" if label == "ko" and i % 2 == 1 else ".bmp"
            save_image(product / split / label / f"{i:04d}{ext}", image)
            if mask is not None:
                save_image(product / "ground_truth" / "ko" / f"{i:04d}.png", mask.astype(np.uint8) * 255)
    return {"01": {"train/ok": train, "test/ok": test_ok, "test/ko": test_ko}}


GENERIC_SIZE = 128


def _stripes(rng: np.random.Generator, g: Grid) -> np.ndarray:
    a = rng.uniform(0, np.pi)
    return 0.5 + 0.5 * np.sin((np.cos(a) * g.x + np.sin(a) * g.y) * rng.uniform(0.1, 0.5))


def _checks(rng: np.random.Generator, g: Grid) -> np.ndarray:
    p = rng.uniform(8, 24)
    return ((np.floor(g.x / p) + np.floor(g.y / p)) % 2).astype(np.float32)


def _dots(rng: np.random.Generator, g: Grid) -> np.ndarray:
    return np.max([coverage(disc(g, *rng.uniform(0, GENERIC_SIZE, 2), rng.uniform(3, 10))) for _ in range(12)], axis=0)


def _rings(rng: np.random.Generator, g: Grid) -> np.ndarray:
    r = rng.uniform(15, 50)
    return np.max([coverage(ring(g, *rng.uniform(20, 108, 2), r, r * 0.6)) for _ in range(3)], axis=0)


def _blobs(rng: np.random.Generator, g: Grid) -> np.ndarray:
    return np.max([coverage(blob(g, *rng.uniform(20, 108, 2), rng.uniform(12, 30), random_wobble(rng, strength=0.4)))
                   for _ in range(3)], axis=0)


def _boxes(rng: np.random.Generator, g: Grid) -> np.ndarray:
    return np.max([coverage(box(g, *rng.uniform(20, 108, 2), *rng.uniform(10, 50, 2), rng.uniform(0, 90)))
                   for _ in range(4)], axis=0)


def _clouds(rng: np.random.Generator, g: Grid) -> np.ndarray:
    return 0.5 + 0.2 * smooth_noise(rng, GENERIC_SIZE, GENERIC_SIZE, cell=rng.uniform(6, 20))


def _gradient(rng: np.random.Generator, g: Grid) -> np.ndarray:
    a = rng.uniform(0, 2 * np.pi)
    return (np.cos(a) * g.x + np.sin(a) * g.y) / (2 * GENERIC_SIZE) + 0.5


GENERIC_CLASSES: dict[str, Callable[[np.random.Generator, Grid], np.ndarray]] = {
    "stripes": _stripes, "checks": _checks, "dots": _dots, "rings": _rings,
    "blobs": _blobs, "boxes": _boxes, "clouds": _clouds, "gradient": _gradient,
}


def write_generic(root: Path, seed: int, per_class: int = 8) -> dict:
    """Each image mixes two random colours through a class-specific pattern in [0,1]."""
    g = Grid.of(GENERIC_SIZE, GENERIC_SIZE)
    for name, pattern in GENERIC_CLASSES.items():
        for i in range(per_class):
            rng = image_rng(seed, "generic", name, i)
            a, b = rng.uniform(0, 1, (2, 3)).astype(np.float32)
            t = np.clip(pattern(rng, g), 0, 1)[..., None]
            image = a + t * (b - a) + rng.normal(0, 0.02, (GENERIC_SIZE, GENERIC_SIZE, 3))
            save_image(root / name / f"{i:03d}.png", to_uint8(image))
    return {name: per_class for name in GENERIC_CLASSES}

