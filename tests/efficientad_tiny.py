"""Tiny EfficientAD set-ups shared by the EfficientAD, PUAD and export tests (no network)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ad_pipeline.components.student_teacher.pdn import PDN
from ad_pipeline.methods.base import RunContext
from ad_pipeline.methods.efficientad.distill import TeacherState
from ad_pipeline.methods.efficientad.method import EfficientAD, EfficientADConfig
from ad_pipeline.methods.efficientad.teacher_files import save_teacher

TINY = {"image_size": 64, "channels": 16, "width_divisor": 8}


def make_images(folder: Path, n: int, seed: int, size: int = 64, defect: bool = False) -> list[Path]:
    """n striped RGB PNGs with mild noise; ``defect`` paints a bright 12×12 square."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    paths = []
    for i in range(n):
        base = 128 + 60 * np.sin(xx / 4.0 + rng.uniform(0, 0.3))
        img = np.stack([base, base * 0.8, 255 - base], axis=-1) + rng.normal(0, 4, (size, size, 3))
        if defect:
            img[20:32, 30:42] = 255
        path = folder / f"{i:03d}.png"
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path)
        paths.append(path)
    return paths


def tiny_teacher_dir(folder: Path, size: str = "small", seed: int = 0) -> Path:
    """A seeded random-init tiny teacher saved as the teacher stage would."""
    torch.manual_seed(seed)
    pdn = PDN(size, TINY["channels"], padding=True, width_divisor=TINY["width_divisor"])
    save_teacher(TeacherState(pdn, size, {"source": "test", "channels": TINY["channels"],
                                          "width_divisor": TINY["width_divisor"]}), folder)
    return folder


def tiny_dataset(root: Path) -> dict[str, list[Path]]:
    return {"train": make_images(root / "train", 6, seed=1), "validation": make_images(root / "val", 3, seed=2),
            "good": make_images(root / "test_good", 2, seed=3),
            "bad": make_images(root / "test_bad", 2, seed=4, defect=True)}


def fit_tiny(root: Path, data: dict[str, list[Path]], *, seed: int = 0, steps: int = 4, size: str = "small",
             **overrides) -> EfficientAD:
    ctx = RunContext(seed=seed, progress=False, upstream_dirs={"efficientad_teacher": tiny_teacher_dir(root / "teacher", size)})
    cfg = EfficientADConfig(model_size=size, steps=steps, **TINY, **overrides)
    method = EfficientAD(cfg, ctx)
    method.fit(data["train"], data["validation"])
    return method


