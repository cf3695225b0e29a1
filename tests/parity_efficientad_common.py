"""Inputs shared by the EfficientAD/PUAD parity test and the script that writes its official fixtures.

EfficientAD-S networks at 256² with a 64-channel teacher (the official PDN_S / AutoEncoder take the
channel count as a parameter; the hidden widths are the paper's), seeded random init by our code,
and seeded random-noise PNGs in an MVTec-LOCO-style folder.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ad_pipeline.components.student_teacher.model import EfficientADModel
from tests.helpers import write_random_images

SEED = 0
CHANNELS, IMAGE_SIZE = 64, 256
SPLITS = {"train/good": 3, "validation/good": 2, "test/good": 1, "test/bad": 1}


def write_dataset(root: Path) -> dict[str, list[Path]]:
    """``root/cat/<split>/img<i>.png`` (48×48 noise, seeded per split), sorted as both loaders read them."""
    out = {}
    for i, (split, n) in enumerate(SPLITS.items()):
        folder = root / "cat" / split
        folder.mkdir(parents=True)
        out[split] = write_random_images(folder, n, 48, seed=10 + i)
    return out


def model(map_border: int) -> EfficientADModel:
    torch.manual_seed(SEED)
    return EfficientADModel("small", IMAGE_SIZE, CHANNELS, map_border=map_border).eval()


def official_names(ours: dict[str, torch.Tensor], theirs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our tensors under the official module's names: same layers in the same order and shapes."""
    if len(ours) != len(theirs) or any(a.shape != b.shape for a, b in zip(ours.values(), theirs.values())):
        raise ValueError("layouts differ")
    return dict(zip(theirs, ours.values()))
