"""Inputs shared by the PatchCore parity test and the script that writes its official fixtures.

Seeded random-noise PNGs in an MVTec-style folder, a seeded random-init WRN50-2 (ours, loaded
into torchvision's model on the official side), and a small IM-baseline-like configuration.
"""

from __future__ import annotations

from pathlib import Path

from tests.helpers import write_random_images

SEED = 0
RESIZE, IMAGE_SIZE = 80, 64  # 8×8 layer2 grid: 64 patches per image
CORESET_RATIO = 0.25
BACKBONE = "wide_resnet50_2"


def write_dataset(root: Path) -> tuple[list[Path], list[Path]]:
    """``root/bottle/{train,test}/good/img<i>.png``: 4 train and 2 test images (72×72, seeded)."""
    train_dir = root / "bottle" / "train" / "good"
    test_dir = root / "bottle" / "test" / "good"
    train_dir.mkdir(parents=True)
    test_dir.mkdir(parents=True)
    return write_random_images(train_dir, 4, 72, seed=1), write_random_images(test_dir, 2, 72, seed=2)


def config(**overrides) -> dict:
    return dict(backbone=BACKBONE, resize=RESIZE, image_size=IMAGE_SIZE, coreset_ratio=CORESET_RATIO,
                batch_size=2, knn_backend="torch") | overrides
