"""Writing images, masks and the ``manifest.csv`` of a synthetic dataset root."""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

MANIFEST_COLUMNS = ("category", "split", "type", "path", "mask_paths", "rule_violated")


@dataclass(frozen=True)
class Row:
    """One ``manifest.csv`` row; paths POSIX, relative to the dataset root."""

    category: str
    split: str
    type: str
    path: str
    mask_paths: tuple[str, ...] = ()
    rule_violated: str = ""


def save_image(path: Path, pixels: np.ndarray) -> None:
    """Save uint8 [H,W] (mode L) or [H,W,3] (RGB); the format follows the suffix (png, JPG, bmp);
    PNGs use fast zlib level 1.

    PIL writes no timestamps, so equal pixels give equal bytes.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8))
    if path.suffix.lower() in (".jpg", ".jpeg"):
        image.save(path, quality=95)
    else:
        image.save(path, compress_level=1)  # fast; files stay small at these sizes


def write_csv(path: Path, header: Iterable[str], rows: Iterable[Iterable[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def write_manifest(root: Path, rows: Iterable[Row]) -> None:
    """``root/manifest.csv`` with :data:`MANIFEST_COLUMNS`; mask paths are ``;``-joined."""
    write_csv(root / "manifest.csv", MANIFEST_COLUMNS,
              ([r.category, r.split, r.type, r.path, ";".join(r.mask_paths), r.rule_violated] for r in rows))


def count_rows(rows: Iterable[Row]) -> dict[str, dict[str, int]]:
    """``{category: {"split/type": n}}`` summary."""
    counts: dict[str, Counter] = {}
    for r in rows:
        counts.setdefault(r.category, Counter())[f"{r.split}/{r.type}"] += 1
    return {cat: dict(c) for cat, c in counts.items()}
