"""Benchmark of UniAD on CPU: training iterations/s and inference ms/image, with and without the
frozen-feature cache.

    python bench/uniad.py [--quick] [--threads T] [--batch B]

Paper-size model (hidden 256, 8 heads, FFN 1024, 4+4 layers, 14x14 tokens) on seeded RANDOM-INIT
EfficientNet-B4 weights (the cost does not depend on the weights); random-noise 224x224 PNGs.
Components measured in this one run:
  extract   image decode + resize + backbone + neck, per image (what the cache saves)
  cached    reading cached features from the .npy cache, per image
  step      one training step on a batch of cached features (jitter, forward, MSE, backward,
            clip, AdamW)
  score     reconstruction + map + image score per image from features
Training it/s without the cache = 1 / (step + batch * extract): the backbone would run for every
batch of every epoch; with the cache the backbone runs once and only ``step`` repeats.
Writes bench/results/uniad.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ad_pipeline.methods.base import RunContext
from ad_pipeline.methods.uniad.config import Config
from ad_pipeline.methods.uniad.distributed import DistInfo
from ad_pipeline.methods.uniad.features import build_feature_extractor, extract_aligned_features
from ad_pipeline.methods.uniad.model import build_model
from ad_pipeline.methods.uniad.score import score_features
from ad_pipeline.methods.uniad.train import train_epoch

RESULTS = Path(__file__).resolve().parent / "results" / "uniad.json"


def _timed(fn, repeats: int) -> float:
    """Median wall time of ``fn()`` over ``repeats`` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer images and repeats")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--batch", type=int, default=8, help="per-process batch (paper: 8)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    n_images, repeats = (8, 2) if args.quick else (32, 5)
    cfg = Config(batch_size=args.batch, num_workers=0)

    with tempfile.TemporaryDirectory(prefix="bench-uniad-") as tmp:
        root = Path(tmp)
        rng = np.random.default_rng(0)
        paths = []
        for i in range(n_images):
            paths.append(root / f"{i}.png")
            Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)).save(paths[-1])
        ctx = RunContext(pretrained="false", progress=False, cache_dir=root / "cache")
        extractor = build_feature_extractor(cfg, ctx)
        kw = dict(image_size=cfg.image_size, batch_size=cfg.batch_size, progress=False)

        extract_s = _timed(lambda: extract_aligned_features(extractor, paths, **kw), 1) / n_images
        extract_aligned_features(extractor, paths, cache_dir=ctx.cache_dir, **kw)  # fill the cache
        cached_s = _timed(lambda: extract_aligned_features(extractor, paths, cache_dir=ctx.cache_dir, **kw),
                          repeats) / n_images
        features = extract_aligned_features(extractor, paths, cache_dir=ctx.cache_dir, **kw)

        torch.manual_seed(0)
        model = build_model(cfg, tuple(features.shape[1:]))
        optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        info = DistInfo(0, 1, torch.device("cpu"), owns_group=False)
        one_batch = list(range(min(cfg.batch_size, n_images)))
        step_s = _timed(lambda: train_epoch(model, features, one_batch, 0, cfg, 0, optimizer, info), repeats)
        score_s = _timed(lambda: score_features(model, features, image_size=cfg.image_size,
                                                batch_size=cfg.batch_size), repeats) / n_images

    b = cfg.batch_size
    rows = {
        "train it/s (feature cache)": 1.0 / (step_s + b * cached_s),
        "train it/s (no cache)": 1.0 / (step_s + b * extract_s),
        "inference ms/image (feature cache)": 1e3 * (cached_s + score_s),
        "inference ms/image (no cache)": 1e3 * (extract_s + score_s),
    }
    result = {
        "device": "cpu", "threads": args.threads, "quick": args.quick, "batch": b, "images": n_images,
        "image_size": cfg.image_size, "feature_shape": list(features.shape[1:]),
        "components_ms": {"extract_per_image": 1e3 * extract_s, "cached_read_per_image": 1e3 * cached_s,
                          "train_step_per_batch": 1e3 * step_s, "score_per_image": 1e3 * score_s},
        "results": rows,
        "cache_speedup_train": rows["train it/s (feature cache)"] / rows["train it/s (no cache)"],
    }
    print(f"UniAD on CPU, {args.threads} thread(s), batch {b}, {n_images} images of {cfg.image_size}^2, "
          f"features {tuple(features.shape[1:])}")
    print(f"{'metric':<38}{'value':>12}")
    for name, value in rows.items():
        print(f"{name:<38}{value:>12.3f}")
    for name, value in result["components_ms"].items():
        print(f"{name + ' (ms)':<38}{value:>12.1f}")
    print(f"{'training speed-up from the cache':<38}{result['cache_speedup_train']:>11.2f}x")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
