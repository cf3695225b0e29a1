"""PSAD's per-category preprocessing and label conversion (psad.md §1).

One function, :func:`preprocess`, turns an image or its part label into the square network
input: crop ``crop`` px from every side (screw_bag: 150), resize so that the longer side is
``size`` (images: ``resample``, the seed's PIL default bicubic; labels: nearest), zero-pad to
``size × size`` with the content in the TOP-LEFT corner (screw_bag's crop: ``ad_pipeline.recipes``). Images and labels go through the same
call, so they stay pixel-aligned. ``pad_square: false`` squashes to ``size × size`` instead.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image, ImageDraw
from pydantic import BaseModel, ConfigDict, Field

from ad_pipeline.data.images import crop_resize_pad, load_mask, load_rgb, normalized_batch
from ad_pipeline.errors import UserError


class PreprocessConfig(BaseModel):
    """Crop / resize / pad of one category (seed: ``preprocess/preprocess.py``)."""

    model_config = ConfigDict(extra="forbid")

    crop: int = Field(0, ge=0)  # margin removed from every side, in source pixels
    pad_square: bool = True  # resize the longer side to the target and zero-pad bottom/right
    resample: Literal["bicubic", "bilinear"] = "bicubic"  # images; labels are always nearest
    # resized side lengths: "round" (the longer side is exactly the target); "floor" = the seed's
    # int(side · target / longer side), whose float error gives 511 for 1700 px → 512 (docs/parity.md)
    rounding: Literal["round", "floor"] = "round"


def preprocess(im: Image.Image, size: int, cfg: PreprocessConfig, *, label: bool = False) -> Image.Image:
    """Crop, resize and pad one image (``label=False``) or label map (``label=True``, nearest)."""
    w, h = im.size
    c = cfg.crop
    if 2 * c >= min(w, h):
        raise UserError(f"preprocess crop {c} px per side leaves nothing of a {w}×{h} image",
                        fix="lower psad.preprocess.crop for this category (its profile or ad_pipeline.recipes)")
    return crop_resize_pad(im, size, margin=c, pad_square=cfg.pad_square,
                           resample="nearest" if label else cfg.resample, rounding=cfg.rounding)


def load_preprocessed(paths: Sequence[str | Path], size: int, cfg: PreprocessConfig) -> torch.Tensor:
    """Normalised float [B,3,size,size] of preprocessed images."""
    return normalized_batch([preprocess(load_rgb(p), size, cfg) for p in paths])


def preprocess_label(mask: np.ndarray, size: int, cfg: PreprocessConfig) -> np.ndarray:
    """uint8 class map [H,W] → preprocessed uint8 [size,size] (nearest)."""
    return np.asarray(preprocess(Image.fromarray(np.asarray(mask, np.uint8)), size, cfg, label=True))


def load_preprocessed_label(path: str | Path, size: int, cfg: PreprocessConfig) -> np.ndarray:
    return preprocess_label(load_mask(path), size, cfg)


def polygons_to_mask(regions: Sequence[Mapping[str, Any]], height: int, width: int) -> np.ndarray:
    """VGG/makesense.ai polygon regions → uint8 class map [H,W] (0 = background).

    Each region: ``shape_attributes.all_points_x/y`` and ``region_attributes.label`` (class id).
    Regions are painted in reverse order, so an earlier region covers a later one (the seed's
    ``polygon2mask.py``).
    """
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    for r in reversed(list(regions)):
        shape = r["shape_attributes"]
        label = int(r["region_attributes"]["label"])
        draw.polygon(list(zip(shape["all_points_x"], shape["all_points_y"])), fill=label, outline=label)
    return np.asarray(canvas)
