"""Image sources and augmentations of the student–teacher training (EfficientAD, CSAD's LGST, PUAD).

Images are kept un-normalised (uint8 in memory, float [0,1] while augmenting) and ImageNet
normalisation is applied exactly once, by :func:`normalize`, right before a network sees
them. All randomness comes from an explicit ``torch.Generator``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
import torchvision.transforms.functional as TF
from PIL import Image

from ad_pipeline.data.images import IMAGE_SUFFIXES, IMAGENET_MEAN, IMAGENET_STD, load_batch, load_rgb, normalized_batch
from ad_pipeline.errors import UserError

log = logging.getLogger(__name__)

_IDENTITY = {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)}


def load_unit(paths: Sequence[Path], size: int) -> torch.Tensor:
    """Images resized (bilinear, squashed) to size×size as float [B,3,size,size] in [0,1]."""
    return load_batch(list(paths), size, **_IDENTITY)


def load_uint8(paths: Sequence[Path], size: int, chunk: int = 32) -> torch.Tensor:
    """Like :func:`load_unit` but stored as uint8 [N,3,size,size] (N·3·size² bytes)."""
    parts = [load_unit(paths[i:i + chunk], size).mul_(255).round_().to(torch.uint8) for i in range(0, len(paths), chunk)]
    return torch.cat(parts) if parts else torch.empty(0, 3, size, size, dtype=torch.uint8)


def normalize(x: torch.Tensor, mean: Sequence[float] = IMAGENET_MEAN,
              std: Sequence[float] = IMAGENET_STD) -> torch.Tensor:
    """[B,3,H,W] in [0,1] → (x − mean)/std per channel. The one place normalisation happens."""
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - m) / s


def list_images(folder: str | Path) -> list[Path]:
    """All image files below ``folder`` (recursive), sorted; UserError when there are none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError("pretrain_images folder not found", path=folder,
                        fix="point pretrain_images at a folder of generic images (e.g. ImageNet train) or set it to null")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise UserError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in the pretrain_images folder", path=folder,
                        fix="put generic images there or set pretrain_images to null")
    return files


def resolve_pretrain_images(folder: str | Path | None, fallback: Sequence[Path]) -> tuple[list[Path], bool]:
    """(images, used_fallback): the ``folder``'s images, or ``fallback`` with a loud warning when None."""
    if folder is not None:
        return list_images(folder), False
    if not fallback:
        raise UserError("pretrain_images is null and there are no training images to fall back on",
                        fix="set pretrain_images to a folder of generic images")
    log.warning("pretrain_images is null: using the dataset's own training images as generic images "
                "(documented fallback; results are not comparable to ImageNet-based numbers)")
    return list(fallback), True


def grayscale_where(x: torch.Tensor, pick: torch.Tensor) -> torch.Tensor:
    """Replace the images of [B,3,H,W] selected by the bool mask ``pick`` [B] by their grey version."""
    if pick.any():
        x = x.clone()
        x[pick] = TF.rgb_to_grayscale(x[pick], num_output_channels=3)
    return x


_COLOR_JITTERS = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation)


def autoencoder_augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """One of brightness / contrast / saturation, chosen uniformly, factor λ ~ U(0.8, 1.2), per image."""
    out = []
    for img in x:
        which = int(torch.randint(len(_COLOR_JITTERS), (1,), generator=gen))
        factor = 0.8 + 0.4 * float(torch.rand(1, generator=gen))
        out.append(_COLOR_JITTERS[which](img, factor))
    return torch.stack(out)


def shuffled_batches(n: int, batch_size: int, gen: torch.Generator) -> Iterator[torch.Tensor]:
    """Infinite stream of index batches: a fresh permutation of range(n) per epoch (last partial batch kept)."""
    while True:
        perm = torch.randperm(n, generator=gen)
        yield from perm.split(batch_size)


class PenaltyImages:
    """Generic images for the student's penalty loss, loaded on demand.

    Each draw: a random file, resized to 2·size square, RandomGrayscale(p), centre crop size×size.
    The grey version is PIL's 8-bit "L" conversion of the resized image, as torchvision's
    RandomGrayscale makes it in the reference loaders (docs/parity.md). Memory: one batch at a time.
    """

    def __init__(self, paths: Sequence[Path], size: int, grayscale_p: float = 0.3):
        self.paths = list(paths)
        self.size = size
        self.grayscale_p = grayscale_p

    def sample(self, batch_size: int, gen: torch.Generator) -> torch.Tensor:
        """[batch_size,3,size,size] in [0,1]."""
        idx = torch.randint(len(self.paths), (batch_size,), generator=gen).tolist()
        grey = (torch.rand(batch_size, generator=gen) < self.grayscale_p).tolist()
        side = 2 * self.size
        images = [load_rgb(self.paths[i]).resize((side, side), Image.BILINEAR) for i in idx]
        images = [TF.rgb_to_grayscale(im, num_output_channels=3) if g else im for im, g in zip(images, grey)]
        return TF.center_crop(normalized_batch(images, **_IDENTITY), [self.size, self.size])
