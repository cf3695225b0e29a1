"""PSAD composition features: pulled-back masks (library) vs explicit upsampled feature volume.

    python bench/psad_composition.py [--quick]

Full size = the paper's setting: ResNet-101 layer1/2/3 (256/512/1024 ch at 128/64/32 for a 512
input), part map 512×512, 7 classes. The explicit path materialises D×H×W floats (1.9 GB at
full size). Prints a table and writes bench/results/psad_composition.json (time ratio and the
max abs difference, measured in one run).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ad_pipeline.methods.psad.banks import composition_features


def explicit(features, part_maps, num_classes):
    h, w = part_maps.shape[1:]
    up = torch.cat([F.interpolate(f, size=(h, w), mode="bilinear", align_corners=True) for f in features], 1)
    masks = F.one_hot(part_maps.long(), num_classes).permute(0, 3, 1, 2)[:, 1:].float()
    sums = torch.einsum("ndhw,nkhw->nkd", up, masks)
    return (sums / (masks.sum((2, 3))[..., None] + 1)).reshape(len(part_maps), -1)


def timed(fn, repeats):
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return out, best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="quarter channels, 256² part map")
    args = parser.parse_args()
    div, size = (4, 256) if args.quick else (1, 512)
    torch.manual_seed(0)
    feats = [torch.randn(1, c // div, s, s) for c, s in ((256, size // 4), (512, size // 8), (1024, size // 16))]
    maps = torch.randint(0, 7, (1, size, size))
    lib, t_lib = timed(lambda: composition_features(feats, maps, 7), 3)
    ref, t_ref = timed(lambda: explicit(feats, maps, 7), 3)
    diff = float((lib - ref).abs().max())
    result = {"quick": args.quick, "part_map": size, "feature_dim": sum(f.shape[1] for f in feats),
              "pullback_s": round(t_lib, 4), "explicit_s": round(t_ref, 4), "speedup": round(t_ref / t_lib, 2),
              "explicit_volume_mb": round(sum(f.shape[1] for f in feats) * size * size * 4 / 2**20, 1),
              "max_abs_diff": diff, "threads": torch.get_num_threads()}
    print(f"{'method':<12}{'seconds':>10}")
    print(f"{'pull-back':<12}{t_lib:>10.4f}")
    print(f"{'explicit':<12}{t_ref:>10.4f}")
    print(f"speed-up {result['speedup']}×, explicit volume {result['explicit_volume_mb']} MB, max |diff| {diff:.2e}")
    out = Path(__file__).parent / "results" / "psad_composition.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
