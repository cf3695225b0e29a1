"""CSAD segmentor augmentation cost: ms per image of the §2.2 chain (LSA + ShiftScaleRotate +
brightness/contrast) on the synthetic LOCO tray images, against ms per image of one segmentor
training step (the synthetic run's head on resnet18, random init, batch 4), at 128 and 256 px.

    python bench/csad_augment.py [--quick]

Needs data/synthetic/synthetic_loco (``ad-pipeline synthesize``). Prints a table and writes
bench/results/csad_augment.json. Shared machine: compare the ratios of one run.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ad_pipeline.backbones import build_backbone
from ad_pipeline.data.images import load_batch
from ad_pipeline.segmentation.augment import AugmentConfig, SupervisedAugment, lsa
from ad_pipeline.segmentation.models import FrozenEncoderSegmentor
from ad_pipeline.segmentation.proposers import PartLabelProposer
from ad_pipeline.segmentation.train import SegTrainConfig, segmentation_loss

RESULTS = Path(__file__).parent / "results" / "csad_augment.json"
TRAIN = Path("data/synthetic/synthetic_loco/tray/train/good")
BATCH = 4


def resized(array: np.ndarray, size: int) -> np.ndarray:
    return np.asarray(Image.fromarray(array).resize((size, size), Image.NEAREST))


def bench_size(paths: list[Path], size: int, repeats: int) -> dict[str, float]:
    proposer = PartLabelProposer()
    proposals = np.stack([resized(proposer.propose(p), size) for p in paths])
    labels = torch.from_numpy(proposals.astype(np.int64))  # one class per component: enough for timing
    images = load_batch(paths, size)
    augment = SupervisedAugment(AugmentConfig(), proposals)
    gen = torch.Generator().manual_seed(0)
    rows = torch.arange(len(paths))
    t0 = time.perf_counter()
    for _ in range(repeats):
        augment(images, labels, rows, gen)
    aug_ms = (time.perf_counter() - t0) * 1000 / (repeats * len(paths))

    rng = np.random.default_rng(0)
    blank = np.zeros((size, size, 3), np.float32)  # placements do not depend on the pixels
    copies = [len(lsa(blank, proposals[0], proposals[0], AugmentConfig(), rng)[2]) for _ in range(50)]

    torch.manual_seed(0)
    encoder = build_backbone("resnet18", pretrained="false", seed=0)
    model = FrozenEncoderSegmentor(encoder, int(proposals.max()) + 1, channels=16, low_out=8, bn_momentum=0.1)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.01)
    cfg = SegTrainConfig(ce_on_probs=False)
    x, y = images[:BATCH], labels[:BATCH]
    steps = max(2, repeats)
    t0 = time.perf_counter()
    for _ in range(steps):
        loss, _ = segmentation_loss(model, cfg, x, y, None, None, int(proposals.max()) + 1, False)
        opt.zero_grad()
        loss.backward()
        opt.step()
    step_ms = (time.perf_counter() - t0) * 1000 / (steps * BATCH)
    return {"augment_ms_per_image": aug_ms, "train_step_ms_per_image": step_ms, "overhead": aug_ms / step_ms,
            "mean_copies": float(np.mean(copies))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8 images, 2 repeats")
    args = parser.parse_args()
    torch.set_num_threads(1)
    paths = sorted(TRAIN.glob("*.png"))[: 8 if args.quick else 24]
    if not paths:
        raise SystemExit(f"{TRAIN} is empty: run `ad-pipeline synthesize` first")
    repeats = 2 if args.quick else 5
    rows = {size: bench_size(paths, size, repeats) for size in (128, 256)}
    print(f"{'size':>5} {'augment ms/img':>15} {'train step ms/img':>18} {'overhead':>9} {'copies':>7}")
    for size, r in rows.items():
        print(f"{size:>5} {r['augment_ms_per_image']:>15.2f} {r['train_step_ms_per_image']:>18.2f} "
              f"{r['overhead']:>8.1%} {r['mean_copies']:>7.2f}")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"machine": platform.processor() or platform.machine(), "threads": 1,
                                   "images": len(paths), "quick": args.quick, "results": rows}, indent=2))


if __name__ == "__main__":
    main()
