"""Inputs shared by the EfficientAD/PUAD parity test and the script that writes its official fixtures.

EfficientAD-S (and -M) networks at 256² with a 64-channel teacher (the official PDN_S / AutoEncoder take the
channel count as a parameter; the hidden widths are the paper's), seeded random init by our code,
and seeded random-noise PNGs in an MVTec-LOCO-style folder.
"""

from __future__ import annotations

import sys
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


def model(map_border: int, size: str = "small") -> EfficientADModel:
    torch.manual_seed(SEED)
    return EfficientADModel(size, IMAGE_SIZE, CHANNELS, map_border=map_border).eval()


def official_names(ours: dict[str, torch.Tensor], theirs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our tensors under the official module's names: same layers in the same order and shapes."""
    if len(ours) != len(theirs) or any(a.shape != b.shape for a, b in zip(ours.values(), theirs.values())):
        raise ValueError("layouts differ")
    return dict(zip(theirs, ours.values()))


# Training steps (student + autoencoder), driven on both sides with the same scripted draws.
TRAIN_STEPS = 3
TRAIN_SEED = 7  # torch's global RNG at the start of the loop (the autoencoder's dropout masks)
PERMUTATION = [2, 0, 1]  # training image of each step (one epoch of the shuffled loader, batch 1)
AUGMENT = [(1, 0.9), (2, 0.2), (0, 0.6)]  # (jitter: 0 brightness, 1 contrast, 2 saturation; u), λ = 0.8 + 0.4·u
PENALTY = [(0, False), (1, True), (0, False)]  # (generic image, grey) of each step
N_PENALTY = 2


def write_penalty_images(root: Path) -> list[Path]:
    """``root/generic/n0/img<i>.png`` (96² noise): an ImageFolder for the official loader, files for ours."""
    folder = root / "generic" / "n0"
    folder.mkdir(parents=True)
    return write_random_images(folder, N_PENALTY, 96, seed=20)


class ScriptedTorch:
    """Stand-in for a module's ``torch`` global: every attribute is torch's, except that ``rand``,
    ``randint`` and ``randperm`` called from a function named in ``script`` return that function's next
    scripted tensor (``script[(function name, draw name)]`` is a list consumed in order). Only while
    ``active``."""

    def __init__(self, script: dict[tuple[str, str], list[torch.Tensor]]):
        self.script = {k: list(v) for k, v in script.items()}
        self.active = True

    def __getattr__(self, name):
        return getattr(torch, name)

    def _draw(self, name, *args, **kwargs):
        key = (sys._getframe(2).f_code.co_name, name)
        if self.active and key in self.script:
            return self.script[key].pop(0)
        return getattr(torch, name)(*args, **kwargs)

    def rand(self, *args, **kwargs):
        return self._draw("rand", *args, **kwargs)

    def randint(self, *args, **kwargs):
        return self._draw("randint", *args, **kwargs)

    def randperm(self, *args, **kwargs):
        return self._draw("randperm", *args, **kwargs)

    def unused(self) -> dict[tuple[str, str], int]:
        return {k: len(v) for k, v in self.script.items() if v}


def subsample(t: torch.Tensor, n: int = 256) -> torch.Tensor:
    """About ``n`` evenly strided elements of the flattened tensor (weight updates in the fixture)."""
    flat = t.detach().flatten()
    return flat[::max(1, flat.numel() // n)][:n]
