"""Mask proposers: image file → label image of candidate components (uint8 [H,W], 0 = none).

Every proposer returns components painted largest-first (values 1..n, n ≤ 255, 1 = largest),
so a small component lying on a larger one stays visible. The three implementations:

* ``PartLabelProposer`` — the generator's part maps (offline stand-in for Grounded-SAM).
* ``ColorComponentsProposer`` — colour quantisation + connected components, no weights.
* ``GroundedSamProposer`` (in ``grounded_sam.py``) — GroundingDINO boxes + SAM-HQ masks.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage

from ad_pipeline.data.images import load_mask, load_rgb
from ad_pipeline.errors import LayoutError

MAX_COMPONENTS = 255  # label images are uint8


class MaskProposer(abc.ABC):
    """Turns one image file into a label image of candidate components."""

    @abc.abstractmethod
    def propose(self, image_path: Path) -> np.ndarray:
        """uint8 [H,W] at the image's resolution; 0 = no component, 1..n largest first."""


def overlap_ratio(a: np.ndarray, b: np.ndarray) -> float:
    """|A∩B| / min(|A|,|B|) for boolean masks (0 when either is empty)."""
    smaller = min(int(a.sum()), int(b.sum()))
    return float(np.logical_and(a, b).sum()) / smaller if smaller else 0.0


def split_components(masks: Iterable[np.ndarray], *, min_area: int = 50, max_bbox_frac: float = 0.95) -> list[np.ndarray]:
    """Split boolean masks into 4-connected components; keep those with area > ``min_area``
    pixels whose bounding box covers < ``max_bbox_frac`` of the image."""
    kept = []
    for mask in masks:
        labelled, n = ndimage.label(mask)  # default structure = 4-connectivity
        image_area = mask.shape[0] * mask.shape[1]
        for i, box in enumerate(ndimage.find_objects(labelled), start=1):
            component = labelled[box] == i
            box_area = (box[0].stop - box[0].start) * (box[1].stop - box[1].start)
            if component.sum() > min_area and box_area < max_bbox_frac * image_area:
                full = np.zeros(mask.shape, dtype=bool)
                full[box] = component
                kept.append(full)
    return kept


def filter_by_combine(masks: Sequence[np.ndarray], *, min_area_frac: float = 0.001, threshold: float = 0.9) -> list[np.ndarray]:
    """Drop masks that mostly repeat others (csad.md §1.2 step 4).

    Masks below ``min_area_frac`` of the image are dropped; the rest are visited small to
    large and accepted when their overlap ratio with the union so far is < ``threshold``;
    deferred masks are accepted afterwards if < ``threshold`` of them is already covered.
    """
    if not masks:
        return []
    image_area = masks[0].size
    candidates = sorted((m for m in masks if m.sum() >= min_area_frac * image_area), key=lambda m: int(m.sum()))
    union = np.zeros(masks[0].shape, dtype=bool)
    accepted, deferred = [], []
    for m in candidates:
        if not accepted or overlap_ratio(union, m) < threshold:
            accepted.append(m)
            union |= m
        else:
            deferred.append(m)
    for m in deferred:
        if np.logical_and(union, m).sum() / m.sum() < threshold:
            accepted.append(m)
            union |= m
    return accepted


def paint_largest_first(masks: Sequence[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """Paint at most 255 boolean masks into uint8 [H,W]: value 1 = largest, smaller ones on top."""
    order = sorted(masks, key=lambda m: -int(m.sum()))[:MAX_COMPONENTS]
    out = np.zeros(shape, dtype=np.uint8)
    for value, m in enumerate(order, start=1):
        out[m] = value
    return out


def components_of_classes(class_map: np.ndarray, *, background: int, min_area: int) -> np.ndarray:
    """Label image of the connected components of every non-background value of ``class_map``."""
    masks = [class_map == v for v in np.unique(class_map) if v != background]
    return paint_largest_first(split_components(masks, min_area=min_area), class_map.shape)


def part_label_path(image_path: Path) -> Path:
    """``<cat>/<split>/<type>/<stem>.png`` → ``<cat>/aux/part_labels/<split>/<type>/<stem>.png``."""
    image_path = Path(image_path)
    category_root = image_path.parents[2]
    return category_root / "aux" / "part_labels" / image_path.parent.parent.name / image_path.parent.name / f"{image_path.stem}.png"


class PartLabelProposer(MaskProposer):
    """Components of the synthetic generator's part maps (uint8 class id per pixel, 0 = background)."""

    def __init__(self, min_area: int = 50):
        self.min_area = min_area

    def propose(self, image_path: Path) -> np.ndarray:
        path = part_label_path(image_path)
        if not path.exists():
            raise LayoutError("part label map not found", path=path,
                              fix="the 'part_labels' proposer needs the synthetic generator's aux/part_labels; "
                                  "re-run the synthesize stage or choose proposer 'color' / 'grounded_sam'")
        return components_of_classes(load_mask(path), background=0, min_area=self.min_area)


class ColorComponentsProposer(MaskProposer):
    """Uniform colour quantisation (``levels`` bins per RGB channel) + connected components.

    The most frequent quantised colour is taken as background. Needs no weights; works when
    parts differ in colour from each other and from the background (synthetic data).
    """

    def __init__(self, levels: int = 4, min_area: int = 50):
        if not 2 <= levels <= 256:
            raise ValueError(f"levels must be in [2, 256], got {levels}")
        self.levels = levels
        self.min_area = min_area

    def quantise(self, rgb: np.ndarray) -> np.ndarray:
        """uint8 [H,W,3] → int32 [H,W] colour code."""
        q = (rgb.astype(np.int32) * self.levels) // 256
        return (q[..., 0] * self.levels + q[..., 1]) * self.levels + q[..., 2]

    def propose(self, image_path: Path) -> np.ndarray:
        codes = self.quantise(np.asarray(load_rgb(image_path)))
        values, counts = np.unique(codes, return_counts=True)
        return components_of_classes(codes, background=int(values[np.argmax(counts)]), min_area=self.min_area)
