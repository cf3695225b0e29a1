"""Inputs shared by the PSAD parity test and the script that writes its official fixtures.

A LOCO-style folder of seeded, already preprocessed square images (the official scorer reads
``orig_512/<obj>/<split>/<type>/*.png`` as they are, at any size) with seeded blocky part maps
(``seg/...``, also under the folder name the official PatchCore data set opens), for the official
category ``breakfast_box`` (7 classes incl. background, hard-coded there). Weights: the seed-0
random init of our ``resnet101`` (feature encoder) and ``wide_resnet101_2`` (PatchCore), loaded
into the official torchvision / timm modules with ``strict=True``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

SEED = 0
OBJ = "breakfast_box"
NUM_CLASSES = 7
IMAGE_SIZE = 128  # PSAD's 512² scaled down (the official scorer upsamples to whatever it reads)
PATCH_SIZE = 64  # official PatchCore ``--size``: 8×8 layer2 grid
SEG_DIR = "seg"
PC_SEG_DIR = "orig_512_seg_scratch_3level_unet"  # opened (unused) by the official PatchCore data set
SPLITS = {"train/good": 6, "test/good": 2, "test/logical_anomalies": 2, "test/structural_anomalies": 1}
# source sizes (W, H) of the real LOCO categories for the preprocessing comparison, and the crop
PREPROCESS_CASES = {"breakfast_box": ((1600, 1280), 0), "juice_bottle": ((800, 1600), 0),
                    "pushpins": ((1700, 1000), 0), "screw_bag": ((1600, 1100), 150),
                    "splicing_connectors": ((1700, 850), 0)}


def _image(rng: np.random.Generator, size: int) -> Image.Image:
    low = rng.integers(0, 256, (size // 8, size // 8, 3), dtype=np.uint8)
    smooth = np.asarray(Image.fromarray(low).resize((size, size), Image.BICUBIC), dtype=np.int16)
    return Image.fromarray(np.clip(smooth + rng.integers(-20, 21, smooth.shape), 0, 255).astype(np.uint8))


def _part_map(rng: np.random.Generator, size: int) -> Image.Image:
    low = rng.integers(0, NUM_CLASSES, (8, 8), dtype=np.uint8)
    return Image.fromarray(low).resize((size, size), Image.NEAREST)


def write_dataset(root: Path) -> dict[str, list[Path]]:
    """``root/{orig_512,seg,<PC_SEG_DIR>}/breakfast_box/<split>/<type>/<i:03d>.png`` → {split/type: image paths}."""
    rng = np.random.default_rng(SEED)
    out = {}
    for split, n in SPLITS.items():
        out[split] = []
        for i in range(n):
            name = f"{split}/{i:03d}.png"
            for folder, im in (("orig_512", _image(rng, IMAGE_SIZE)), (SEG_DIR, _part_map(rng, IMAGE_SIZE))):
                p = root / folder / OBJ / name
                p.parent.mkdir(parents=True, exist_ok=True)
                im.save(p)
                if folder == SEG_DIR:
                    (root / PC_SEG_DIR / OBJ / name).parent.mkdir(parents=True, exist_ok=True)
                    im.save(root / PC_SEG_DIR / OBJ / name)
            out[split].append(root / "orig_512" / OBJ / name)
    return out


def content_extent(a: np.ndarray) -> list[int]:
    """[rows, columns] spanned by the non-zero pixels of a top-left-padded image or label [H,W(,3)]."""
    nz = a.reshape(a.shape[0], a.shape[1], -1) > 0
    return [int(np.any(nz, axis=ax).nonzero()[0].max()) + 1 for ax in ((1, 2), (0, 2))]


def source_image(obj: str) -> Image.Image:
    """A seeded RGB image of ``obj``'s real LOCO size (preprocessing comparison)."""
    (w, h), _ = PREPROCESS_CASES[obj]
    return _image(np.random.default_rng(list(PREPROCESS_CASES).index(obj)), 8 * (max(w, h) // 8)).resize((w, h))


FEWSHOT_SIZE, FEWSHOT_SHOTS, FEWSHOT_UNLABELLED = 64, 2, 4  # batch 2: the 2 shots + 2 unlabelled images, 2 steps


def write_fewshot(root: Path) -> list[Path]:
    """``root/{Images_512,Annotations_512}/breakfast_box/<i:03d>.png``: 6 seeded 64² images with part
    maps (the first ``FEWSHOT_SHOTS`` are the labelled shots) → the image paths, sorted."""
    rng = np.random.default_rng(SEED + 1)
    paths = []
    for i in range(FEWSHOT_SHOTS + FEWSHOT_UNLABELLED):
        image, part_map = _image(rng, FEWSHOT_SIZE), _part_map(rng, FEWSHOT_SIZE)
        for folder, im in (("Images_512", image), ("Annotations_512", part_map)):
            p = root / folder / OBJ / f"{i:03d}.png"
            p.parent.mkdir(parents=True, exist_ok=True)
            im.save(p)
        paths.append(root / "Images_512" / OBJ / f"{i:03d}.png")
    return paths


def fewshot_segmenter():
    """Our seed-0 few-shot segmenter (random-init WRN-101-2 trunk + head, torch seeded for the head)."""
    import torch

    from ad_pipeline.backbones import build_backbone
    from ad_pipeline.segmentation.models import CoordSegmenter

    torch.manual_seed(SEED)
    enc = build_backbone("wide_resnet101_2", pretrained="false", seed=SEED, trainable=True)
    return CoordSegmenter(enc, NUM_CLASSES, coord_levels=255)


def retrain_segmenter():
    """Our seed-0 second-stage network (random-init WRN-101-2 trunk, coordinates ×30, 8-bit)."""
    import torch

    from ad_pipeline.backbones import build_backbone
    from ad_pipeline.segmentation.models import ResidualCoordSegmenter

    torch.manual_seed(SEED)
    enc = build_backbone("wide_resnet101_2", pretrained="false", seed=SEED, trainable=True)
    return ResidualCoordSegmenter(enc, NUM_CLASSES, coord_scale=30.0, coord_levels=255)
