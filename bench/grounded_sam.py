"""Grounded-SAM CPU cost, random-init weights, one thread: build time of GroundingDINO Swin-T
and SAM-HQ (vit_tiny, vit_h), and per-image time of each model call on one LOCO-sized image
(1600×1100, synthetic tray scene upscaled).

    python bench/grounded_sam.py [--quick]

Measured: DINO detection at its input size (800, paper), SAM image encoding (``set_image``, 1024
px, fixed), one decoder call for 16 boxes (the ``no_sam`` path's batch) and one for 16 points ×
3 masks (the automatic generator's batch). Derived per-image estimates: ``no_sam`` = detect +
encode + ⌈boxes/16⌉ box batches; automatic path (paper settings: 32² points, crop_n_layers 1 →
5 crops) = no_sam + 5 encodings + 5·1024/16 point batches + 1 corner-point call. Random weights
change no cost except the number of boxes, which is a parameter here (``--boxes``, 16).
``--quick``: vit_tiny only, DINO at 224 px. Prints a table and writes
bench/results/grounded_sam.json. Shared machine: compare the ratios of one run.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ad_pipeline.data.synthetic.loco import CATEGORIES, render_image
from ad_pipeline.seed import seeded
from ad_pipeline.segmentation.grounded_sam import caption_of
from ad_pipeline.segmentation.grounding_dino import build_grounding_dino, detect

RESULTS = Path(__file__).parent / "results" / "grounded_sam.json"
PROMPT = "almond. apple. container. oatmeal. orange. banana"
LOCO_SIZE = (1600, 1100)  # width, height of MVTec LOCO breakfast_box images
BATCH = 16
AUTO_CROPS, AUTO_POINTS = 5, 32 * 32


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def loco_image() -> np.ndarray:
    image, _, _ = render_image(CATEGORIES[0], np.random.default_rng(0), "good", 0, None)
    return np.asarray(Image.fromarray(image).resize(LOCO_SIZE, Image.BILINEAR))


def bench_sam(variant: str, rgb: np.ndarray) -> dict[str, float]:
    from segment_anything_hq import SamPredictor, sam_model_registry

    with seeded(0):
        sam, build_s = timed(lambda: sam_model_registry[variant](checkpoint=None).eval())
    predictor = SamPredictor(sam)
    _, encode_s = timed(lambda: predictor.set_image(rgb))
    h, w = rgb.shape[:2]
    boxes = torch.tensor([[w * 0.1, h * 0.1, w * 0.5, h * 0.5]] * BATCH)
    box_prompts = predictor.transform.apply_boxes_torch(boxes, (h, w))
    _, boxes_s = timed(lambda: predictor.predict_torch(None, None, boxes=box_prompts, multimask_output=False))
    points = predictor.transform.apply_coords_torch(torch.rand(BATCH, 1, 2) * torch.tensor([w, h]), (h, w))
    labels = torch.ones(BATCH, 1, dtype=torch.int)
    _, points_s = timed(lambda: predictor.predict_torch(points, labels, multimask_output=True))
    return {"build_s": build_s, "encode_s": encode_s, "decode_16_boxes_s": boxes_s, "decode_16_points_s": points_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="vit_tiny only, DINO at 224 px")
    parser.add_argument("--boxes", type=int, default=16, help="boxes per image for the no_sam estimate")
    args = parser.parse_args()
    torch.set_num_threads(1)
    short_side = 224 if args.quick else 800
    variants = ["vit_tiny"] if args.quick else ["vit_tiny", "vit_h"]
    rgb = loco_image()
    with seeded(0):
        dino, dino_build_s = timed(lambda: build_grounding_dino(checkpoint=None, bert_dir=None, vocabulary=PROMPT))
    _, detect_s = timed(lambda: detect(dino, rgb, caption_of(PROMPT), box_threshold=0.25, text_threshold=0.2,
                                       short_side=short_side))
    del dino
    rows = {}
    for variant in variants:
        sam = bench_sam(variant, rgb)
        no_sam = detect_s + sam["encode_s"] + math.ceil(args.boxes / BATCH) * sam["decode_16_boxes_s"]
        auto = (no_sam + AUTO_CROPS * sam["encode_s"] + AUTO_CROPS * AUTO_POINTS / BATCH * sam["decode_16_points_s"]
                + sam["decode_16_boxes_s"] / BATCH)
        rows[variant] = {**sam, "no_sam_per_image_s": no_sam, "automatic_per_image_s": auto}
    result = {"machine": platform.processor() or platform.machine(), "threads": 1, "image": list(LOCO_SIZE),
              "dino_short_side": short_side, "dino_build_s": dino_build_s, "dino_detect_s": detect_s,
              "boxes": args.boxes, "sam": rows}
    print(f"GroundingDINO Swin-T random init: build {dino_build_s:.1f} s, detect @{short_side} {detect_s:.1f} s")
    print(f"{'SAM-HQ':9} {'build':>7} {'encode':>7} {'16 box':>7} {'16 pt':>7} {'no_sam/img':>11} {'auto/img':>9}")
    for variant, r in rows.items():
        print(f"{variant:9} {r['build_s']:7.1f} {r['encode_s']:7.1f} {r['decode_16_boxes_s']:7.2f} "
              f"{r['decode_16_points_s']:7.2f} {r['no_sam_per_image_s']:11.1f} {r['automatic_per_image_s']:9.0f}")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
