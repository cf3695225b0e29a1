"""Image and mask loading: any PIL mode (L, RGBA, P, 16-bit I;16) to RGB; batches to tensors."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ad_pipeline.errors import LayoutError, UserError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")  # every format PIL reads here; lower case

_RESAMPLE = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST,
             "lanczos": Image.LANCZOS}


def open_image(path: str | Path) -> Image.Image:
    """Open and fully decode an image; a corrupt or unreadable file raises LayoutError naming it."""
    try:
        with Image.open(path) as im:
            im.load()
            return im.copy()
    except FileNotFoundError:
        raise LayoutError("image file not found", path=path, fix="check the dataset root and re-run prepare") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise LayoutError(f"unreadable or corrupt image ({e})", path=path,
                          fix="replace or remove the file, then re-run prepare") from None


def to_rgb(im: Image.Image) -> Image.Image:
    """Convert any mode to 8-bit RGB. 16/32-bit grey images are rescaled by their bit depth."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(im, dtype=np.float64)
        scale = 65535.0 if im.mode.startswith("I;16") or arr.max() > 255 else 255.0
        im = Image.fromarray(np.clip(arr / scale * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")
    elif im.mode == "F":
        arr = np.asarray(im, dtype=np.float64)
        im = Image.fromarray(np.clip(arr * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        background = Image.new("RGBA", im.size, (0, 0, 0, 255))
        im = Image.alpha_composite(background, im)
    return im.convert("RGB")


def load_rgb(path: str | Path) -> Image.Image:
    return to_rgb(open_image(path))


def load_mask(path: str | Path) -> np.ndarray:
    """Load a mask as uint8 [H,W] keeping its raw values (LOCO channels carry a pixel value)."""
    im = open_image(path)
    arr = np.asarray(im)
    if arr.ndim == 3:
        arr = arr[..., 0]
    if arr.dtype != np.uint8:
        arr = (arr > 0).astype(np.uint8) * 255
    return arr


def crop_resize_pad(im: Image.Image, size: int, *, margin: int = 0, pad_square: bool = True,
                    resample: str = "bicubic", rounding: str = "round") -> Image.Image:
    """Remove ``margin`` px from every side, then resize the longer side to ``size`` (``resample``)
    and zero-pad to ``size × size`` with the content in the top-left corner; ``pad_square=False``
    squashes to ``size × size`` instead (PSAD's preprocessing, psad.md §1). Resized sides are
    rounded (``rounding="round"``) or truncated (``"floor"``, the PSAD seed's ``int()``)."""
    w, h = im.size
    if 2 * margin >= min(w, h):
        raise UserError(f"crop {margin} px per side leaves nothing of a {w}×{h} image",
                        fix="lower the crop margin or use larger images")
    if margin:
        im = im.crop((margin, margin, w - margin, h - margin))
        w, h = im.size
    if not pad_square:
        return im.resize((size, size), _RESAMPLE[resample])
    scale = size / max(w, h)
    fit = round if rounding == "round" else int
    im = im.resize((max(1, fit(w * scale)), max(1, fit(h * scale))), _RESAMPLE[resample])
    canvas = Image.new(im.mode, (size, size), 0)
    if im.mode == "P":
        canvas.putpalette(im.getpalette())
    canvas.paste(im, (0, 0))
    return canvas


def image_size(path: str | Path) -> tuple[int, int]:
    """(height, width) without decoding the pixels."""
    try:
        with Image.open(path) as im:
            return im.size[1], im.size[0]
    except (FileNotFoundError, UnidentifiedImageError, OSError) as e:
        raise LayoutError(f"unreadable image ({e})", path=path, fix="replace or remove the file") from None


def load_batch(
    paths: Sequence[str | Path],
    size: int | tuple[int, int],
    *,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    resample: str = "bilinear",
) -> torch.Tensor:
    """Load images as a normalised float tensor [B,3,H,W] resized (squashed) to ``size``."""
    h, w = (size, size) if isinstance(size, int) else size
    return normalized_batch([load_rgb(p).resize((w, h), _RESAMPLE[resample]) for p in paths], mean=mean, std=std)


def normalized_batch(images: Sequence[Image.Image], *, mean: Sequence[float] = IMAGENET_MEAN,
                     std: Sequence[float] = IMAGENET_STD) -> torch.Tensor:
    """Same-size RGB images → normalised float tensor [B,3,H,W]."""
    arrays = [np.asarray(im, dtype=np.float32) for im in images]
    x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).div_(255.0)
    m = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return (x - m) / s
